"""How OCSPruner pushes the channels it selected for pruning towards zero while it regularises: small strategy
objects, as Torch-Pruning's regularized pruners, so a new penalty is one class.

A regularizer has two hooks that OCSPruner calls only while it regularises and before the channels go:
``regularize(pruner, strength)`` after ``backward()`` (it may change the gradients) and
``step(pruner, strength, lr)`` after ``optimizer.step()`` (it may change the weights).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._checks import shown

if TYPE_CHECKING:
    from .ocs import OCSPruner


class ChannelRegularizer:
    """Do-nothing base; ``name`` is how ``OCSPruner(regularizer=...)`` and ``--ocs-regularizer`` spell it."""

    name = ""

    def regularize(self, pruner: OCSPruner, strength: float) -> None:
        """After ``backward()``, before ``optimizer.step()``, with unscaled gradients."""

    def step(self, pruner: OCSPruner, strength: float, lr: float | None) -> None:
        """After ``optimizer.step()``; ``lr`` is η of that step (None: read it from ``pruner.optimizer``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Shrink(ChannelRegularizer):
    """The reference's decoupled shrink: ``W[c] ← (1 − λ·η)·W[c]`` for every to-prune channel c after each
    step.

    Touches their out-channel rows, depthwise filters, the consumers' in-channel columns and BN γ (not β, not
    biases), as the reference's ``scale_weights_towards_zero``.
    """

    name = "shrink"

    @torch.no_grad()
    def step(self, pruner: OCSPruner, strength: float, lr: float | None) -> None:
        targets = pruner.shrink_targets()
        if not targets:
            return
        if lr is None:
            if pruner.optimizer is None:
                raise ValueError("OCSPruner.step: regularizer='shrink' needs the learning rate: pass "
                                 "optimizer= to OCSPruner or lr= to step()")
            lr = pruner.optimizer.param_groups[0]["lr"]
        factor = 1.0 - strength * float(lr)
        for param, dim, idxs in targets:
            if idxs.device != param.device:
                idxs = idxs.to(param.device)
            param.index_copy_(dim, idxs, param.index_select(dim, idxs) * factor)


class GroupLasso(ChannelRegularizer):
    """The true gradient of ``λ·Σ_c ‖θ_c‖₂`` over the to-prune channels: ``grad[θ_c] += λ·θ_c/‖θ_c‖₂``."""

    name = "group_lasso"

    @torch.no_grad()
    def regularize(self, pruner: OCSPruner, strength: float) -> None:
        for _, sq, parts in pruner.selected_sq_norms(detach=True):
            inv_norm = sq.clamp_min(1e-24).rsqrt()
            for member, idxs, roots in parts:
                param = member.param
                idxs = idxs.to(param.device)
                rows = param.index_select(member.dim, idxs)
                shape = [1] * rows.dim()
                shape[member.dim] = -1
                scale = (strength * inv_norm[roots.to(inv_norm.device)]).reshape(shape).to(rows)
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                param.grad.index_add_(member.dim, idxs, rows * scale)


REGULARIZERS: dict[str, type[ChannelRegularizer]] = {cls.name: cls for cls in (Shrink, GroupLasso)}


def build_regularizer(regularizer: str | ChannelRegularizer) -> ChannelRegularizer:
    """A name of ``REGULARIZERS`` or a ``ChannelRegularizer`` instance."""
    if isinstance(regularizer, ChannelRegularizer):
        return regularizer
    allowed = f"one of {tuple(REGULARIZERS)} or a ChannelRegularizer"
    if not isinstance(regularizer, str):
        raise TypeError(f"regularizer must be {allowed}, got {shown(regularizer)}")
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be {allowed}, got {regularizer!r}")
    return REGULARIZERS[regularizer]()
