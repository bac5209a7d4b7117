"""The ``cupy`` backend: one fused forward kernel and one fused backward kernel over all T.

One thread per neuron walks the T steps in registers. The forward reads x once and writes the spikes and the
charged potentials h (float32, for the backward); the backward walks back through T once. Arithmetic is
float32 whatever the input dtype (fp32, fp16, bf16), in the same order as the ``torch`` backend, and the
kernels are compiled with ``--fmad=false`` so no multiply-add is contracted: spikes then match the reference
exactly. Sources are generated per (neuron, reset, decay_input, detach_reset, surrogate, dtype) and cached.

``compile_check(source)`` compiles a source to PTX with NVRTC on a machine without a GPU (through ctypes, from
the NVRTC library that torch's CUDA wheels ship), so CI can check every generated kernel.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import math
import os

import torch

from .reference import NeuronConfig

DTYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
LOAD = {"float": "{}", "__half": "__half2float({})", "__nv_bfloat16": "__bfloat162float({})"}
STORE = {"float": "{}", "__half": "__float2half_rn({})", "__nv_bfloat16": "__float2bfloat16_rn({})"}
BLOCK = 256
NVRTC_OPTIONS = ("--fmad=false", "-default-device")


def kernel_name(kind: str, c: NeuronConfig, dtype: str) -> str:
    neuron = "if" if c.tau is None else ("lif_decay_input" if c.decay_input else "lif")
    reset = "soft" if c.v_reset is None else "hard"
    detach = "detach" if c.detach_reset else "attach"
    return f"snn_lats_{neuron}_{reset}_{detach}_{c.surrogate}_{dtype.strip('_')}_{kind}"


def _charge(c: NeuronConfig) -> str:
    if c.tau is None:
        return "const float h = v + xt;"
    if c.decay_input:
        return "const float h = v + (xt - (v - reset_value)) / tau;"
    return "const float h = v - (v - reset_value) / tau + xt;"


def _surrogate(c: NeuronConfig) -> str:
    if c.surrogate == "sigmoid":
        return ("const float sig = 1.0f / (1.0f + expf(-(alpha * u)));\n"
                "            const float sg = (1.0f - sig) * sig * alpha;")
    return ("const float z = u * atan_scale;\n"
            "            const float sg = (alpha / 2.0f) / (1.0f + z * z);")


def forward_source(c: NeuronConfig, dtype: str) -> str:
    reset = ("v = h - spike * v_threshold;" if c.v_reset is None
             else "v = spike * v_reset + (1.0f - spike) * h;")
    return f"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void {kernel_name("forward", c, dtype)}(
    const {dtype}* __restrict__ x, const float* __restrict__ v0, {dtype}* __restrict__ spikes,
    float* __restrict__ charged, float* __restrict__ v_last, const long long T, const long long N,
    const float tau, const float v_threshold, const float v_reset, const float reset_value)
{{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float v = v0[i];
    for (long long t = 0; t < T; ++t) {{
        const long long k = t * N + i;
        const float xt = {LOAD[dtype].format("x[k]")};
        {_charge(c)}
        const float spike = h >= v_threshold ? 1.0f : 0.0f;
        {reset}
        spikes[k] = {STORE[dtype].format("spike")};
        charged[k] = h;
    }}
    v_last[i] = v;
}}
"""


def backward_source(c: NeuronConfig, dtype: str) -> str:
    if c.v_reset is None:
        reset_grad = "1.0f" if c.detach_reset else "1.0f - v_threshold * sg"
    else:
        reset_grad = "1.0f - (h >= v_threshold ? 1.0f : 0.0f)"
        if not c.detach_reset:
            reset_grad = f"({reset_grad}) + (v_reset - h) * sg"
    if c.tau is None:
        step = "gx = gh;\n            carry = gh;"
    else:
        step = f"gx = {'gh / tau' if c.decay_input else 'gh'};\n            carry = gh - gh / tau;"
    return f"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void {kernel_name("backward", c, dtype)}(
    const {dtype}* __restrict__ grad_spikes, const float* __restrict__ grad_v_last,
    const float* __restrict__ charged, {dtype}* __restrict__ grad_x, float* __restrict__ grad_v0,
    const long long T, const long long N, const float tau, const float v_threshold, const float v_reset,
    const float alpha, const float atan_scale)
{{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float carry = grad_v_last[i];
    for (long long t = T - 1; t >= 0; --t) {{
        const long long k = t * N + i;
        const float h = charged[k];
        const float u = h - v_threshold;
        {_surrogate(c)}
        const float reset_grad = {reset_grad};
        const float gh = {LOAD[dtype].format("grad_spikes[k]")} * sg + carry * reset_grad;
        float gx;
        {step}
        grad_x[k] = {STORE[dtype].format("gx")};
    }}
    grad_v0[i] = carry;
}}
"""


# --- compiling without a GPU --------------------------------------------------------------------------------

def _nvrtc_library() -> ctypes.CDLL | None:
    candidates = []
    for root in {os.path.dirname(os.path.dirname(torch.__file__))}:
        candidates += glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libnvrtc.so*"))
        candidates += glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
    candidates += ["libnvrtc.so"]
    for path in candidates:
        if "builtins" in path or ".alt." in path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def cuda_include_dirs() -> list[str]:
    root = os.path.dirname(os.path.dirname(torch.__file__))
    dirs = glob.glob(os.path.join(root, "nvidia", "cu*", "include")) + ["/usr/local/cuda/include"]
    return [d for d in dirs if os.path.isfile(os.path.join(d, "cuda_fp16.h"))]


def nvrtc_available() -> bool:
    return _nvrtc_library() is not None and bool(cuda_include_dirs())


def compile_check(source: str, name: str = "kernel.cu", arch: str = "compute_80") -> str:
    """Compile ``source`` to PTX with NVRTC (no GPU needed) and return the PTX; raise with the log on
    error."""
    lib = _nvrtc_library()
    if lib is None or not cuda_include_dirs():
        raise RuntimeError("NVRTC or the CUDA headers are not available on this machine")
    prog = ctypes.c_void_p()
    created = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    _nvrtc_ok(lib, created, None)
    options = [f"--gpu-architecture={arch}", *NVRTC_OPTIONS] + [f"-I{d}" for d in cuda_include_dirs()]
    argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    try:
        status = lib.nvrtcCompileProgram(prog, len(options), argv)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC failed to compile {name}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _nvrtc_ok(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), prog)
        ptx = ctypes.create_string_buffer(size.value)
        _nvrtc_ok(lib, lib.nvrtcGetPTX(prog, ptx), prog)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _nvrtc_ok(lib, status: int, prog) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"NVRTC error {status}: {lib.nvrtcGetErrorString(status).decode()}")


# --- running on a GPU through CuPy --------------------------------------------------------------------------

@functools.cache  # asked on every forward of a CUDA tensor; a failed import is not cached by Python
def cupy_available() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # not installed, or installed without a driver
        return False


@functools.cache
def _kernel(kind: str, config: NeuronConfig, dtype: str, device: int):
    import cupy

    source = forward_source(config, dtype) if kind == "forward" else backward_source(config, dtype)
    with cupy.cuda.Device(device):
        options = NVRTC_OPTIONS + tuple(f"-I{d}" for d in cuda_include_dirs())
        module = cupy.RawModule(code=source, options=options)
        return module.get_function(kernel_name(kind, config, dtype))


def _cupy_argument(value):
    """A kernel argument as CuPy passes it: tensors as device pointers, ints as ``long long``, floats as
    ``float`` (the only scalar types the kernels take)."""
    import cupy

    if isinstance(value, torch.Tensor):
        return cupy.uint64(value.data_ptr())
    return cupy.int64(value) if isinstance(value, int) else cupy.float32(value)


def _launch(kind: str, config: NeuronConfig, tensor: torch.Tensor, n: int, args: tuple) -> None:
    """Run kernel ``kind`` over ``n`` neurons; ``args`` are tensors, Python ints and floats in the kernel's
    parameter order (``host_emulation`` launches the same argument tuples on the CPU)."""
    import cupy

    kernel = _kernel(kind, config, DTYPES[tensor.dtype], tensor.device.index or 0)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(tensor.device).cuda_stream)
    with cupy.cuda.Device(tensor.device.index or 0), stream:
        kernel(((n + BLOCK - 1) // BLOCK,), (BLOCK,), tuple(map(_cupy_argument, args)))


def cupy_forward(x_seq: torch.Tensor, v0: torch.Tensor, c: NeuronConfig, launch=_launch):
    """The forward kernel: (spikes in x's dtype, v_last float32, charged h float32) for CUDA tensors.
    ``launch`` runs the kernel (``host_emulation`` passes its CPU launcher)."""
    if x_seq.dtype not in DTYPES:
        raise TypeError(f"the cupy kernels take {', '.join(map(str, DTYPES))} inputs, got {x_seq.dtype}")
    x_seq = x_seq.contiguous()
    v = v0.float().contiguous()
    T, n = x_seq.shape[0], x_seq[0].numel()
    spikes = torch.empty_like(x_seq)
    charged = torch.empty(x_seq.shape, dtype=torch.float32, device=x_seq.device)
    v_last = torch.empty_like(v)
    reset_value = 0.0 if c.v_reset is None else float(c.v_reset)
    launch("forward", c, x_seq, n, (x_seq, v, spikes, charged, v_last, T, n, float(c.tau or 1.0),
                                    float(c.v_threshold), reset_value, reset_value))
    return spikes, v_last, charged


def cupy_backward(grad_spikes: torch.Tensor, grad_v_last: torch.Tensor | None, charged: torch.Tensor,
                  c: NeuronConfig, launch=_launch):
    """The backward kernel: (grad wrt x in grad_spikes' dtype, grad wrt v0 float32) for CUDA tensors."""
    grad_spikes = grad_spikes.contiguous()
    charged = charged.contiguous()
    grad_v = (torch.zeros_like(charged[0]) if grad_v_last is None
              else grad_v_last.float().contiguous())
    T, n = charged.shape[0], charged[0].numel()
    grad_x = torch.empty_like(grad_spikes)
    grad_v0 = torch.empty_like(grad_v)
    launch("backward", c, grad_spikes, n,
           (grad_spikes, grad_v, charged, grad_x, grad_v0, T, n, float(c.tau or 1.0), float(c.v_threshold),
            0.0 if c.v_reset is None else float(c.v_reset), float(c.alpha), float(math.pi / 2 * c.alpha)))
    return grad_x, grad_v0


class CupyMultiStep(torch.autograd.Function):
    """The cupy kernels as an autograd function (kept for callers; the nodes go through ``ops.py``)."""

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, v: torch.Tensor, c: NeuronConfig):
        spikes, v_last, charged = cupy_forward(x_seq, v, c)
        ctx.save_for_backward(charged)
        ctx.config = c
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        (charged,) = ctx.saved_tensors
        grad_x, grad_v0 = cupy_backward(grad_spikes, grad_v, charged, ctx.config)
        return grad_x, grad_v0, None
