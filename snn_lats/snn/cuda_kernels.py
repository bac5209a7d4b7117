"""The ``cupy`` backend: one fused forward kernel and one fused backward kernel over all T.

One thread per neuron walks the T steps in registers. Arithmetic is float32 whatever the input dtype (fp32,
fp16, bf16), in the same order as the ``torch`` backend, and the kernels are compiled with ``--fmad=false`` so
no multiply-add is contracted: spikes then match the reference exactly. Two variants:

- stored h: the forward reads x and writes the spikes and the charged potentials h (float32); the backward
  reads grad_spikes and h (for PLIF also x and v0) and writes grad_x;
- recompute (T <= RECOMPUTE_MAX_T): the forward reads x and writes the spikes only; the backward reads
  grad_spikes, x and v0, recomputes h[0..T-1] into registers (bit for bit the forward's) and writes grad_x.
  That is the memory-bound minimum: no h round trip, and the saved state is x in its own dtype.

PLIF (``NeuronConfig.parametric``) reads its leak k = sigmoid(w) from a 1-element tensor and writes each
neuron's share of dL/dk, summed outside the kernel. Sources are generated per (kind, neuron, reset,
decay_input, detach_reset, surrogate, dtype, and T for the recompute backward) and cached.

``compile_check(source)`` compiles a source to PTX with NVRTC on a machine without a GPU (through ctypes, from
the NVRTC library that torch's CUDA wheels ship), so CI can check every generated kernel; ``nvrtc_compile``
also gives the cubin of a real architecture and the log (ptxas' register and spill report with
``-Xptxas -v``).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import math
import os

import torch

from . import reference
from .reference import NeuronConfig

DTYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
LOAD = {"float": "{}", "__half": "__half2float({})", "__nv_bfloat16": "__bfloat162float({})"}
STORE = {"float": "{}", "__half": "__float2half_rn({})", "__nv_bfloat16": "__float2bfloat16_rn({})"}
BLOCK = 256
NVRTC_OPTIONS = ("--fmad=false", "-default-device")
# The recompute backward keeps h[T] (and, for PLIF, x[T]) of one neuron in registers, unrolled over a
# compile-time T; beyond this the arrays would spill to local memory, and the stored-h kernels run instead.
RECOMPUTE_MAX_T = 32
KINDS = ("forward", "backward", "forward_recompute", "backward_recompute")


def kernel_name(kind: str, c: NeuronConfig, dtype: str, steps: int | None = None) -> str:
    """``kind`` is one of KINDS; ``backward_recompute`` is compiled per T (``steps``)."""
    if c.parametric:
        neuron = "plif_decay_input" if c.decay_input else "plif"
    else:
        neuron = "if" if c.tau is None else ("lif_decay_input" if c.decay_input else "lif")
    reset = "soft" if c.v_reset is None else "hard"
    detach = "detach" if c.detach_reset else "attach"
    suffix = f"_t{steps}" if kind == "backward_recompute" else ""
    return f"snn_lats_{neuron}_{reset}_{detach}_{c.surrogate}_{dtype.strip('_')}_{kind}{suffix}"


def _charge(c: NeuronConfig) -> str:
    if c.parametric:
        if c.decay_input:
            return "const float h = v + (xt - (v - reset_value)) * q;"
        return "const float h = v - (v - reset_value) * q + xt;"
    if c.tau is None:
        return "const float h = v + xt;"
    if c.decay_input:
        return "const float h = v + (xt - (v - reset_value)) / tau;"
    return "const float h = v - (v - reset_value) / tau + xt;"


def _after_reset(c: NeuronConfig, h: str) -> str:
    """V after the spike and reset, from the charged potential ``h`` (an expression)."""
    spike = f"({h} >= v_threshold ? 1.0f : 0.0f)"
    if c.v_reset is None:
        return f"{h} - {spike} * v_threshold"
    return f"{spike} * v_reset + (1.0f - {spike}) * {h}"


def _surrogate(c: NeuronConfig) -> str:
    if c.surrogate == "sigmoid":
        return ("const float sig = 1.0f / (1.0f + expf(-(alpha * u)));\n"
                "        const float sg = (1.0f - sig) * sig * alpha;")
    return ("const float z = u * atan_scale;\n"
            "        const float sg = (alpha / 2.0f) / (1.0f + z * z);")


def forward_source(c: NeuronConfig, dtype: str, kind: str = "forward") -> str:
    """Read x, write spikes and v_last; ``kind="forward"`` also writes h for the stored-h backward,
    ``"forward_recompute"`` does not (its backward recomputes h from x and v0)."""
    store_h = kind == "forward"
    leak = "const float* __restrict__ leak, " if c.parametric else ""
    charged = "float* __restrict__ charged, " if store_h else ""
    return f"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void {kernel_name(kind, c, dtype)}(
    const {dtype}* __restrict__ x, const float* __restrict__ v0, {leak}{dtype}* __restrict__ spikes,
    {charged}float* __restrict__ v_last, const long long T, const long long N, const float tau,
    const float v_threshold, const float v_reset, const float reset_value)
{{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    {"const float q = leak[0];" if c.parametric else ""}
    float v = v0[i];
    for (long long t = 0; t < T; ++t) {{
        const long long k = t * N + i;
        const float xt = {LOAD[dtype].format("x[k]")};
        {_charge(c)}
        const float spike = h >= v_threshold ? 1.0f : 0.0f;
        {"v = h - spike * v_threshold;" if c.v_reset is None else "v = spike * v_reset + (1.0f - spike) * h;"}
        spikes[k] = {STORE[dtype].format("spike")};
        {"charged[k] = h;" if store_h else ""}
    }}
    v_last[i] = v;
}}
"""


def _backward_step(c: NeuronConfig, dtype: str, h: str, previous: str, xt: str) -> str:
    """One reverse step at time t (index k): gh from grad_spikes and carry; writes grad_x[k]. For PLIF,
    ``previous`` is V[t-1] and ``xt`` X[t] (expressions), for the leak gradient."""
    if c.v_reset is None:
        reset_grad = "1.0f" if c.detach_reset else "1.0f - v_threshold * sg"
    else:
        reset_grad = f"1.0f - ({h} >= v_threshold ? 1.0f : 0.0f)"
        if not c.detach_reset:
            reset_grad = f"({reset_grad}) + (v_reset - {h}) * sg"
    if c.parametric:
        factor = f"{xt} - (previous - v_reset)" if c.decay_input else "-(previous - v_reset)"
        step = (f"gx = {'gh * q' if c.decay_input else 'gh'};\n        carry = gh - gh * q;\n"
                f"        const float previous = {previous};\n"
                f"        grad_q = grad_q + gh * ({factor});")
    elif c.tau is None:
        step = "gx = gh;\n        carry = gh;"
    else:
        step = f"gx = {'gh / tau' if c.decay_input else 'gh'};\n        carry = gh - gh / tau;"
    return f"""const float u = {h} - v_threshold;
        {_surrogate(c)}
        const float reset_grad = {reset_grad};
        const float gh = {LOAD[dtype].format("grad_spikes[k]")} * sg + carry * reset_grad;
        float gx;
        {step}
        grad_x[k] = {STORE[dtype].format("gx")};"""


def _backward_parameters(c: NeuronConfig, dtype: str, saved: str) -> str:
    leak = ("const float* __restrict__ leak, float* __restrict__ grad_leak, " if c.parametric else "")
    return (f"const {dtype}* __restrict__ grad_spikes, const float* __restrict__ grad_v_last, {saved}{leak}"
            f"{dtype}* __restrict__ grad_x, float* __restrict__ grad_v0")


def backward_source(c: NeuronConfig, dtype: str, kind: str = "backward", steps: int | None = None) -> str:
    """The BPTT kernel. ``kind="backward"`` reads the stored h (and, for PLIF, x and v0);
    ``"backward_recompute"`` reads x and v0 only and recomputes h into registers, for exactly ``steps`` time
    steps (1 <= steps <= RECOMPUTE_MAX_T, compiled per T). For PLIF it writes grad_leak[i], neuron i's share
    of dL/dk, summed outside. The v_reset argument is 0 for soft reset (it is then the reset value)."""
    name = kernel_name(kind, c, dtype, steps)
    plif = c.parametric
    leak_setup = "const float q = leak[0];\n    float grad_q = 0.0f;" if plif else ""
    leak_out = "grad_leak[i] = grad_q;" if plif else ""
    if kind == "backward":
        saved = "const float* __restrict__ charged, "
        if plif:
            saved += f"const {dtype}* __restrict__ x, const float* __restrict__ v0, "
        xt = LOAD[dtype].format("x[k]")
        body = f"""for (long long t = T - 1; t >= 0; --t) {{
        const long long k = t * N + i;
        const float h = charged[k];
        {_backward_step(c, dtype, "h", "t > 0 ? " + _after_reset(c, "charged[k - N]") + " : v0[i]", xt)}
    }}"""
        sizes = "const long long T, const long long N"
    elif kind == "backward_recompute":
        if steps is None or not 1 <= steps <= RECOMPUTE_MAX_T:
            raise ValueError(f"steps must be an int in [1, {RECOMPUTE_MAX_T}] for {kind}, got {steps!r}")
        saved = f"const {dtype}* __restrict__ x, const float* __restrict__ v0, "
        keep_x = plif and c.decay_input  # the leak gradient needs X[t]
        # V[-1] from a register: a load of v0[i] inside the reverse loop (PLIF's V[t-1] at t = 0) left that
        # loop rolled, indexing hs/xs at run time, so they lived in local memory (on sm_90 from T = 10 with
        # xs, T = 28 without); experiments/kernel_resources.py reports each kernel's registers and stack
        body = f"""float hs[{steps}];
    {f"float xs[{steps}];" if keep_x else ""}
    const float v_init = v0[i];
    float v = v_init;
    #pragma unroll
    for (int t = 0; t < {steps}; ++t) {{
        const long long k = (long long)t * N + i;
        const float xt = {LOAD[dtype].format("x[k]")};
        {_charge(c)}
        hs[t] = h;
        {"xs[t] = xt;" if keep_x else ""}
        v = {_after_reset(c, "h")};
    }}
    #pragma unroll
    for (int t = {steps} - 1; t >= 0; --t) {{
        const long long k = (long long)t * N + i;
        {_backward_step(c, dtype, "hs[t]", "t > 0 ? " + _after_reset(c, "hs[t - 1]") + " : v_init", "xs[t]")}
    }}"""
        sizes = "const long long N"
    else:
        raise ValueError(f"kind must be 'backward' or 'backward_recompute', got {kind!r}")
    return f"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void {name}(
    {_backward_parameters(c, dtype, saved)}, {sizes}, const float tau,
    const float v_threshold, const float v_reset, const float alpha, const float atan_scale)
{{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    {"const float reset_value = v_reset;" if kind == "backward_recompute" else ""}
    {leak_setup}
    float carry = grad_v_last[i];
    {body}
    grad_v0[i] = carry;
    {leak_out}
}}
"""


def source(kind: str, c: NeuronConfig, dtype: str, steps: int | None = None) -> str:
    """The CUDA source of kernel ``kind`` (one of KINDS) for ``c`` and ``dtype``."""
    if kind.startswith("forward"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return forward_source(c, dtype, kind)
    return backward_source(c, dtype, kind, steps)


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


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library ``compile_check`` uses; RuntimeError where there is none."""
    lib = _nvrtc_library()
    if lib is None:
        raise RuntimeError("NVRTC is not available on this machine")
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc_ok(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), None)
    return major.value, minor.value


def nvrtc_compile(source: str, name: str = "kernel.cu", arch: str = "compute_80",
                  options: tuple[str, ...] = ()) -> tuple[str | bytes, str]:
    """Compile ``source`` with NVRTC (no GPU needed), NVRTC_OPTIONS and ``options``: for a virtual ``arch``
    (compute_XX) the PTX, for a real one (sm_XX) the cubin (bytes), with the compiler log (``-Xptxas -v`` in
    ``options`` puts ptxas' resource report there). RuntimeError with the log if it does not compile."""
    lib = _nvrtc_library()
    if lib is None or not cuda_include_dirs():
        raise RuntimeError("NVRTC or the CUDA headers are not available on this machine")
    prog = ctypes.c_void_p()
    created = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    _nvrtc_ok(lib, created, None)
    includes = [f"-I{d}" for d in cuda_include_dirs()]
    options = [f"--gpu-architecture={arch}", *NVRTC_OPTIONS, *options, *includes]
    argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    try:
        status = lib.nvrtcCompileProgram(prog, len(options), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        log = log.value.decode(errors="replace")
        if status != 0:
            raise RuntimeError(f"NVRTC failed to compile {name}:\n{log}")
        cubin = arch.startswith("sm_")
        get_size, get = (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if cubin else (lib.nvrtcGetPTXSize,
                                                                                  lib.nvrtcGetPTX)
        _nvrtc_ok(lib, get_size(prog, ctypes.byref(size)), prog)
        output = ctypes.create_string_buffer(size.value)
        _nvrtc_ok(lib, get(prog, output), prog)
        return (output.raw[:size.value] if cubin else output.value.decode()), log
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_check(source: str, name: str = "kernel.cu", arch: str = "compute_80") -> str:
    """Compile ``source`` to PTX with NVRTC (no GPU needed) and return the PTX; raise with the log on
    error."""
    return nvrtc_compile(source, name, arch)[0]


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
def _kernel(kind: str, config: NeuronConfig, dtype: str, steps: int | None, device: int):
    import cupy

    with cupy.cuda.Device(device):
        options = NVRTC_OPTIONS + tuple(f"-I{d}" for d in cuda_include_dirs())
        module = cupy.RawModule(code=source(kind, config, dtype, steps), options=options)
        return module.get_function(kernel_name(kind, config, dtype, steps))


def _cupy_argument(value):
    """A kernel argument as CuPy passes it: tensors as device pointers, ints as ``long long``, floats as
    ``float`` (the only scalar types the kernels take)."""
    import cupy

    if isinstance(value, torch.Tensor):
        return cupy.uint64(value.data_ptr())
    return cupy.int64(value) if isinstance(value, int) else cupy.float32(value)


def _launch(kind: str, config: NeuronConfig, tensor: torch.Tensor, n: int, args: tuple,
            steps: int | None = None) -> None:
    """Run kernel ``kind`` over ``n`` neurons; ``args`` are tensors, Python ints and floats in the kernel's
    parameter order (``host_emulation`` launches the same argument tuples on the CPU)."""
    import cupy

    kernel = _kernel(kind, config, DTYPES[tensor.dtype], steps, tensor.device.index or 0)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(tensor.device).cuda_stream)
    with cupy.cuda.Device(tensor.device.index or 0), stream:
        kernel(((n + BLOCK - 1) // BLOCK,), (BLOCK,), tuple(map(_cupy_argument, args)))


def _leak_argument(c: NeuronConfig, leak: torch.Tensor | None, device: torch.device) -> tuple:
    """The kernels' leak pointer argument: () for LIF/IF, else the 0-dim float32 k on ``device``."""
    reference.check_leak(c, leak)
    return () if leak is None else (leak.detach().to(device=device, dtype=torch.float32).contiguous(),)


def cupy_forward(x_seq: torch.Tensor, v0: torch.Tensor, c: NeuronConfig, leak: torch.Tensor | None = None,
                 store_h: bool = True, launch=_launch):
    """The forward kernel: (spikes in x's dtype, v_last float32, charged h float32 or None) for CUDA tensors.
    ``store_h=False`` runs the lean ``forward_recompute`` kernel, which writes no h. ``leak`` is PLIF's
    k = sigmoid(w). ``launch`` runs the kernel (``host_emulation`` passes its CPU launcher)."""
    if x_seq.dtype not in DTYPES:
        raise TypeError(f"the cupy kernels take {', '.join(map(str, DTYPES))} inputs, got {x_seq.dtype}")
    leak_args = _leak_argument(c, leak, x_seq.device)
    x_seq = x_seq.contiguous()
    v = v0.float().contiguous()
    T, n = x_seq.shape[0], x_seq[0].numel()
    spikes = torch.empty_like(x_seq)
    charged = torch.empty(x_seq.shape, dtype=torch.float32, device=x_seq.device) if store_h else None
    v_last = torch.empty_like(v)
    reset_value = 0.0 if c.v_reset is None else float(c.v_reset)
    kind = "forward" if store_h else "forward_recompute"
    launch(kind, c, x_seq, n, (x_seq, v, *leak_args, spikes, *([charged] if store_h else []), v_last, T, n,
                               float(c.tau or 1.0), float(c.v_threshold), reset_value, reset_value))
    return spikes, v_last, charged


def cupy_backward(grad_spikes: torch.Tensor, grad_v_last: torch.Tensor | None, c: NeuronConfig,
                  charged: torch.Tensor | None = None, x_seq: torch.Tensor | None = None,
                  v0: torch.Tensor | None = None, leak: torch.Tensor | None = None, launch=_launch):
    """The backward kernel: (grad wrt x in grad_spikes' dtype, grad wrt v0 float32, per-neuron partials of
    the grad wrt ``leak`` (float32, v0's shape) or None) for CUDA tensors.

    With ``charged`` (the stored h) it runs the stored-h kernel (which for PLIF also reads x_seq and v0);
    without, the recompute kernel for this T (T <= RECOMPUTE_MAX_T), from x_seq and v0."""
    leak_args = _leak_argument(c, leak, grad_spikes.device)
    recompute = charged is None
    if (recompute or c.parametric) and (x_seq is None or v0 is None):
        raise ValueError("this backward needs x_seq and v0 (recompute, or a PLIF config)")
    T = grad_spikes.shape[0]
    if recompute and not 1 <= T <= RECOMPUTE_MAX_T:
        raise ValueError(f"the recompute backward takes 1 <= T <= {RECOMPUTE_MAX_T} (RECOMPUTE_MAX_T), "
                         f"got T={T}; store h instead")
    grad_spikes = grad_spikes.contiguous()
    n = grad_spikes[0].numel()
    grad_v = (torch.zeros(grad_spikes.shape[1:], dtype=torch.float32, device=grad_spikes.device)
              if grad_v_last is None else grad_v_last.float().contiguous())
    saved = [] if recompute else [charged.contiguous()]
    if recompute or c.parametric:
        if x_seq.dtype != grad_spikes.dtype:
            raise TypeError(f"x_seq ({x_seq.dtype}) and grad_spikes ({grad_spikes.dtype}) must share a dtype")
        saved += [x_seq.contiguous(), v0.float().contiguous()]
    grad_leak = [torch.empty_like(grad_v)] if c.parametric else []
    grad_x = torch.empty_like(grad_spikes)
    grad_v0 = torch.empty_like(grad_v)
    sizes = (n,) if recompute else (T, n)
    launch("backward_recompute" if recompute else "backward", c, grad_spikes, n,
           (grad_spikes, grad_v, *saved, *leak_args, *grad_leak, grad_x, grad_v0, *sizes, float(c.tau or 1.0),
            float(c.v_threshold), 0.0 if c.v_reset is None else float(c.v_reset), float(c.alpha),
            float(math.pi / 2 * c.alpha)), *([T] if recompute else []))
    return grad_x, grad_v0, grad_leak[0] if grad_leak else None
