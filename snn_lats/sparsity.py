"""Weight sparsity per layer and overall."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from .parametrizations import deployed_weight, latent_weight, pruning_parametrization


@dataclass(frozen=True)
class LayerSparsity:
    zeros: int
    total: int

    @property
    def fraction(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """``layers[name]`` holds zeros/total/fraction; ``sparsity`` is the global fraction over those layers."""

    layers: dict[str, LayerSparsity] = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers.values())

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers.values())

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": {n: {"zeros": s.zeros, "total": s.total, "fraction": s.fraction}
                       for n, s in self.layers.items()},
            "zeros": self.zeros,
            "total": self.total,
            "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        width = max([len(n) for n in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'zeros':>12}  {'total':>12}  sparsity"]
        lines += [f"{n:<{width}}  {s.zeros:>12,}  {s.total:>12,}  {s.fraction:8.4f}"
                  for n, s in self.layers.items()]
        lines.append(f"{'total':<{width}}  {self.zeros:>12,}  {self.total:>12,}  {self.sparsity:8.4f}")
        return "\n".join(lines)


@torch.no_grad()
def sparsity_report(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
    dense_sizes: Mapping[str, int] | None = None,
) -> SparsityReport:
    """Count exact zeros in the effective weights.

    On a model prepared by an snn_lats pruner the report covers exactly the pruned layers, so the global
    figure is over what is pruned (the LATS convention). LTP layers count their hard mask, as evaluation and
    ``squash`` see it. On a plain or squashed model it covers every layer of ``layer_types`` minus
    ``ignored_layers``.

    ``dense_sizes`` (``{layer: weight elements of the dense model}``, see ``weight_sizes``) makes the report
    relative to the dense model a channel-pruned one came from: weights removed with their channels count as
    zeros, and each layer's total is its dense size.
    """
    layers = find_prunable_layers(model, layer_types, ignored_layers)
    pruned = {n: m for n, m in layers.items() if pruning_parametrization(m) is not None}
    return layers_sparsity(pruned or layers, dense_sizes)


@torch.no_grad()
def layers_sparsity(
    layers: Mapping[str, nn.Module], dense_sizes: Mapping[str, int] | None = None
) -> SparsityReport:
    """The report over exactly ``layers`` (``{name: module}``), as ``sparsity_report`` counts them."""
    report = SparsityReport()
    for name, module in layers.items():
        if latent_weight(module).is_meta:
            raise ValueError(f"layer {name!r} has its weights on the meta device: there are no values to "
                             "count zeros in; materialize the model first (model.to_empty(device=...), then "
                             "load its weights)")
        weight = deployed_weight(module)
        zeros, total = int((weight == 0).sum()), weight.numel()
        if dense_sizes is not None:
            if name not in dense_sizes or dense_sizes[name] < total:
                raise ValueError(f"dense_sizes: layer {name!r} has {total} weights, dense_sizes gives "
                                 f"{dense_sizes.get(name)}; pass weight_sizes() of the model it was pruned "
                                 "from")
            zeros, total = zeros + dense_sizes[name] - total, dense_sizes[name]
        report.layers[name] = LayerSparsity(zeros, total)
    return report


def weight_sizes(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
) -> dict[str, int]:
    """``{layer: number of weight elements}`` for ``sparsity_report(..., dense_sizes=...)``."""
    return {name: deployed_weight(m).numel()
            for name, m in find_prunable_layers(model, layer_types, ignored_layers).items()}
