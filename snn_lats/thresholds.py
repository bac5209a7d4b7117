"""Choosing the soft threshold D: ``suggest_threshold``, and ``relative_weight_scale`` per layer.

A layer's weights are all zero once its threshold reaches its largest |θ|, and weight scales differ a lot
between layers (PyTorch's default init gives a 1568→512 linear layer |w| ≤ 1/√1568 ≈ 0.025), so a D picked for
one network can wipe out a layer of another. ``suggest_threshold`` reads D off the model's own weights.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ._checks import check_choice, check_number, shown
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from .parametrizations import latent_weight

LayerScale = Mapping[str, float] | Callable[[str, nn.Module], float] | None
STATISTICS = ("std", "max")


def resolve_layer_scale(layers: Mapping[str, nn.Module], layer_scale: LayerScale) -> dict[str, float]:
    """``{name: scale}`` for every layer, from a ``{name: scale}`` dict (others 1) or a ``(name, module)``
    callable."""
    if layer_scale is None:
        return dict.fromkeys(layers, 1.0)
    if callable(layer_scale):
        scales = {name: layer_scale(name, module) for name, module in layers.items()}
    elif isinstance(layer_scale, Mapping):
        unknown = sorted(set(layer_scale) - set(layers))
        if unknown:
            raise ValueError(f"layer_scale names layers that are not pruned: {unknown}")
        scales = {name: layer_scale.get(name, 1.0) for name in layers}
    else:
        raise TypeError(f"layer_scale must be a dict, a callable or None, got {shown(layer_scale)}")
    return {name: check_number(f"layer_scale[{name!r}]", value, minimum=0) for name, value in scales.items()}


def _latent(module: nn.Module) -> torch.Tensor:
    """θ: the tensor a soft-threshold pruner thresholds (the plain weight on an unprepared model)."""
    return latent_weight(module).detach()


def _layers(model, layer_types, ignored_layers) -> dict[str, nn.Module]:
    layers = find_prunable_layers(model, layer_types, ignored_layers)
    if not layers:
        raise ValueError("model has no prunable layer left after ignored_layers")
    return layers


@torch.no_grad()
def suggest_threshold(
    model: nn.Module,
    sparsity: float,
    *,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
    layer_scale: LayerScale = None,
) -> float:
    """The global D at which soft-thresholding the current weights (layer l at D·scale_l) zeroes
    ``sparsity`` of the weights of the pruned layers.

    Exact for the weights as they are now: D is the k-th smallest |θ|/scale_l with k = round(sparsity·N), so
    ``SoftThresholdPruner(model, D, "constant", compensate=False, ...)`` with the same ``layer_types``,
    ``ignored_layers`` and ``layer_scale`` prunes exactly k weights (more only where weights tie: warned).
    A gradual schedule trains the weights while d grows, so there it is a starting point for the sweep, not
    the final sparsity. On a prepared model the latent θ is used. A layer with scale 0 keeps its nonzero
    weights.
    """
    sparsity = check_number("sparsity", sparsity, minimum=0, below=1)
    layers = _layers(model, layer_types, ignored_layers)
    scales = resolve_layer_scale(layers, layer_scale)
    # float64: D·scale_l then rounds back onto the very weight that sets D, so the count is exact
    values = []
    for name, module in layers.items():
        magnitude = _latent(module).abs().flatten().double()
        scale = scales[name]
        values.append(magnitude / scale if scale > 0 else torch.where(magnitude > 0, math.inf, 0.0))
    flat = torch.cat(values)
    k = round(sparsity * flat.numel())
    if k == 0:
        return 0.0
    threshold = float(torch.kthvalue(flat.cpu(), k).values)
    reached = int((flat <= threshold).sum())
    if reached != k:
        warnings.warn(f"suggest_threshold: {reached - k} weights tie with the k-th smallest |w|/scale, so "
                      f"D = {threshold:.6g} zeroes {reached / flat.numel():.6f} of the weights instead of "
                      f"{sparsity}", stacklevel=2)
    return threshold


@torch.no_grad()
def relative_weight_scale(
    model: nn.Module,
    statistic: str = "std",
    *,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
) -> dict[str, float]:
    """``{layer: its weight std (or max |w|) / the mean of that statistic over the layers}``, for
    ``layer_scale``.

    With it each layer's threshold follows its own weight scale, d_l = D·scale_l, and D is the threshold of a
    layer of average scale: ``SoftThresholdPruner(model, D, layer_scale=relative_weight_scale(model, ...))``.
    Pass the pruner's ``layer_types`` and ``ignored_layers`` (an ignored layer in the dict is an error there).
    Computed from the weights as they are now (θ on a prepared model): call it before training.
    """
    statistic = check_choice("statistic", statistic, STATISTICS)
    layers = _layers(model, layer_types, ignored_layers)
    stats = {}
    for name, module in layers.items():
        theta = _latent(module).double()
        stats[name] = float(theta.std(correction=0) if statistic == "std" else theta.abs().amax())
    mean = math.fsum(stats.values()) / len(stats)
    if mean <= 0:
        raise ValueError(f"relative_weight_scale: every pruned layer has weight {statistic} 0")
    return {name: value / mean for name, value in stats.items()}
