"""The fused multi-step neuron as ``torch.library`` custom ops; eager and ``torch.compile`` share the code.

- ``snn_lats::multistep_forward(x_seq, v0, leak, tau, decay_input, v_threshold, v_reset, detach_reset,
  surrogate, alpha, backend, recompute) -> (spikes, v_last, h)``: spikes in x's dtype, v_last float32 shaped
  like v0, and h: the charged potentials (float32, x's shape) that the stored-h backward reads, or an empty
  tensor with ``recompute=True`` (the backward then recomputes h from the saved x and v0).
- ``snn_lats::multistep_backward(grad_spikes, grad_v_last, h, x_seq, v0, leak, <same scalars but recompute>)
  -> (grad_x, grad_v0, grad_leak)``: grad_x in grad_spikes' dtype, grad_v0 float32, grad_leak a 0-dim float32
  (zero unless parametric). ``h=None`` selects the recompute backward, which needs x_seq and v0; PLIF needs
  them in both variants.

Encoding: ``leak`` is None for LIF/IF and PLIF's k = sigmoid(w) (a 0-dim float32 tensor, differentiable) for
``NeuronConfig(parametric=True)``; ``tau <= 0`` means no fixed tau (IF, or PLIF); ``v_reset=None`` means soft
reset; ``backend`` is ``"torch"`` (the reference in ``reference.py``, any device) or ``"cupy"`` (the CuPy
kernels of ``cuda_kernels.py``, CUDA tensors only). The default implementation, used for every device, is the
torch reference; the CUDA kernel registered with ``register_kernel("cuda")`` runs the CuPy kernels when
``backend="cupy"`` and the same reference otherwise. ``backend="cupy"`` never falls back silently: without
CuPy, or on a non-CUDA tensor, it raises; so does ``recompute=True`` with T > ``RECOMPUTE_MAX_T`` there.

``register_autograd`` wires the forward's backward to the backward op, which computes exactly what
``reference.TorchMultiStep`` computes (both variants give identical results); ``register_fake`` gives both
ops shape/dtype propagation for ``torch.compile`` and ``opcheck``.
"""
import torch

from . import reference
from .cuda_kernels import RECOMPUTE_MAX_T
from .reference import NeuronConfig

BACKENDS = ("torch", "cupy")


def config_from_args(tau: float, decay_input: bool, v_threshold: float, v_reset: float | None,
                     detach_reset: bool, surrogate: str, alpha: float,
                     parametric: bool = False) -> NeuronConfig:
    """The ``NeuronConfig`` the op scalars encode (``tau <= 0``: IF, or PLIF when ``parametric``)."""
    if surrogate not in reference.SURROGATES:
        raise ValueError(f"surrogate must be one of {reference.SURROGATES}, got {surrogate!r}")
    if parametric and tau > 0:
        raise ValueError(f"a parametric (PLIF) neuron takes its leak as a tensor, so tau must be <= 0, "
                         f"got {tau}")
    leaky = parametric or tau > 0
    return NeuronConfig(None if tau <= 0 else float(tau), bool(decay_input) and leaky, float(v_threshold),
                        None if v_reset is None else float(v_reset), bool(detach_reset), surrogate,
                        float(alpha), bool(parametric))


def config_args(c: NeuronConfig) -> tuple:
    """The op scalars (tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha) for ``c``."""
    return (0.0 if c.tau is None else float(c.tau), bool(c.decay_input), float(c.v_threshold),
            None if c.v_reset is None else float(c.v_reset), bool(c.detach_reset), c.surrogate,
            float(c.alpha))


def _check_backend(backend: str, device: torch.device) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cupy" and device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, got a tensor on {device}; "
                         "use backend='torch' or None (automatic)")


def _check_inputs(x_seq: torch.Tensor, v0: torch.Tensor, leak: torch.Tensor | None) -> None:
    if x_seq.dim() < 2 or x_seq.shape[0] < 1:
        raise ValueError(f"multi-step input must be [T, ...] with T >= 1, got shape {tuple(x_seq.shape)}")
    if tuple(v0.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"v0 must have x_seq's per-step shape {tuple(x_seq.shape[1:])}, "
                         f"got {tuple(v0.shape)}")
    if leak is not None and (leak.dim() != 0 or leak.dtype != torch.float32):
        raise ValueError(f"leak must be a 0-dim float32 tensor (PLIF's sigmoid(w)), got shape "
                         f"{tuple(leak.shape)} and dtype {leak.dtype}")


def _forward_config(x_seq, v0, leak, backend, recompute, *scalars) -> NeuronConfig:
    _check_backend(backend, x_seq.device)
    _check_inputs(x_seq, v0, leak)
    if recompute and backend == "cupy" and x_seq.shape[0] > RECOMPUTE_MAX_T:
        raise ValueError(f"recompute=True with backend='cupy' takes T <= RECOMPUTE_MAX_T={RECOMPUTE_MAX_T}, "
                         f"got T={x_seq.shape[0]}; use recompute=False or None (automatic)")
    return config_from_args(*scalars, parametric=leak is not None)


def _backward_config(grad_spikes, h, x_seq, v0, leak, backend, *scalars) -> NeuronConfig:
    _check_backend(backend, grad_spikes.device)
    if (h is None or leak is not None) and (x_seq is None or v0 is None):
        raise ValueError("multistep_backward needs x_seq and v0 when h is None (recompute) or leak is given")
    return config_from_args(*scalars, parametric=leak is not None)


def _reference_forward(x_seq, v0, leak, c: NeuronConfig, recompute: bool):
    spikes, v_last, h = reference.forward_loop(x_seq, v0.float(), c, leak)
    return spikes, v_last, h.new_empty(0) if recompute else h


def _finish_backward(grad_x, grad_v0, grad_leak, grad_spikes):
    if grad_leak is None:  # LIF/IF: the op still returns a tensor
        grad_leak = torch.zeros((), dtype=torch.float32, device=grad_v0.device)
    return grad_x.to(grad_spikes.dtype), grad_v0.float(), grad_leak.sum()


def _reference_backward(grad_spikes, grad_v_last, h, x_seq, v0, leak, c: NeuronConfig):
    if h is None:
        result = reference.recompute_backward(grad_spikes, grad_v_last, x_seq, v0, c, leak)
    else:
        result = reference.backward_loop(grad_spikes, grad_v_last, h, c, x_seq, v0, leak)
    return _finish_backward(*result, grad_spikes)


@torch.library.custom_op("snn_lats::multistep_forward", mutates_args=())
def multistep_forward(x_seq: torch.Tensor, v0: torch.Tensor, leak: torch.Tensor | None, tau: float,
                      decay_input: bool, v_threshold: float, v_reset: float | None, detach_reset: bool,
                      surrogate: str, alpha: float, backend: str,
                      recompute: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = _forward_config(x_seq, v0, leak, backend, recompute, tau, decay_input, v_threshold, v_reset,
                        detach_reset, surrogate, alpha)
    return _reference_forward(x_seq, v0, leak, c, recompute)


@torch.library.custom_op("snn_lats::multistep_backward", mutates_args=())
def multistep_backward(grad_spikes: torch.Tensor, grad_v_last: torch.Tensor, h: torch.Tensor | None,
                       x_seq: torch.Tensor | None, v0: torch.Tensor | None, leak: torch.Tensor | None,
                       tau: float, decay_input: bool, v_threshold: float, v_reset: float | None,
                       detach_reset: bool, surrogate: str, alpha: float,
                       backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = _backward_config(grad_spikes, h, x_seq, v0, leak, backend, tau, decay_input, v_threshold, v_reset,
                         detach_reset, surrogate, alpha)
    return _reference_backward(grad_spikes, grad_v_last, h, x_seq, v0, leak, c)


@multistep_forward.register_kernel("cuda")
def _multistep_forward_cuda(x_seq, v0, leak, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
                            alpha, backend, recompute):
    c = _forward_config(x_seq, v0, leak, backend, recompute, tau, decay_input, v_threshold, v_reset,
                        detach_reset, surrogate, alpha)
    if backend != "cupy":
        return _reference_forward(x_seq, v0, leak, c, recompute)
    from . import cuda_kernels

    spikes, v_last, h = cuda_kernels.cupy_forward(x_seq, v0, c, leak, store_h=not recompute)
    return spikes, v_last, x_seq.new_empty(0, dtype=torch.float32) if h is None else h


@multistep_backward.register_kernel("cuda")
def _multistep_backward_cuda(grad_spikes, grad_v_last, h, x_seq, v0, leak, tau, decay_input, v_threshold,
                             v_reset, detach_reset, surrogate, alpha, backend):
    c = _backward_config(grad_spikes, h, x_seq, v0, leak, backend, tau, decay_input, v_threshold, v_reset,
                         detach_reset, surrogate, alpha)
    if backend != "cupy":
        return _reference_backward(grad_spikes, grad_v_last, h, x_seq, v0, leak, c)
    from . import cuda_kernels

    result = cuda_kernels.cupy_backward(grad_spikes, grad_v_last, c, h, x_seq, v0, leak)
    return _finish_backward(*result, grad_spikes)


@multistep_forward.register_fake
def _multistep_forward_fake(x_seq, v0, leak, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
                            alpha, backend, recompute):
    h_shape = (0,) if recompute else x_seq.shape
    return (torch.empty_like(x_seq, memory_format=torch.contiguous_format),
            v0.new_empty(v0.shape, dtype=torch.float32),
            x_seq.new_empty(h_shape, dtype=torch.float32))


@multistep_backward.register_fake
def _multistep_backward_fake(grad_spikes, grad_v_last, h, x_seq, v0, leak, tau, decay_input, v_threshold,
                             v_reset, detach_reset, surrogate, alpha, backend):
    return (grad_spikes.new_empty(grad_spikes.shape, dtype=grad_spikes.dtype),
            grad_spikes.new_empty(grad_spikes.shape[1:], dtype=torch.float32),
            grad_spikes.new_empty((), dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x_seq, v0, leak, *scalars = inputs
    recompute = scalars[-1]
    keep_input = recompute or leak is not None  # the recompute backward, and PLIF's dH/dk, read x and v0
    ctx.save_for_backward(None if recompute else output[2], x_seq if keep_input else None,
                          v0 if keep_input else None, leak)
    ctx.scalars = tuple(scalars)
    ctx.x_dtype, ctx.v_dtype = x_seq.dtype, v0.dtype
    ctx.shape, ctx.device = x_seq.shape, x_seq.device


def _backward(ctx, grad_spikes, grad_v_last, grad_h):
    h, x_seq, v0, leak = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros(ctx.shape, dtype=ctx.x_dtype, device=ctx.device)
    if grad_v_last is None:
        grad_v_last = torch.zeros(ctx.shape[1:], dtype=torch.float32, device=ctx.device)
    # grad_h is ignored: h is the saved state for the backward, not a differentiable output
    grad_x, grad_v0, grad_leak = torch.ops.snn_lats.multistep_backward(
        grad_spikes.to(ctx.x_dtype), grad_v_last.float(), h, x_seq, v0, leak, *ctx.scalars[:-1])
    return (grad_x, grad_v0.to(ctx.v_dtype), None if leak is None else grad_leak) + (None,) * len(ctx.scalars)


multistep_forward.register_autograd(_backward, setup_context=_setup_context)


def multistep(x_seq: torch.Tensor, v0: torch.Tensor, config: NeuronConfig, backend: str = "torch",
              leak: torch.Tensor | None = None,
              recompute: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, v_last) through ``torch.ops.snn_lats.multistep_forward``; differentiable in x_seq, v0 and
    ``leak`` (PLIF's sigmoid(w), required exactly when ``config.parametric``). ``recompute=None`` saves x
    and recomputes h in the backward for the cupy kernels when T <= RECOMPUTE_MAX_T (there the recompute
    runs in registers at no memory cost), and stores h otherwise: the torch backend would pay a second pass of
    its elementwise ops for it."""
    if config.parametric != (leak is not None):
        raise ValueError("leak (PLIF's sigmoid(w)) must be given exactly when config.parametric is True")
    if recompute is None:
        recompute = backend == "cupy" and x_seq.shape[0] <= RECOMPUTE_MAX_T
    spikes, v_last, _ = torch.ops.snn_lats.multistep_forward(x_seq, v0, leak, *config_args(config), backend,
                                                             bool(recompute))
    return spikes, v_last
