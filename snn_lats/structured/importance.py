"""OCSPruner's channel saliency (reference B.4): GroupNormV2 with p = 2, FLOPs-cost weighting, per-layer
floor."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_choice
from .groups import ChannelGroup


@torch.no_grad()
def group_saliency(group: ChannelGroup, p: int = 2) -> torch.Tensor:
    """``s_c = (1/|G|)·[Σ_conv/linear ‖W_ℓ[c]‖_p^p / √n_ℓ + Σ_BN |γ_c|^p]`` for every root channel c
    (float64, CPU).

    ``W_ℓ[c]`` is the out-channel row, the in-channel column (all output channels × kernel) or the depthwise
    filter that channel c owns in member ℓ; n_ℓ its number of elements (summed over the slices one root
    channel owns, e.g. after a flatten). BN terms are not normalised. |G| counts the members that contributed.
    No p-th root is taken (the reference comments it out), so for p = 2 this is a squared norm.
    """
    p = check_choice("p", p, (1, 2))
    total = torch.zeros(group.size, dtype=torch.float64)
    contributing = 0
    for member in group.members:
        weight = member.param
        if weight is None:
            continue
        w = weight.detach()
        if member.role == "bn" or w.dim() == 1:
            per_channel, elems = w.abs().pow(p), None
        else:  # one fused reduction over everything but the channel dim, no sliced copies
            dim = member.dim
            others = [d for d in range(w.dim()) if d != dim]
            per_channel = torch.linalg.vector_norm(w, ord=p, dim=others).pow(p)
            elems = torch.full((len(member.idxs),), float(w.numel() // w.shape[dim]), dtype=torch.float64)
        part = per_channel.double().cpu()[member.idxs]
        summed = torch.zeros(group.size, dtype=torch.float64).index_add_(0, member.root, part)
        if elems is not None:
            n = torch.zeros(group.size, dtype=torch.float64).index_add_(0, member.root, elems)
            summed = summed / n.clamp_min(1).sqrt()
        total += summed
        contributing += 1
    return total / max(contributing, 1)


def flops_cost_softmax(saved_per_channel: Sequence[float] | torch.Tensor,
                       temperature: float = 1e6) -> torch.Tensor:
    """π_g = softmax_g(κ_g / temperature), κ_g = MACs saved per channel when a group keeps one channel
    (B.4)."""
    kappa = torch.as_tensor(saved_per_channel, dtype=torch.float64)
    return torch.softmax(kappa / temperature, dim=0)


def channels_to_keep(size: int, layer_prune_limit: float, rate: float = 1.0) -> int:
    """The per-group floor ``C − ⌊C · r_max · (1 − e^{−kC})⌋`` (B.4): at least this many channels stay."""
    return size - int(size * layer_prune_limit * (1.0 - math.exp(-rate * size)))


def protected_channels(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Mask of the ``keep`` highest-scoring channels (ties with the keep-th score are protected too, as in the
    reference's ``imp >= topk(imp, keep).values[-1]``)."""
    if keep <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.topk(scores, k=min(keep, len(scores))).values[-1]
    return scores >= threshold
