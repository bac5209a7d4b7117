"""What every weight pruner here shares: layer discovery, parametrization, squash and state checks."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from .parametrizations import pruning_parametrization
from .sparsity import SparsityReport, sparsity_report

class BasePruner:
    """Prepares ``model`` by registering one parametrization per prunable layer's ``weight``.

    Order of use (as ``torch.ao.pruning``): build the pruner, then move to the device / wrap in DDP; the optimizer
    may be built before or after, since the weight ``Parameter`` objects are kept. Call ``step()`` after
    ``optimizer.step()`` and before ``lr_scheduler.step()``.
    """

    def __init__(
        self,
        model: nn.Module,
        ignored_layers: IgnoredLayers = None,
        layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ):
        self.model = model
        self.layers = find_prunable_layers(model, layer_types, ignored_layers)
        if not self.layers:
            names = ", ".join(t.__name__ for t in layer_types)
            raise ValueError(f"model has no prunable layer: no {names} left after ignored_layers")
        for name, module in self.layers.items():
            if pruning_parametrization(module) is not None:
                raise ValueError(f"layer {name!r} is already prepared by an snn_lats pruner; squash it first")
        self.step_count = 0
        self.squashed = False

    def _register(self, make: Callable[[str, nn.Module], nn.Module]) -> None:
        for name, module in self.layers.items():
            parametrize.register_parametrization(module, "weight", make(name, module))

    def parametrizations(self) -> Iterator[tuple[str, nn.Module, nn.Module]]:
        """``(name, module, parametrization)`` for every pruned layer."""
        self._check_not_squashed("parametrizations()")
        for name, module in self.layers.items():
            yield name, module, pruning_parametrization(module)

    def weights(self) -> list[nn.Parameter]:
        """The latent parameters θ the optimizer updates (``parametrizations.weight.original``)."""
        self._check_not_squashed("weights()")
        return [module.parametrizations.weight.original for module in self.layers.values()]

    def sparsity_report(self) -> SparsityReport:
        """Per-layer and global sparsity of the pruned layers (of every prunable layer once squashed)."""
        return sparsity_report(self.model)

    def _check_not_squashed(self, what: str) -> None:
        if self.squashed:
            raise RuntimeError(f"{what} called after squash(): the pruner no longer controls the model")

    @torch.no_grad()
    def squash(self) -> nn.Module:
        """Bake the current pruned weights into plain parameters (exact zeros) and drop the parametrizations.

        Any other parametrization chained on the same weight is baked in too.

        The ``Parameter`` objects are kept, so the optimizer stays valid for dense fine-tuning. The model's
        ``state_dict`` then has the plain keys of an untouched model and loads into one strictly.
        """
        self._check_not_squashed("squash()")
        for module in self.layers.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self.squashed = True
        return self.model

    def _base_state(self) -> dict[str, Any]:
        return {"step": self.step_count, "squashed": self.squashed, "layers": list(self.layers)}

    def _load_base_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state).__name__}")
        missing = {"step", "squashed", "layers"} - state.keys()
        if missing:
            raise ValueError(f"state_dict is missing keys {sorted(missing)}")
        if list(state["layers"]) != list(self.layers):
            saved, now = set(state["layers"]), set(self.layers)
            raise ValueError(
                "state_dict was saved for different layers: "
                f"only in the checkpoint {sorted(saved - now)}, only in this pruner {sorted(now - saved)}"
            )
        if state["squashed"] and not self.squashed:
            raise ValueError("state_dict comes from a squashed pruner; load the squashed model instead")
        self.step_count = int(state["step"])
