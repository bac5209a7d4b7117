"""``MultiStepLIFNode`` / ``MultiStepIFNode`` / ``MultiStepParametricLIFNode``: drop-in replacements for
SpikingJelly's LIF, IF and ParametricLIF (PLIF) nodes.

They subclass SpikingJelly's ``neuron.BaseNode`` (so ``functional.reset_net``, monitors and
``snn_lats.metrics`` treat them as neurons in both SpikingJelly versions) and run all T steps in one call:

- ``backend="cupy"``: one fused CUDA kernel forward, one backward (CUDA tensors, CuPy installed);
- ``backend="torch"``: the reference, on any device;
- ``backend=None`` (default): ``cupy`` for CUDA tensors when CuPy works, ``torch`` otherwise.

``recompute=None`` (default) runs the lean variant on the cupy backend when
T <= ``cuda_kernels.RECOMPUTE_MAX_T`` (save x, recompute the charged potentials in the backward kernel's
registers) and stores h otherwise (the torch backend would pay a second elementwise pass to recompute);
True/False force a variant.

Both run through the ``torch.library`` custom op ``snn_lats::multistep_forward`` (``ops.py``), whose autograd
formula is the ``snn_lats::multistep_backward`` op, so ``torch.compile(fullgraph=True)`` traces a node as one
opaque op with no graph break and eager and compiled runs execute the same kernels.
"""
from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import neuron, surrogate

from .._checks import check_bool, check_choice, check_number, shown
from . import cuda_kernels, ops
from .reference import SURROGATES, NeuronConfig

BACKENDS = ("cupy", "torch")
_SURROGATE_BASE = getattr(surrogate, "SurrogateFunctionBase", torch.nn.Module)


def surrogate_spec(fn) -> tuple[str, float]:
    """``("atan" | "sigmoid", alpha)`` for a SpikingJelly surrogate object or a name (default alpha)."""
    allowed = f"surrogate.ATan, surrogate.Sigmoid or one of {SURROGATES}"
    if isinstance(fn, str):
        if fn not in SURROGATES:
            raise ValueError(f"surrogate_function must be {allowed}, got {fn!r}")
        return fn, 2.0 if fn == "atan" else 4.0
    for name, cls in (("atan", surrogate.ATan), ("sigmoid", surrogate.Sigmoid)):
        if type(fn) is cls:
            return name, float(fn.alpha)
    # another SpikingJelly surrogate is a value the kernels do not implement; anything else is the wrong type
    kind = ValueError if isinstance(fn, _SURROGATE_BASE) else TypeError
    raise kind(f"surrogate_function must be {allowed}, got {shown(fn)}")


class _FusedNode(neuron.BaseNode):
    def __init__(self, tau: float | None, decay_input: bool, v_threshold: float, v_reset: float | None,
                 surrogate_function, detach_reset: bool, step_mode: str, backend: str | None,
                 recompute: bool | None, parametric: bool = False):
        name, alpha = surrogate_spec(surrogate_function)
        if isinstance(surrogate_function, str):
            surrogate_function = surrogate.ATan(alpha) if name == "atan" else surrogate.Sigmoid(alpha)
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, surrogate_function=surrogate_function,
                         detach_reset=detach_reset, step_mode=step_mode)
        backend = check_choice("backend", backend, (*BACKENDS, None))
        self.tau = check_number("tau", tau, above=1, optional=True)
        self.decay_input = check_bool("decay_input", decay_input)
        self.kernel_backend = backend  # not `backend`: SpikingJelly 0.0.0.0.14 validates that name as its own
        self.recompute = None if recompute is None else check_bool("recompute", recompute)
        self.config = NeuronConfig(self.tau, self.decay_input, float(v_threshold),
                                   None if v_reset is None else float(v_reset), bool(detach_reset),
                                   name, alpha, parametric)

    def neuronal_charge(self, x: torch.Tensor):  # the fused paths do not use SpikingJelly's per-step hooks
        raise NotImplementedError

    def resolve_backend(self, x: torch.Tensor) -> str:
        if self.kernel_backend == "cupy":
            if not x.is_cuda:
                raise ValueError(f"backend='cupy' needs CUDA tensors, got a tensor on {x.device}; "
                                 "use backend='torch' or None (automatic)")
            if not cuda_kernels.cupy_available():
                raise RuntimeError("backend='cupy' needs CuPy with a working GPU: pip install cupy-cuda13x")
            return "cupy"
        if self.kernel_backend == "torch":
            return "torch"
        fused = x.is_cuda and x.dtype in cuda_kernels.DTYPES and cuda_kernels.cupy_available()
        return "cupy" if fused else "torch"

    def _initial_v(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.v, torch.Tensor) and self.v.shape == x.shape:
            return self.v.float()
        fill = self.v if isinstance(self.v, float) else (0.0 if self.v_reset is None else self.v_reset)
        # a broadcast view of one float: the recompute backward saves v0, and after reset_net that costs
        # 4 bytes per layer instead of 4 per neuron (the kernels get a contiguous copy)
        return torch.full((), float(fill), dtype=torch.float32, device=x.device).expand(x.shape)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"multi-step input must be [T, ...], got shape {tuple(x_seq.shape)}")
        v = self._initial_v(x_seq[0])
        # one code path for eager and torch.compile: the snn_lats::multistep_forward custom op (ops.py)
        leak = self.w.float().sigmoid() if self.config.parametric else None
        backend = self.resolve_backend(x_seq)
        spikes, self.v = ops.multistep(x_seq, v, self.config, backend, leak, self.recompute)
        return spikes

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multi_step_forward(x.unsqueeze(0)).squeeze(0)

    def extra_repr(self) -> str:
        tau = "" if self.tau is None else f", tau={self.tau}, decay_input={self.decay_input}"
        if self.config.parametric:
            with torch.no_grad():
                learned = float(1 / self.w.float().sigmoid())
            tau = f", tau={learned:.4g} (learned), decay_input={self.decay_input}"
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}"
                f"{tau}, surrogate={self.config.surrogate}(alpha={self.config.alpha}), "
                f"step_mode={self.step_mode}, backend={self.kernel_backend or 'auto'}, "
                f"recompute={'auto' if self.recompute is None else self.recompute}")


class MultiStepLIFNode(_FusedNode):
    """LIF: H[t] = V[t−1] + (X[t] − (V[t−1] − V_reset)) / τ (``decay_input=True``), else
    V[t−1] − (V[t−1] − V_reset)/τ + X[t]; spike when H ≥ V_th; hard reset to ``v_reset`` or, with
    ``v_reset=None``, soft reset V = H − V_th."""

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function="sigmoid", detach_reset: bool = False,
                 step_mode: str = "m", backend: str | None = None, recompute: bool | None = None):
        super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         backend, recompute)


class MultiStepIFNode(_FusedNode):
    """IF: H[t] = V[t−1] + X[t], with LIF's firing and reset."""

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = 0.0, surrogate_function="sigmoid",
                 detach_reset: bool = False, step_mode: str = "m", backend: str | None = None,
                 recompute: bool | None = None):
        super().__init__(None, False, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         backend, recompute)


class MultiStepParametricLIFNode(_FusedNode):
    """PLIF (SpikingJelly's ``ParametricLIFNode``): LIF with a learnable leak k = sigmoid(w), w initialised to
    −log(init_tau − 1) so that 1/k = init_tau. H[t] = V[t−1] + (X[t] − (V[t−1] − V_reset))·k
    (``decay_input=True``), else V[t−1] − (V[t−1] − V_reset)·k + X[t]. The backward kernel reduces dL/dk over
    time in registers and over neurons once; autograd carries it to ``w`` through the sigmoid."""

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function="sigmoid", detach_reset: bool = False,
                 step_mode: str = "m", backend: str | None = None, recompute: bool | None = None):
        init_tau = check_number("init_tau", init_tau, above=1)
        super().__init__(None, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         backend, recompute, parametric=True)
        self.w = torch.nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))
