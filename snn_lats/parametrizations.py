"""Weight parametrizations registered through ``torch.nn.utils.parametrize``.

``SoftThreshold`` is LATS's ``W = sign(θ)·relu(|θ| − d)`` with the reference's straight-through gradient
(dW/dθ = 1 everywhere, so pruned weights keep learning and can regrow). ``BinaryMask`` is ``W = θ·m`` for
magnitude pruning. ``LearnedThreshold`` is LTP's sigmoid mask with a learnable per-layer threshold. The
latent θ stays the module's original ``Parameter`` object (parametrize keeps it as
``parametrizations.weight.original``), so optimizers built before or after preparation stay valid.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class _SoftThresholdSTE(torch.autograd.Function):
    """Forward: the soft-threshold operator. Backward: identity (the LATS/STDS ``PseudoRelu``)."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
        if isinstance(threshold, torch.Tensor):
            # θ − clamp(θ, −d, d) == sign(θ)·relu(|θ| − d) bit for bit; a tensor d: no recompiles as d moves
            d = threshold.to(theta.dtype)
            return theta - theta.clamp(-d, d)
        # one fused pass, as fast as a copy, and bit-identical to the above
        return F.softshrink(theta, threshold)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


class SoftThreshold(nn.Module):
    """Soft-threshold parametrization with a per-layer threshold ``d_l = scale · d``.

    Buffers (saved in the model's ``state_dict``):
        threshold: the effective threshold ``d_l`` of this layer, written by the pruner after every step.
        scale: the per-layer multiplier of the global threshold (1 by default).
        mask: only once frozen (early pruning): W = θ·mask from then on, so pruned weights stay exactly zero.
    """

    # its entries in a state_dict: always present, and the full set (see ``bake``)
    required_state = frozenset({"threshold"})
    state_keys = frozenset({"threshold", "scale", "mask"})

    @staticmethod
    def bake(theta: torch.Tensor, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The plain weight from θ and this parametrization's state_dict entries, as ``forward``
        computes it."""
        if state.get("mask") is not None:
            return theta * state["mask"]
        d = state["threshold"].to(theta.dtype)
        return theta - theta.clamp(-d, d)

    def __init__(self, scale: float = 1.0, threshold: float = 0.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("threshold", torch.tensor(float(threshold) * float(scale)))
        self.register_buffer("mask", None)
        self._value = float(self.threshold)  # Python mirror of the buffer for the eager fast path
        self._scale_value = float(self.scale)  # mirror, so the pruner can check a loaded state without a sync

    @property
    def frozen(self) -> bool:
        return self.mask is not None

    def set_threshold(self, value: float) -> None:
        """Write the effective threshold without a device sync."""
        self.threshold.fill_(value)
        self._value = torch.tensor(value, dtype=self.threshold.dtype).item()  # rounded as the buffer is

    def set_scale(self, value: float) -> None:
        self.scale.fill_(value)
        self._scale_value = torch.tensor(value, dtype=self.scale.dtype).item()

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return theta * self.mask
        if torch.compiler.is_compiling():  # a float attribute that changes every step would force recompiles
            return _SoftThresholdSTE.apply(theta, self.threshold)
        return _SoftThresholdSTE.apply(theta, self._value)

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """θ = sign(W)·(|W| + d): the latent tensor whose soft threshold is ``weight`` again.

        Used when the parametrization is registered and whenever ``module.weight = W`` is assigned, so a
        trained dense model keeps its function (weights exactly zero stay zero).
        """
        if self.mask is not None:
            return weight * self.mask
        return weight + torch.sign(weight) * self.threshold.to(weight.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint taken after freezing has a mask, one taken before has none: follow the checkpoint, so
        # model.load_state_dict works whatever this module's state and whatever the order of loading.
        saved = state_dict.get(prefix + "mask")
        if saved is not None and self.mask is None:
            self.mask = torch.empty_like(saved, device=self.threshold.device)
        elif saved is None and self.mask is not None:
            self.mask = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._value = float(self.threshold)
        self._scale_value = float(self.scale)

    def extra_repr(self) -> str:
        frozen = ", frozen" if self.frozen else ""
        return f"threshold={float(self.threshold):.6g}, scale={float(self.scale):.4g}{frozen}"


class BinaryMask(nn.Module):
    """``W = θ · mask``; the mask is a buffer the pruner rewrites. Gradients of masked weights are zero."""

    required_state = state_keys = frozenset({"mask"})

    @staticmethod
    def bake(theta: torch.Tensor, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return theta * state["mask"]

    def __init__(self, shape: torch.Size):
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))
        self.loaded = False  # set by load_state_dict, cleared by the pruner once it has checked the mask

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.loaded = self.loaded or prefix + "mask" in state_dict

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta * self.mask

    def extra_repr(self) -> str:
        density = float(self.mask.float().mean()) if self.mask.numel() else 1.0
        return f"density={density:.4f}"


class LearnedThreshold(nn.Module):
    """LTP (Azarian et al. 2020): a learnable threshold τ on the squared weight.

    Training mode: ``W = θ·σ((θ² − τ)/T)`` with ``T = T0·Var(|θ|)`` recomputed from the current weights. The
    mask is computed from ``θ.detach()``, so θ's gradient is the straight-through ``σ(·)·∂L/∂W`` (LTP's
    eq. 14) while τ keeps its full gradient. Evaluation mode: the hard mask ``W = θ·1[θ² > τ]``, which
    ``squash`` bakes in.

    τ is stored as ``threshold · unit``: ``threshold`` is the learnable parameter and ``unit`` a fixed
    buffer, Var(|θ|) at preparation. τ's gradient through the sigmoid scales as 1/T ∝ 1/Var(|θ|), so a plain
    τ would need a learning rate per layer (they differ by orders of magnitude); in units of ``unit`` one
    learning rate fits all layers, and the hard mask and the loss are unchanged.
    """

    required_state = state_keys = frozenset({"threshold", "unit", "temperature"})

    @staticmethod
    def bake(theta: torch.Tensor, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The hard mask of evaluation and ``squash``: θ·1[θ² > threshold·unit]."""
        return theta * (theta.square() > state["threshold"] * state["unit"])

    def __init__(self, temperature: float, unit: float, threshold: float = 0.0):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.register_buffer("unit", torch.tensor(float(unit)))
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self._temperature_value = float(self.temperature)  # mirror: a loaded T0 is checked without a sync

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._temperature_value = float(self.temperature)

    @property
    def tau(self) -> torch.Tensor:
        """τ on the squared-weight scale (differentiable in ``threshold``)."""
        return self.threshold * self.unit

    def layer_temperature(self, theta: torch.Tensor) -> torch.Tensor:
        """T_l = T0·Var(|θ|), without gradient."""
        var = theta.detach().abs().var(correction=0)
        return (self.temperature * var).clamp_min(torch.finfo(var.dtype).tiny)

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """z = (θ² − τ)/T, differentiable in τ only."""
        return (theta.detach().square() - self.tau) / self.layer_temperature(theta)

    def hard_mask(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.detach().square() > self.tau.detach()

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if self.training:
            return theta * torch.sigmoid(self.logits(theta)).to(theta.dtype)
        return theta * self.hard_mask(theta)

    def extra_repr(self) -> str:
        return f"tau={float(self.tau.detach()):.4g}, temperature={float(self.temperature):.4g}"


PARAMETRIZATIONS = (SoftThreshold, BinaryMask, LearnedThreshold)


def parametrization_for_state(keys: set[str] | frozenset[str]) -> type[nn.Module]:
    """The parametrization class whose state_dict entries are exactly ``keys`` (its required ones, maybe more
    of its own); ValueError if none is."""
    for cls in PARAMETRIZATIONS:
        if cls.required_state <= keys <= cls.state_keys:
            return cls
    raise ValueError(f"no snn_lats parametrization has the state entries {sorted(keys)}")


def pruning_parametrization(module: nn.Module) -> SoftThreshold | BinaryMask | LearnedThreshold | None:
    """The snn_lats parametrization on ``module.weight``, or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, PARAMETRIZATIONS):
            return p
    return None


def latent_weight(module: nn.Module) -> torch.Tensor:
    """θ: the tensor the optimizer trains, ``parametrizations.weight.original`` on a parametrized layer and
    the plain ``weight`` otherwise (the same ``Parameter`` object before and after a pruner prepares it)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def deployed_weight(module: nn.Module) -> torch.Tensor:
    """The weight as ``squash`` bakes it: for LTP the hard mask, even while the model is in training mode."""
    p = pruning_parametrization(module)
    if not isinstance(p, LearnedThreshold) or not p.training:
        return module.weight
    p.train(False)
    try:
        return module.weight
    finally:
        p.train(True)
