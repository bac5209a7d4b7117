"""``MagnitudePruner``: gradual magnitude pruning (GMP, Zhu & Gupta 2017), the baseline every comparison
needs."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._checks import check_bool, check_int, check_number, check_type
from .base import BasePruner
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers
from .parametrizations import BinaryMask


def _weights(module: nn.Module) -> int:
    """How many weights the layer has (its latent θ while prepared)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original.numel()
    return module.weight.numel()


class MagnitudePruner(BasePruner):
    """Masks the smallest-magnitude weights, with the cubic sparsity ramp of Zhu & Gupta:

        s_t = s_f + (s_i − s_f)·(1 − (t − t_0) / (total_steps − t_0))³,

    updating the masks every ``frequency`` optimizer steps from ``start_step`` (t_0) to ``total_steps``.
    Masked weights get zero gradient and stay pruned. ``global_pruning=False`` gives every layer the same
    sparsity (Zhu & Gupta's setting); ``True`` ranks all pruned weights together.

    Args:
        pruning_ratio: the final sparsity s_f of the pruned layers.
        total_steps: the step at which s_f is reached.
        initial_ratio: s_i, the sparsity applied at ``start_step``.
    """

    def __init__(
        self,
        model: nn.Module,
        pruning_ratio: float,
        total_steps: int,
        *,
        start_step: int = 0,
        initial_ratio: float = 0.0,
        frequency: int = 100,
        global_pruning: bool = False,
        ignored_layers: IgnoredLayers = None,
        layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ):
        self.pruning_ratio = check_number("pruning_ratio", pruning_ratio, minimum=0, below=1)
        self.initial_ratio = check_number("initial_ratio", initial_ratio, minimum=0, below=1)
        if self.initial_ratio > self.pruning_ratio:
            raise ValueError(f"initial_ratio must be <= pruning_ratio={pruning_ratio!r}, "
                             f"got {initial_ratio!r}")
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.start_step = check_int("start_step", start_step, minimum=0)
        if self.start_step >= self.total_steps:
            raise ValueError(f"start_step must be < total_steps={self.total_steps}, got {start_step!r}")
        self.frequency = check_int("frequency", frequency, minimum=1)
        self.global_pruning = check_bool("global_pruning", global_pruning)

        super().__init__(model, ignored_layers, layer_types)
        self._register(lambda name, module: BinaryMask(module.weight.shape).to(module.weight.device))
        # how many weights each mask prunes, as this pruner last wrote them
        self._mask_zeros: dict[str, int] | None = dict.fromkeys(self.layers, 0)
        if self.start_step == 0:
            self._update_masks(self.target_sparsity(0))

    def target_sparsity(self, step: int) -> float:
        """s_t of the cubic ramp (0 before ``start_step``)."""
        if step < self.start_step:
            return 0.0
        x = min((step - self.start_step) / (self.total_steps - self.start_step), 1.0)
        return self.pruning_ratio + (self.initial_ratio - self.pruning_ratio) * (1 - x) ** 3

    def log_dict(self) -> dict[str, float | None]:
        """The sparsity the ramp asks for at the current step."""
        return {"target_sparsity": self.target_sparsity(self.step_count)}

    @torch.no_grad()
    def _update_masks(self, sparsity: float) -> None:
        entries = list(self.parametrizations())
        # Rank the masked weights, so pruned weights (score 0) stay pruned as sparsity grows.
        scores = [(module.parametrizations.weight.original * p.mask).abs().flatten()
                  for _, module, p in entries]
        if self.global_pruning:
            flat = torch.cat(scores)
            keep = torch.ones_like(flat, dtype=torch.bool)
            k = round(sparsity * flat.numel())
            if k:
                keep[torch.topk(flat, k, largest=False).indices] = False
            for (_, _, p), piece in zip(entries, keep.split([s.numel() for s in scores]),
                                          strict=True):
                p.mask.copy_(piece.view_as(p.mask))
        else:
            for (_, _, p), score in zip(entries, scores, strict=True):
                keep = torch.ones_like(score, dtype=torch.bool)
                k = round(sparsity * score.numel())
                if k:
                    keep[torch.topk(score, k, largest=False).indices] = False
                p.mask.copy_(keep.view_as(p.mask))
        self._mask_zeros = self._model_mask_zeros()
        for p in (p for _, _, p in entries):
            p.loaded = False

    def _model_mask_zeros(self) -> dict[str, int]:
        counts = torch.stack([(~p.mask).sum() for _, _, p in self.parametrizations()]).tolist()  # one sync
        return dict(zip(self.layers, counts, strict=True))

    def _check_model_state(self) -> None:
        # Only after the model's load_state_dict touched a mask (a flag, no sync otherwise): compare the
        # pruned counts with the ones this pruner wrote, so a stale step count cannot regrow pruned weights.
        entries = list(self.parametrizations())
        if self._mask_zeros is None or not any(p.loaded for _, _, p in entries):
            return
        now = self._model_mask_zeros()
        for name in self.layers:
            if now[name] != self._mask_zeros[name]:
                raise self._stale(f"the model's mask for {name!r} prunes {now[name]} weights, this pruner "
                                  f"(at step {self.step_count}) last pruned {self._mask_zeros[name]}")
        for _, _, p in entries:
            p.loaded = False

    def _all_zero_layers(self) -> dict[str, str]:
        sizes = {name: m.parametrizations.weight.original.numel() for name, m in self.layers.items()}
        zeros = self._mask_zeros or self._model_mask_zeros()
        return {name: f"its mask prunes all {sizes[name]} weights (target sparsity "
                      f"{self.target_sparsity(self.step_count):.4g})"
                for name, count in zeros.items() if count == sizes[name]}

    def _step(self) -> None:
        """Count one optimizer step and update the masks when the ramp says so."""
        self.step_count += 1
        t = self.step_count
        due = (t - self.start_step) % self.frequency == 0 or t == self.total_steps
        if self.start_step <= t <= self.total_steps and due:
            self._update_masks(self.target_sparsity(t))

    def state_dict(self) -> dict[str, Any]:
        """The step counter and how many weights each mask prunes (the masks are buffers in the model's
        ``state_dict``; the counts let ``step()`` tell a stale model load)."""
        return {**self._base_state(), "mask_zeros": self._mask_zeros}

    def _settings(self) -> dict[str, Any]:
        return {"pruning_ratio": self.pruning_ratio, "initial_ratio": self.initial_ratio,
                "total_steps": self.total_steps, "start_step": self.start_step, "frequency": self.frequency,
                "global_pruning": self.global_pruning}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state saved with other settings is refused, and every entry is
        checked before the first assignment, so a refused state changes nothing."""
        self._check_base_state(state)
        zeros = check_type("state_dict['mask_zeros']", state.get("mask_zeros"), Mapping,
                           "a dict {layer: pruned weights}", optional=True)
        if zeros is not None and set(self.layers) - set(zeros):
            raise ValueError(f"state_dict['mask_zeros'] has no count for layers "
                             f"{sorted(set(self.layers) - set(zeros))[:5]}")
        if zeros is not None:
            zeros = {name: check_int(f"state_dict['mask_zeros'][{name!r}]", zeros[name], minimum=0,
                                     maximum=_weights(module)) for name, module in self.layers.items()}
        self._load_base_state(state)
        if zeros is None:
            warnings.warn("MagnitudePruner.load_state_dict: this state has no mask counts (saved before they "
                          "were recorded), so step() cannot check that the model's masks belong to it",
                          stacklevel=2)
            self._mask_zeros = None
        else:
            self._mask_zeros = zeros
