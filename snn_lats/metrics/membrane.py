"""Membrane updates under NeuroBench 2.3's definition, for SpikingJelly neurons.

NeuroBench's ``MembraneUpdates`` compares each neuron layer's membrane before and after every time step: in a
batch, the first step counts every neuron (all are initialised), every later step counts the membranes that
changed (``count_nonzero(v_before − v_after)``), summed over layers and divided by the samples. It reads
snnTorch's ``mem`` only; SpikingJelly keeps the membrane in ``v``, and a multi-step neuron runs all T steps in
one call, so its per-step membranes are ``v_seq`` (``store_v_seq=True``, set here for the measurement and
restored after). :func:`membrane_steps` gives the per-step (before, after) pairs of one call; the NeuroBench
wrapper (:mod:`snn_lats.integrations.neurobench`) feeds the same pairs to NeuroBench's own metric.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..spiking import is_multi_step


def current_v(module: nn.Module) -> torch.Tensor | float | None:
    """A copy of the neuron's membrane ``v`` (a tensor, or the float it holds before its first step)."""
    v = getattr(module, "v", None)
    return v.detach().clone() if isinstance(v, torch.Tensor) else v


def membrane_steps(module: nn.Module, v_before, out: torch.Tensor) -> tuple[list, list] | None:
    """The membranes before and after each time step of one call of ``module``: ([v_0, ...], [v'_0, ...]).

    Multi-step calls read ``v_seq`` (``[T, ...]``, the membrane after each step); None when the neuron has
    none (``store_v_seq`` off or unsupported) or no ``v`` at all."""
    if is_multi_step(module):
        seq = getattr(module, "v_seq", None)
        if not isinstance(seq, torch.Tensor) or seq.shape[0] != out.shape[0]:
            return None
        after = [seq[t].detach() for t in range(seq.shape[0])]
        return [v_before, *after[:-1]], after
    after = getattr(module, "v", None)
    if not isinstance(after, torch.Tensor):
        return None
    return [v_before], [after.detach().clone()]


def neurobench_updates(before: list, after: list, first: bool) -> int:
    """NeuroBench's count for one call's steps: the first step of a batch counts every neuron, the others the
    membranes that changed."""
    updates = 0
    for i, (v0, v1) in enumerate(zip(before, after, strict=True)):
        if first and i == 0:
            updates += v1.numel()
        else:
            v0 = v0 if isinstance(v0, torch.Tensor) else torch.full_like(v1, float(v0))
            updates += int(torch.count_nonzero(v0 - v1))
    return updates


@dataclass
class MembraneCounter:
    module: nn.Module
    updates: int = 0
    supported: bool = True
    first_in_batch: bool = True
    _before: list = field(default_factory=list, repr=False)


@contextlib.contextmanager
def storing_v_seq(modules: Iterable[nn.Module]) -> Iterator[None]:
    """``store_v_seq=True`` on every multi-step neuron of ``modules`` that has it; restored on exit."""
    stored = {}
    for m in modules:
        if is_multi_step(m) and hasattr(m, "store_v_seq"):
            stored[m] = m.store_v_seq
            m.store_v_seq = True
    try:
        yield
    finally:
        for m, value in stored.items():
            m.store_v_seq = value


@contextlib.contextmanager
def recording_membranes(
    counters: dict[str, MembraneCounter],
    guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[None]:
    """Count NeuroBench's membrane updates of every counter's neuron while open (hooks removed and
    ``store_v_seq`` restored on exit). Call :func:`new_membrane_batch` after each batch."""
    hooks = []
    for c in counters.values():
        m = c.module

        def before(module, args, c=c):
            with guard():
                c._before.append(current_v(module))

        def after(module, args, out, c=c):
            with guard():
                steps = membrane_steps(module, c._before.pop() if c._before else None,
                                       out[0] if isinstance(out, (tuple, list)) else out)
                if steps is None:
                    c.supported = False
                    return
                c.updates += neurobench_updates(*steps, first=c.first_in_batch)
                c.first_in_batch = False

        hooks.append(m.register_forward_pre_hook(before))
        hooks.append(m.register_forward_hook(after))
    try:
        with storing_v_seq(c.module for c in counters.values()):
            yield
    finally:
        for h in hooks:
            h.remove()


def new_membrane_batch(counters: dict[str, MembraneCounter]) -> None:
    for c in counters.values():
        c.first_in_batch = True
        c._before.clear()
