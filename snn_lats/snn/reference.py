"""The ``torch`` backend: multi-step LIF/IF/PLIF over all T with a hand-written BPTT backward.

The arithmetic follows SpikingJelly 2.0's own CPU operators step for step (charge in float32, ``h >= v_th``,
the same reset and surrogate formulas; PLIF multiplies by k = sigmoid(w) where LIF divides by tau), so spikes
match it exactly. The backward runs either from the saved charged potentials h (``backward_loop``) or from the
saved input, recomputing h (``recompute_backward``); the two give identical results. The CUDA kernels in
``cuda_kernels.py`` implement the same recurrences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SURROGATES = ("atan", "sigmoid")


@dataclass(frozen=True)
class NeuronConfig:
    """Everything that defines the recurrence. ``tau is None`` means IF (no leak)."""

    tau: float | None
    decay_input: bool
    v_threshold: float
    v_reset: float | None  # None: soft reset (subtract the threshold)
    detach_reset: bool
    surrogate: str
    alpha: float
    # ParametricLIF: the leak is a learnable k = sigmoid(w) (SpikingJelly's ParametricLIFNode), a runtime
    # tensor multiplied in (H = V + (X - (V - V_reset)) * k), not ``tau``; ``tau`` is None then.
    parametric: bool = False


def surrogate_grad(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    if surrogate == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return (1 - s) * s * alpha
    z = x * (math.pi / 2 * alpha)
    return (alpha / 2) / (1 + z * z)


def _charge(v: torch.Tensor, current: torch.Tensor, c: NeuronConfig, leak: torch.Tensor | None,
            reset_value: float) -> torch.Tensor:
    if c.parametric:  # SpikingJelly's ParametricLIFNode: multiply by k = sigmoid(w)
        if c.decay_input:
            return v + (current - (v - reset_value)) * leak
        return v - (v - reset_value) * leak + current
    if c.tau is None:
        return v + current
    if c.decay_input:
        return v + (current - (v - reset_value)) / c.tau
    return v - (v - reset_value) / c.tau + current


def _after_reset(h: torch.Tensor, c: NeuronConfig) -> torch.Tensor:
    spike = (h >= c.v_threshold).to(torch.float32)
    return h - spike * c.v_threshold if c.v_reset is None else spike * c.v_reset + (1 - spike) * h


def check_leak(c: NeuronConfig, leak: torch.Tensor | None) -> None:
    if c.parametric and (leak is None or leak.dim() != 0):
        raise ValueError("a parametric (PLIF) config needs leak = sigmoid(w) as a 0-dim float32 tensor")
    if not c.parametric and leak is not None:
        raise ValueError("leak is only for parametric (PLIF) configs; LIF/IF take tau from the config")


def forward_loop(x_seq: torch.Tensor, v: torch.Tensor, c: NeuronConfig, leak: torch.Tensor | None = None):
    """Returns (spikes [T, ...] in x's dtype, final v in float32, charged h [T, ...] in float32).
    ``leak`` is the PLIF factor k = sigmoid(w) (0-dim float32) for a parametric config, else None."""
    check_leak(c, leak)
    spikes, charged = [], []
    reset_value = 0.0 if c.v_reset is None else c.v_reset
    for current in x_seq.float():
        h = _charge(v, current, c, leak, reset_value)
        v = _after_reset(h, c)
        spikes.append((h >= c.v_threshold).to(x_seq.dtype))
        charged.append(h)
    return torch.stack(spikes), v, torch.stack(charged)


def backward_loop(grad_spikes: torch.Tensor, grad_v: torch.Tensor | None, h: torch.Tensor, c: NeuronConfig,
                  x_seq: torch.Tensor | None = None, v0: torch.Tensor | None = None,
                  leak: torch.Tensor | None = None):
    """Returns (grad wrt x_seq, grad wrt the initial v, per-neuron partials of the grad wrt ``leak``).

    The partials (float32, v's shape; None unless parametric) sum to dL/dk. A parametric config needs x_seq
    and v0 too: dH[t]/dk = X[t] - (V[t-1] - V_reset) (decay_input) or -(V[t-1] - V_reset), with V[t-1]
    rebuilt from h[t-1] (v0 at t = 0), as in SpikingJelly's PLIF backward."""
    check_leak(c, leak)
    if c.parametric and (x_seq is None or v0 is None):
        raise ValueError("the parametric (PLIF) backward needs x_seq and v0")
    grad_x = torch.empty_like(h)
    carry = torch.zeros_like(h[0]) if grad_v is None else grad_v.float()
    grad_leak = torch.zeros_like(h[0]) if c.parametric else None
    reset_value = 0.0 if c.v_reset is None else c.v_reset
    for t in range(h.shape[0] - 1, -1, -1):
        sg = surrogate_grad(h[t] - c.v_threshold, c.surrogate, c.alpha)
        if c.v_reset is None:
            reset_grad = 1 if c.detach_reset else 1 - c.v_threshold * sg
        else:
            reset_grad = 1 - (h[t] >= c.v_threshold).to(h.dtype)
            if not c.detach_reset:
                reset_grad = reset_grad + (c.v_reset - h[t]) * sg
        gh = grad_spikes[t].float() * sg + carry * reset_grad
        if c.parametric:
            grad_x[t] = gh * leak if c.decay_input else gh
            carry = gh - gh * leak
            previous = _after_reset(h[t - 1], c) if t > 0 else v0.float()
            factor = (x_seq[t].float() - (previous - reset_value) if c.decay_input
                      else -(previous - reset_value))
            grad_leak = grad_leak + gh * factor
        elif c.tau is None:
            grad_x[t] = gh
            carry = gh
        else:
            grad_x[t] = gh / c.tau if c.decay_input else gh
            carry = gh - gh / c.tau
    return grad_x, carry, grad_leak


def recompute_backward(grad_spikes: torch.Tensor, grad_v: torch.Tensor | None, x_seq: torch.Tensor,
                       v0: torch.Tensor, c: NeuronConfig, leak: torch.Tensor | None = None):
    """``backward_loop`` from the saved input instead of a saved h, which is recomputed (bit for bit)."""
    h = forward_loop(x_seq, v0.float(), c, leak)[2]
    return backward_loop(grad_spikes, grad_v, h, c, x_seq, v0, leak)


class TorchMultiStep(torch.autograd.Function):
    """The reference as an autograd function that saves h (and, for PLIF, x, v0 and the leak):
    ``TorchMultiStep.apply(x_seq, v0, config, leak_or_None)``; tests compare every other path with it."""

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, v: torch.Tensor, config: NeuronConfig, leak=None):
        spikes, v_last, h = forward_loop(x_seq, v, config, leak)
        ctx.save_for_backward(h, x_seq, v, leak)
        ctx.config, ctx.x_dtype, ctx.v_dtype = config, x_seq.dtype, v.dtype
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        h, x_seq, v, leak = ctx.saved_tensors
        grad_x, grad_v0, grad_leak = backward_loop(grad_spikes, grad_v, h, ctx.config, x_seq, v, leak)
        grad_leak = None if grad_leak is None else grad_leak.sum()
        return grad_x.to(ctx.x_dtype), grad_v0.to(ctx.v_dtype), None, grad_leak
