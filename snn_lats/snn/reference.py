"""The ``torch`` backend: multi-step LIF/IF over all T with a hand-written BPTT backward.

The arithmetic follows SpikingJelly 2.0's own CPU operator step for step (charge in float32, ``h >= v_th``,
the same reset and surrogate formulas), so spikes match it exactly. Only the charged potentials h[t] are saved
for the backward pass. The CUDA kernels in ``cuda_kernels.py`` implement the same recurrences.
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


def forward_loop(x_seq: torch.Tensor, v: torch.Tensor, c: NeuronConfig):
    """Returns (spikes [T, ...] in x's dtype, final v in float32, charged h [T, ...] in float32)."""
    spikes, charged = [], []
    reset_value = 0.0 if c.v_reset is None else c.v_reset
    for current in x_seq.float():
        if c.tau is None:
            h = v + current
        elif c.decay_input:
            h = v + (current - (v - reset_value)) / c.tau
        else:
            h = v - (v - reset_value) / c.tau + current
        spike = (h >= c.v_threshold).to(torch.float32)
        v = h - spike * c.v_threshold if c.v_reset is None else spike * c.v_reset + (1 - spike) * h
        spikes.append(spike.to(x_seq.dtype))
        charged.append(h)
    return torch.stack(spikes), v, torch.stack(charged)


def backward_loop(grad_spikes: torch.Tensor, grad_v: torch.Tensor | None, h: torch.Tensor, c: NeuronConfig):
    """Returns (grad wrt x_seq, grad wrt the initial v)."""
    grad_x = torch.empty_like(h)
    carry = torch.zeros_like(h[0]) if grad_v is None else grad_v.float()
    for t in range(h.shape[0] - 1, -1, -1):
        sg = surrogate_grad(h[t] - c.v_threshold, c.surrogate, c.alpha)
        if c.v_reset is None:
            reset_grad = 1 if c.detach_reset else 1 - c.v_threshold * sg
        else:
            reset_grad = 1 - (h[t] >= c.v_threshold).to(h.dtype)
            if not c.detach_reset:
                reset_grad = reset_grad + (c.v_reset - h[t]) * sg
        gh = grad_spikes[t].float() * sg + carry * reset_grad
        if c.tau is None:
            grad_x[t] = gh
            carry = gh
        else:
            grad_x[t] = gh / c.tau if c.decay_input else gh
            carry = gh - gh / c.tau
    return grad_x, carry


class TorchMultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, v: torch.Tensor, config: NeuronConfig):
        spikes, v_last, h = forward_loop(x_seq, v, config)
        ctx.save_for_backward(h)
        ctx.config, ctx.x_dtype, ctx.v_dtype = config, x_seq.dtype, v.dtype
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        (h,) = ctx.saved_tensors
        grad_x, grad_v0 = backward_loop(grad_spikes, grad_v, h, ctx.config)
        return grad_x.to(ctx.x_dtype), grad_v0.to(ctx.v_dtype), None
