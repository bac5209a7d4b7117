"""The fused multi-step neuron as ``torch.library`` custom ops; eager and ``torch.compile`` share the code.

- ``snn_lats::multistep_forward(x_seq, v0, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
  alpha, backend) -> (spikes, v_last, h)``: spikes in x's dtype, v_last float32 shaped like v0, and the
  charged potentials h (float32, x's shape) that the backward needs.
- ``snn_lats::multistep_backward(grad_spikes, grad_v_last, h, <same scalars>) -> (grad_x, grad_v0)``: grad_x
  in grad_spikes' dtype, grad_v0 float32.

Encoding: ``tau <= 0`` means IF (``NeuronConfig.tau is None``); ``v_reset=None`` means soft reset; ``backend``
is ``"torch"`` (the reference in ``reference.py``, any device) or ``"cupy"`` (the CuPy kernels of
``cuda_kernels.py``, CUDA tensors only). The default implementation, used for every device, is the torch
reference; the CUDA kernel registered with ``register_kernel("cuda")`` runs the CuPy kernels when
``backend="cupy"`` and the same reference otherwise. ``backend="cupy"`` never falls back silently: without
CuPy, or on a non-CUDA tensor, it raises. ``NeuronConfig(parametric=True)`` is refused (``ParametricLIF``
needs its own op, with the learnable leak as a tensor input).

``register_autograd`` wires the forward's backward to the backward op, which computes exactly what
``reference.TorchMultiStep`` (or ``cuda_kernels.CupyMultiStep``) computes; ``register_fake`` gives both ops
shape/dtype propagation for ``torch.compile`` and ``opcheck``.
"""
import torch

from . import reference
from .reference import NeuronConfig

BACKENDS = ("torch", "cupy")


def config_from_args(tau: float, decay_input: bool, v_threshold: float, v_reset: float | None,
                     detach_reset: bool, surrogate: str, alpha: float) -> NeuronConfig:
    """The ``NeuronConfig`` the op scalars encode (``tau <= 0``: IF)."""
    if surrogate not in reference.SURROGATES:
        raise ValueError(f"surrogate must be one of {reference.SURROGATES}, got {surrogate!r}")
    return NeuronConfig(None if tau <= 0 else float(tau), bool(decay_input) if tau > 0 else False,
                        float(v_threshold), None if v_reset is None else float(v_reset), bool(detach_reset),
                        surrogate, float(alpha))


def config_args(c: NeuronConfig) -> tuple:
    """The op scalars (tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha) for ``c``."""
    if c.parametric:
        raise NotImplementedError("snn_lats::multistep_forward implements LIF/IF with a fixed tau; "
                                  "NeuronConfig(parametric=True) (ParametricLIF) needs the parametric op")
    return (0.0 if c.tau is None else float(c.tau), bool(c.decay_input), float(c.v_threshold),
            None if c.v_reset is None else float(c.v_reset), bool(c.detach_reset), c.surrogate,
            float(c.alpha))


def _check_backend(backend: str, device: torch.device) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cupy" and device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, got a tensor on {device}; "
                         "use backend='torch' or None (automatic)")


def _check_shapes(x_seq: torch.Tensor, v0: torch.Tensor) -> None:
    if x_seq.dim() < 2 or x_seq.shape[0] < 1:
        raise ValueError(f"multi-step input must be [T, ...] with T >= 1, got shape {tuple(x_seq.shape)}")
    if tuple(v0.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"v0 must have x_seq's per-step shape {tuple(x_seq.shape[1:])}, "
                         f"got {tuple(v0.shape)}")


def _forward_config(x_seq, v0, backend, *scalars) -> NeuronConfig:
    _check_backend(backend, x_seq.device)
    _check_shapes(x_seq, v0)
    return config_from_args(*scalars)


def _reference_backward(grad_spikes, grad_v_last, h, c: NeuronConfig):
    grad_x, grad_v0 = reference.backward_loop(grad_spikes, grad_v_last, h, c)
    return grad_x.to(grad_spikes.dtype), grad_v0.float()


@torch.library.custom_op("snn_lats::multistep_forward", mutates_args=())
def multistep_forward(x_seq: torch.Tensor, v0: torch.Tensor, tau: float, decay_input: bool,
                      v_threshold: float, v_reset: float | None, detach_reset: bool, surrogate: str,
                      alpha: float, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = _forward_config(x_seq, v0, backend, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
                        alpha)
    return reference.forward_loop(x_seq, v0.float(), c)


@torch.library.custom_op("snn_lats::multistep_backward", mutates_args=())
def multistep_backward(grad_spikes: torch.Tensor, grad_v_last: torch.Tensor, h: torch.Tensor, tau: float,
                       decay_input: bool, v_threshold: float, v_reset: float | None, detach_reset: bool,
                       surrogate: str, alpha: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_backend(backend, h.device)
    c = config_from_args(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    return _reference_backward(grad_spikes, grad_v_last, h, c)


@multistep_forward.register_kernel("cuda")
def _multistep_forward_cuda(x_seq, v0, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
                            backend):
    c = _forward_config(x_seq, v0, backend, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
                        alpha)
    if backend == "cupy":
        from . import cuda_kernels

        return cuda_kernels.cupy_forward(x_seq, v0, c)
    return reference.forward_loop(x_seq, v0.float(), c)


@multistep_backward.register_kernel("cuda")
def _multistep_backward_cuda(grad_spikes, grad_v_last, h, tau, decay_input, v_threshold, v_reset,
                             detach_reset, surrogate, alpha, backend):
    _check_backend(backend, h.device)
    c = config_from_args(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    if backend == "cupy":
        from . import cuda_kernels

        return cuda_kernels.cupy_backward(grad_spikes, grad_v_last, h, c)
    return _reference_backward(grad_spikes, grad_v_last, h, c)


@multistep_forward.register_fake
def _multistep_forward_fake(x_seq, v0, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
                            backend):
    return (torch.empty_like(x_seq, memory_format=torch.contiguous_format),
            v0.new_empty(v0.shape, dtype=torch.float32),
            x_seq.new_empty(x_seq.shape, dtype=torch.float32))


@multistep_backward.register_fake
def _multistep_backward_fake(grad_spikes, grad_v_last, h, tau, decay_input, v_threshold, v_reset,
                             detach_reset, surrogate, alpha, backend):
    return (grad_spikes.new_empty(h.shape, dtype=grad_spikes.dtype),
            h.new_empty(h.shape[1:], dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x_seq, v0, *scalars = inputs
    ctx.save_for_backward(output[2])
    ctx.scalars = tuple(scalars)
    ctx.x_dtype, ctx.v_dtype = x_seq.dtype, v0.dtype


def _backward(ctx, grad_spikes, grad_v_last, grad_h):
    (h,) = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros(h.shape, dtype=ctx.x_dtype, device=h.device)
    if grad_v_last is None:
        grad_v_last = torch.zeros(h.shape[1:], dtype=torch.float32, device=h.device)
    # grad_h is ignored: h is the saved state for the backward, not a differentiable output
    grad_x, grad_v0 = torch.ops.snn_lats.multistep_backward(grad_spikes.to(ctx.x_dtype), grad_v_last.float(),
                                                            h, *ctx.scalars)
    return (grad_x, grad_v0.to(ctx.v_dtype)) + (None,) * len(ctx.scalars)


multistep_forward.register_autograd(_backward, setup_context=_setup_context)


def multistep(x_seq: torch.Tensor, v0: torch.Tensor, config: NeuronConfig,
              backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, v_last) through ``torch.ops.snn_lats.multistep_forward``; differentiable in x_seq and v0."""
    spikes, v_last, _ = torch.ops.snn_lats.multistep_forward(x_seq, v0, *config_args(config), backend)
    return spikes, v_last
