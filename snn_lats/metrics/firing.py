"""Firing rates of spiking neuron layers, reduced on the fly (no spike tensor is kept)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..spiking import NEURON_TYPES, is_multi_step
from .synops import exact_sum

# SpikingJelly's neurons of both namespaces (activation_based, clock_driven) in every supported version;
# snn_lats's fused neurons subclass activation_based's BaseNode, so they count too.
SPIKING_NEURON_TYPES: tuple[type[nn.Module], ...] = NEURON_TYPES


@dataclass
class FiringCounter:
    """Spike and element counts overall, per time step, and optionally per channel."""

    module: nn.Module
    per_channel: bool = False
    spikes_per_step: list[float] = field(default_factory=list)
    elements_per_step: list[int] = field(default_factory=list)
    channel_spikes: torch.Tensor | None = None
    channel_elements: int = 0
    step_in_batch: int = 0  # single-step mode: how many calls since the last reset
    # (output shape, multi-step) -> [calls, spikes]: what the energy models need per call
    groups: dict[tuple, list] = field(default_factory=dict)

    @torch.no_grad()
    def update(self, out: torch.Tensor) -> None:
        multi = is_multi_step(self.module)
        # [T, B, per-sample] (multi-step) or [1, B, per-sample]: sum within each sample first, exactly in
        # float32
        per_sample = out.reshape(out.shape[0] if multi else 1, out.shape[int(multi)], -1)
        per_step = exact_sum(per_sample, 2, bound=1.0).sum(1).tolist()
        if multi:
            steps = range(len(per_step))
            numel = out[0].numel()
            channel_dim = 2
        else:
            steps = [self.step_in_batch]
            self.step_in_batch += 1
            numel = out.numel()
            channel_dim = 1
        group = self.groups.setdefault((tuple(out.shape), multi), [0, 0.0])
        group[0] += 1
        group[1] += sum(per_step)
        for t, spikes in zip(steps, per_step, strict=True):
            while len(self.spikes_per_step) <= t:
                self.spikes_per_step.append(0.0)
                self.elements_per_step.append(0)
            self.spikes_per_step[t] += spikes
            self.elements_per_step[t] += numel
        if self.per_channel and out.dim() > channel_dim:
            spatial = exact_sum(out.flatten(channel_dim + 1), -1, bound=1.0) if out.dim() > channel_dim + 1 \
                else out.double()
            counts = spatial.sum(tuple(range(channel_dim)))
            self.channel_spikes = counts if self.channel_spikes is None else self.channel_spikes + counts
            self.channel_elements += out.numel() // out.shape[channel_dim]

    @property
    def spikes(self) -> float:
        return sum(self.spikes_per_step)

    @property
    def elements(self) -> int:
        return sum(self.elements_per_step)

    def summary(self) -> dict:
        pairs = zip(self.spikes_per_step, self.elements_per_step, strict=True)
        rates = [s / n if n else 0.0 for s, n in pairs]
        result = {
            "firing_rate": self.spikes / self.elements if self.elements else 0.0,
            "firing_rate_per_step": rates,
            "spikes": self.spikes,
            "neuron_updates": self.elements,
        }
        if self.per_channel and self.channel_spikes is not None:
            result["firing_rate_per_channel"] = (self.channel_spikes / self.channel_elements).tolist()
        return result


def firing_counters(model: nn.Module, neuron_types: Sequence[type[nn.Module]] = SPIKING_NEURON_TYPES,
                    per_channel: bool = False) -> dict[str, FiringCounter]:
    """``{name: FiringCounter}`` for every spiking neuron layer of ``model`` (empty counters; see
    :func:`recording`)."""
    return {n: FiringCounter(m, per_channel) for n, m in model.named_modules()
            if isinstance(m, tuple(neuron_types))}


@contextlib.contextmanager
def recording(
    counters: dict[str, FiringCounter],
    guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[dict[str, FiringCounter]]:
    """Fill ``counters`` through forward hooks while the context is open (they keep their counts after it,
    and count on when opened again). Each update runs inside ``guard()``."""

    def hook(counter):
        def update(module, args, out):
            with guard():
                counter.update(out)
        return update

    hooks = [c.module.register_forward_hook(hook(c)) for c in counters.values()]
    try:
        yield counters
    finally:
        for h in hooks:
            h.remove()


@contextlib.contextmanager
def recording_firing(
    model: nn.Module,
    neuron_types: Sequence[type[nn.Module]] = SPIKING_NEURON_TYPES,
    per_channel: bool = False,
    guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[dict[str, FiringCounter]]:
    """``{name: FiringCounter}`` for every spiking neuron layer, filled by forward hooks while the context is
    open. Each update runs inside ``guard()`` (``measure`` passes its op counter's ``paused``).

    Call :func:`new_batch` after each batch (where the state reset goes) so single-step counters restart at
    time step 0.
    """
    with recording(firing_counters(model, neuron_types, per_channel), guard) as counters:
        yield counters


def new_batch(counters: dict[str, FiringCounter]) -> None:
    for c in counters.values():
        c.step_in_batch = 0
