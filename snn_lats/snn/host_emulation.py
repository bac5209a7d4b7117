"""Run CUDA kernel sources on the CPU: the exact source strings, compiled unmodified with the system C++
compiler.

A shim header supplies what a CUDA translation unit takes from the toolkit: ``__global__`` (empty),
``blockIdx``/``blockDim``/``threadIdx``/``gridDim`` (thread-local structs with ``.x``), ``__half`` (g++'s
``_Float16``), ``__nv_bfloat16`` (a 16-bit struct, converted with round-to-nearest-even bit manipulation,
since g++ 12 has no arithmetic ``__bf16`` on x86) and the conversion intrinsics. The source's ``#include
<cuda_fp16.h>`` / ``<cuda_bf16.h>`` resolve to guarded headers in a temporary include directory that pull in
the shim, so the kernel text itself is compiled as-is. For each ``extern "C" __global__ void NAME(...)`` a
launcher ``launch_NAME(grid, block, ...)`` is appended after the source; it loops over every block and thread.

Compiled with ``-ffp-contract=off`` (the host mirror of NVRTC's ``--fmad=false``), ``-fno-fast-math`` and, on
x86, ``-mfpmath=sse``, so float32 operations round as written. ``expf`` is the C library's, not CUDA's: the
sigmoid surrogate can differ from the GPU by an ulp or two; everything else is IEEE float32 arithmetic in the
order the source gives.

``compile_on_host(source, name)`` returns a :class:`HostKernel`; ``compile_many(sources)`` compiles several
sources into one shared object (each kernel name must be distinct). ``HostMultiStep`` runs the fused neuron
kernels of ``cuda_kernels.py`` (both variants, LIF/IF/PLIF) with exactly the arguments the CUDA op passes.
``compare_with_reference(config, dtype, T, N)`` measures how it differs from ``reference.TorchMultiStep`` on
the grid ``COMPARE_CONFIGS`` x ``COMPARE_DTYPES`` x ``COMPARE_SHAPES`` (tests/test_kernel_emulation.py checks
it, experiments/kernel_emulation.py reports it).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import platform
import re
import shutil
import subprocess
import tempfile

import torch

from . import cuda_kernels, reference
from .reference import NeuronConfig

SHIM = r"""
#ifndef SNN_LATS_HOST_SHIM_H
#define SNN_LATS_HOST_SHIM_H
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct snn_lats_dim3 { unsigned int x, y, z; };
extern thread_local snn_lats_dim3 blockIdx, blockDim, threadIdx, gridDim;

typedef _Float16 __half;
static inline float __half2float(__half h) { return (float)h; }
static inline __half __float2half_rn(float f) { return (__half)f; }  /* nearest even */

struct __nv_bfloat16 { uint16_t bits; };
static inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16; float f; std::memcpy(&f, &u, 4); return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) { b.bits = (uint16_t)((u >> 16) | 0x40u); return b; }  /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest, ties to even */
    b.bits = (uint16_t)(u >> 16);
    return b;
}
#endif
"""

FP_FLAGS = ("-ffp-contract=off", "-fno-fast-math")
X86_FLAGS = ("-msse2", "-mfpmath=sse")
SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
CTYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong,
          "int": ctypes.c_int, "unsigned int": ctypes.c_uint}
TORCH_DTYPES = {"float": torch.float32, "double": torch.float64, "__half": torch.float16,
                "__nv_bfloat16": torch.bfloat16, "long long": torch.int64, "int": torch.int32}


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def compile_flags() -> list[str]:
    flags = ["-O2", "-shared", "-fPIC", "-std=c++17", *FP_FLAGS]
    if platform.machine() in ("x86_64", "AMD64", "i686", "i386"):
        flags += list(X86_FLAGS)
    return flags


@functools.cache
def host_compiler_available() -> tuple[bool, str]:
    """(True, compiler) when a C++ compiler builds a probe using the shim (``_Float16``, the bf16 struct)."""
    cxx = compiler()
    if cxx is None:
        return False, "no C++ compiler (g++ or c++) on PATH"
    probe = ('#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n'
             'extern "C" __global__ void probe(const __half* a, __nv_bfloat16* b, const long long n) {\n'
             '    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n'
             '    if (i < n) b[i] = __float2bfloat16_rn(expf(__half2float(a[i])));\n}\n')
    try:
        _build((probe,))
    except (RuntimeError, OSError) as error:
        return False, f"{cxx} cannot build the CUDA host shim: {str(error)[-400:]}"
    return True, cxx


class Param:
    def __init__(self, text: str):
        self.text = " ".join(text.split())
        words = self.text.replace("*", " * ").split()
        if len(words) < 2:
            raise ValueError(f"cannot parse kernel parameter {text!r}")
        self.name = words[-1]
        self.pointer = "*" in words
        self.type = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*", "volatile"))
        if self.pointer and self.type not in TORCH_DTYPES:
            raise ValueError(f"parameter {self.name}: unsupported pointer type {self.type}")
        if not self.pointer and self.type not in CTYPES:
            raise ValueError(f"parameter {self.name}: unsupported scalar type {self.type}")

    def ctype(self):
        return ctypes.c_void_p if self.pointer else CTYPES[self.type]

    def convert(self, value, kernel: str):
        where = f"{kernel}: argument {self.name} ({self.text})"
        if self.pointer:
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{where} needs a torch.Tensor, got {type(value).__name__}")
            if value.device.type != "cpu":
                raise ValueError(f"{where} needs a CPU tensor, got device {value.device}")
            if not value.is_contiguous():
                raise ValueError(f"{where} needs a contiguous tensor")
            if value.dtype != TORCH_DTYPES[self.type]:
                raise TypeError(f"{where} needs dtype {TORCH_DTYPES[self.type]}, got {value.dtype}")
            return ctypes.c_void_p(value.data_ptr())
        if isinstance(value, torch.Tensor):
            raise TypeError(f"{where} is a scalar, got a tensor")
        if self.type in ("float", "double"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{where} needs a Python float, got {type(value).__name__}")
            return CTYPES[self.type](float(value))
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where} needs a Python int, got {type(value).__name__}")
        return CTYPES[self.type](value)


def parse_kernels(source: str) -> dict[str, list[Param]]:
    """Every ``extern "C" __global__ void NAME(params)`` in ``source``: name -> parameters."""
    kernels = {m.group(1): [Param(p) for p in m.group(2).split(",") if p.strip()]
               for m in SIGNATURE.finditer(source)}
    if not kernels:
        raise ValueError('no extern "C" __global__ void kernel found in the source')
    return kernels


def launcher(name: str, params: list[Param]) -> str:
    args = ", ".join(p.name for p in params)
    decl = "".join(f", {p.text}" for p in params)
    return f"""
extern "C" void launch_{name}(long long snn_lats_grid, long long snn_lats_block{decl}) {{
    gridDim.x = (unsigned int)snn_lats_grid; gridDim.y = gridDim.z = 1;
    blockDim.x = (unsigned int)snn_lats_block; blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    for (long long snn_lats_b = 0; snn_lats_b < snn_lats_grid; ++snn_lats_b) {{
        blockIdx.x = (unsigned int)snn_lats_b;
        for (long long snn_lats_t = 0; snn_lats_t < snn_lats_block; ++snn_lats_t) {{
            threadIdx.x = (unsigned int)snn_lats_t;
            {name}({args});
        }}
    }}
}}
"""


def _translation_unit(sources: tuple[str, ...]) -> tuple[str, dict[str, list[Param]]]:
    kernels: dict[str, list[Param]] = {}
    for source in sources:
        for name, params in parse_kernels(source).items():
            if name in kernels:
                raise ValueError(f"kernel {name} appears in more than one source")
            kernels[name] = params
    text = "thread_local snn_lats_dim3 blockIdx, blockDim, threadIdx, gridDim;\n"
    text += "\n".join(f"// ---- source {i} (unmodified)\n{s}" for i, s in enumerate(sources))
    text += "\n// ---- host launchers\n" + "".join(launcher(n, p) for n, p in kernels.items())
    return text, kernels


def _cache_dir() -> str:
    user = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(tempfile.gettempdir(), f"snn_lats_host_kernels_{user}")
    os.makedirs(path, exist_ok=True)
    return path


@functools.cache
def _build(sources: tuple[str, ...]) -> tuple[ctypes.CDLL, dict[str, list[Param]]]:
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on PATH")
    text, kernels = _translation_unit(sources)
    flags = compile_flags()
    digest = hashlib.sha256("\0".join([cxx, *flags, SHIM, text]).encode()).hexdigest()[:24]
    root = _cache_dir()
    library = os.path.join(root, f"{digest}.so")
    if not os.path.exists(library):
        with tempfile.TemporaryDirectory(dir=root) as work:
            with open(os.path.join(work, "snn_lats_host_shim.h"), "w") as f:
                f.write(SHIM)
            for header in ("cuda_fp16.h", "cuda_bf16.h", "cuda_runtime.h"):
                with open(os.path.join(work, header), "w") as f:
                    f.write('#include "snn_lats_host_shim.h"\n')
            unit = os.path.join(work, "kernels.cpp")
            with open(unit, "w") as f:
                f.write(text)
            out = os.path.join(work, "kernels.so")
            command = [cxx, *flags, "-I", work, "-include", os.path.join(work, "snn_lats_host_shim.h"),
                       unit, "-o", out]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
            os.replace(out, library)  # atomic: concurrent builders of the same digest agree
    lib = ctypes.CDLL(library)
    for name, params in kernels.items():
        fn = getattr(lib, f"launch_{name}")
        fn.argtypes = [ctypes.c_longlong, ctypes.c_longlong, *[p.ctype() for p in params]]
        fn.restype = None
    return lib, kernels


class HostKernel:
    """One compiled kernel: ``kernel(grid, block, *args)`` runs every (block, thread) of a 1-D launch."""

    def __init__(self, lib: ctypes.CDLL, name: str, params: list[Param]):
        self.name, self.params, self._fn = name, params, getattr(lib, f"launch_{name}")

    def __call__(self, grid, block, *args) -> None:
        grid, block = _extent(grid, "grid", self.name), _extent(block, "block", self.name)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        converted = [p.convert(a, self.name) for p, a in zip(self.params, args, strict=True)]
        self._fn(grid, block, *converted)

    def __repr__(self) -> str:
        return f"HostKernel({self.name}({', '.join(p.text for p in self.params)}))"


def _extent(value, what: str, name: str) -> int:
    if isinstance(value, tuple):
        if len(value) != 1 and any(v != 1 for v in value[1:]):
            raise ValueError(f"{name}: only 1-D launches are emulated, got {what} {value}")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}: {what} must be a non-negative int, got {value!r}")
    return value


def compile_many(sources) -> dict[str, HostKernel]:
    """Compile all ``sources`` into one shared object; return every kernel in them by name."""
    lib, kernels = _build(tuple(sources))
    return {name: HostKernel(lib, name, params) for name, params in kernels.items()}


def compile_on_host(source: str, name: str | None = None) -> HostKernel:
    kernels = compile_many((source,))
    if name is None:
        if len(kernels) != 1:
            raise ValueError(f"the source has kernels {sorted(kernels)}; name one")
        (name,) = kernels
    if name not in kernels:
        raise KeyError(f"kernel {name} not in the source (found {sorted(kernels)})")
    return kernels[name]


# --- the fused neuron kernels of cuda_kernels.py, launched with the CUDA op's arguments ---------------------

_NEURON_KERNELS: dict[tuple[str, NeuronConfig, str, int | None], HostKernel] = {}


def neuron_kernel_keys(configs, dtype: str, steps=()) -> list[tuple[str, NeuronConfig, str, int | None]]:
    """(kind, config, dtype, T) of every kernel: both forwards, the stored-h backward and the recompute
    backward for each T in ``steps``."""
    keys = []
    for c in configs:
        keys += [(kind, c, dtype, None) for kind in ("forward", "forward_recompute", "backward")]
        keys += [("backward_recompute", c, dtype, T) for T in steps]
    return keys


def precompile_neuron_kernels(configs, dtypes=None, steps=(), sources=None) -> None:
    """Compile every kernel of every config (``neuron_kernel_keys``) for each dtype, one shared object per
    dtype. ``sources(kind, config, dtype, steps) -> str`` replaces the source generator (tests plant bugs)."""
    sources = sources or cuda_kernels.source
    dtypes = tuple(cuda_kernels.DTYPES.values()) if dtypes is None else dtypes
    for dtype in dtypes:
        keys = neuron_kernel_keys(configs, dtype, steps)
        kernels = compile_many([sources(*key) for key in keys])
        for key in keys:
            _NEURON_KERNELS[key] = kernels[cuda_kernels.kernel_name(*key)]


def clear_neuron_kernels() -> None:
    _NEURON_KERNELS.clear()


def _kernel(kind: str, c: NeuronConfig, dtype: str, steps: int | None) -> HostKernel:
    key = (kind, c, dtype, steps)
    if key not in _NEURON_KERNELS:
        _NEURON_KERNELS[key] = compile_on_host(cuda_kernels.source(*key), cuda_kernels.kernel_name(*key))
    return _NEURON_KERNELS[key]


def launch(kind: str, c: NeuronConfig, tensor: torch.Tensor, n: int, args: tuple,
           steps: int | None = None) -> None:
    """``cuda_kernels._launch`` on the CPU: the same kernel, grid, block and argument tuple."""
    block = cuda_kernels.BLOCK
    _kernel(kind, c, cuda_kernels.DTYPES[tensor.dtype], steps)(((n + block - 1) // block,), (block,), *args)


class HostMultiStep(torch.autograd.Function):
    """The CUDA op's path (``ops.py``'s cuda kernel: ``cuda_kernels.cupy_forward``/``cupy_backward``, the
    same tensors and scalar arguments in the same order) with the host launcher in place of CuPy's:
    ``HostMultiStep.apply(x_seq, v0, config, leak_or_None, recompute)``."""

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, v: torch.Tensor, c: NeuronConfig, leak=None, recompute=False):
        spikes, v_last, charged = cuda_kernels.cupy_forward(x_seq, v, c, leak, store_h=not recompute,
                                                            launch=launch)
        ctx.save_for_backward(charged, x_seq, v, leak)
        ctx.config = c
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        charged, x_seq, v, leak = ctx.saved_tensors
        grad_x, grad_v0, grad_leak = cuda_kernels.cupy_backward(grad_spikes, grad_v, ctx.config, charged,
                                                                x_seq, v, leak, launch=launch)
        return grad_x, grad_v0, None, None if grad_leak is None else grad_leak.sum(), None


# --- emulation vs the torch backend: the grid and the measured differences ---------------------------------
# One place for the grid that tests/test_kernel_emulation.py checks and experiments/kernel_emulation.py
# reports: (tau, decay_input, parametric) per neuron kind x (hard, soft reset) x (detach, attach) x
# surrogate, 40 configs.

COMPARE_NEURONS = {"if": (None, False, False), "lif": (2.0, False, False),
                   "lif_decay_input": (2.0, True, False), "plif": (None, False, True),
                   "plif_decay_input": (None, True, True)}
COMPARE_CONFIGS = [
    NeuronConfig(tau=tau, decay_input=decay, v_threshold=1.0, v_reset=v_reset, detach_reset=detach,
                 surrogate=sg, alpha=4.0 if sg == "sigmoid" else 2.0, parametric=parametric)
    for (tau, decay, parametric), v_reset, detach, sg in itertools.product(
        COMPARE_NEURONS.values(), [0.0, None], [True, False], ["atan", "sigmoid"])]
COMPARE_LEAK = 0.4  # PLIF's k = sigmoid(w), i.e. tau = 2.5
COMPARE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
COMPARE_STEPS = (1, 5)
COMPARE_SHAPES = [(T, N) for T in COMPARE_STEPS for N in (1, 257, 1000)]  # N not a multiple of BLOCK=256
FLOAT32_ULP = 2.0 ** -23  # float32 ulp of 1.0
MANTISSA = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}
MIN_EXP = {torch.float32: -126, torch.float16: -14, torch.bfloat16: -126}


def dtype_ulps(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """|got - ref| per entry in units of the last place of ``dtype`` at ``ref``."""
    got, ref = got.double(), ref.double()
    exponent = torch.floor(torch.log2(ref.abs().clamp_min(2.0 ** MIN_EXP[dtype]))).clamp_min(MIN_EXP[dtype])
    return (got - ref).abs() / torch.exp2(exponent - MANTISSA[dtype])


def config_id(c: NeuronConfig) -> str:
    """The config's part of its kernel names, e.g. ``lif_decay_input_hard_detach_atan``."""
    return cuda_kernels.kernel_name("x", c, "float")[len("snn_lats_"):-len("_float_x")]


def compare_seed(T: int, N: int) -> int:
    """The seed of the grid's inputs at shape (T, N)."""
    return T * 7919 + N


def compare_inputs(c: NeuronConfig, dtype: torch.dtype, T: int, N: int, seed: int):
    """(x, v0, grad_spikes, grad_v) for a comparison run. A few neurons (v0 = 0) charge to exactly
    v_threshold at t = 0, so the kernels' ``>=`` is exercised."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, N, generator=g) * 1.2 + 0.4).to(dtype)
    v0 = torch.randn(N, generator=g) * 0.3
    exact = min(N, 8)
    v0[:exact] = 0.0
    # (PLIF decay_input charges to x·k, which needs not round to exactly v_threshold: 1/0.4 is inexact)
    x[0, :exact] = c.v_threshold * (c.tau if c.decay_input and c.tau else 1.0)
    grad_spikes = torch.randn(T, N, generator=g).to(dtype)
    grad_v = torch.randn(N, generator=g)
    return x, v0, grad_spikes, grad_v


def run_multistep(fn, x, v0, grad_spikes, grad_v, c: NeuronConfig, *extra) -> tuple[torch.Tensor, ...]:
    """(spikes, v_last, grad_x, grad_v0[, grad_leak]) of ``fn.apply(x, v0, c, leak, *extra)`` and its
    backward with (grad_spikes, grad_v); PLIF's leak is ``COMPARE_LEAK``."""
    x = x.clone().requires_grad_()
    v0 = v0.clone().requires_grad_()
    leak = torch.tensor(COMPARE_LEAK, requires_grad=True) if c.parametric else None
    spikes, v_last = fn.apply(x, v0, c, leak, *extra)
    inputs = (x, v0) + ((leak,) if c.parametric else ())
    grads = torch.autograd.grad((spikes, v_last), inputs, (grad_spikes, grad_v))
    return (spikes.detach(), v_last.detach(), *grads)


def _abs_diff(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max()) if got.numel() else 0.0


def _scale_ulps(diff: float, scale: float) -> float:
    """``diff`` in float32 ulps of ``scale`` (0 when both are 0)."""
    if diff == 0.0:
        return 0.0
    return diff / (FLOAT32_ULP * scale) if scale > 0 else float("inf")


def compare_with_reference(c: NeuronConfig, dtype: torch.dtype, T: int, N: int, seed: int = 0,
                           recompute: bool = False) -> dict:
    """Run ``HostMultiStep`` (the kernel sources on the CPU, stored-h or ``recompute`` backward) and
    ``reference.TorchMultiStep`` on the same inputs (``compare_inputs``) and measure their differences:
    ``spike_mismatches``, ``spike_rate``, max abs diffs ``v_abs``, ``gx_abs``, ``gv_abs`` and the same
    gradient diffs in float32 ulps of the reference tensor's largest |entry| (``gx_ulps``, ``gv_ulps``);
    ``gx_dtype_ulps`` is grad_x's largest diff in ulps of ``dtype`` at the entry (``dtype_ulps``);
    for PLIF also ``gk_abs`` and ``gk_ulps``, the latter relative to ``gk_scale``, the sum of |per-neuron
    partials| of dL/dk (what the scalar's rounding scales with). ``outputs`` and ``reference`` hold both
    tuples (spikes, v_last, grad_x, grad_v0[, grad_leak]), for tolerance checks and bit-identity of the
    variants."""
    x, v0, grad_spikes, grad_v = compare_inputs(c, dtype, T, N, seed)
    got = run_multistep(HostMultiStep, x, v0, grad_spikes, grad_v, c, recompute)
    want = run_multistep(reference.TorchMultiStep, x, v0, grad_spikes, grad_v, c)
    (s, v, gx, gv), (s_ref, v_ref, gx_ref, gv_ref) = got[:4], want[:4]
    result = dict(spike_mismatches=int((s != s_ref).sum()), spike_rate=float(s.float().mean()),
                  v_abs=_abs_diff(v, v_ref), gx_abs=_abs_diff(gx, gx_ref), gv_abs=_abs_diff(gv, gv_ref))
    result["gx_ulps"] = _scale_ulps(result["gx_abs"], float(gx_ref.double().abs().max()))
    result["gv_ulps"] = _scale_ulps(result["gv_abs"], float(gv_ref.double().abs().max()))
    result["gx_dtype_ulps"] = float(dtype_ulps(gx, gx_ref, dtype).max()) if gx.numel() else 0.0
    if c.parametric:
        leak = torch.tensor(COMPARE_LEAK)
        charged = reference.forward_loop(x, v0, c, leak)[2]
        partials = reference.backward_loop(grad_spikes, grad_v, charged, c, x, v0, leak)[2]
        result["gk_abs"] = _abs_diff(got[4], want[4])
        result["gk_scale"] = float(partials.double().abs().sum())
        result["gk_ulps"] = _scale_ulps(result["gk_abs"], result["gk_scale"])
    result["outputs"], result["reference"] = got, want
    return result
