"""SpikingJelly neurons recognised by what they are, in either API namespace and every supported version.

``activation_based`` (SpikingJelly 0.0.0.0.14 and 2.x) marks a neuron's step mode with ``step_mode``;
``clock_driven`` (0.0.0.0.12–0.0.0.0.14, the API the official Spikformer, Spike-Driven Transformer and
QKFormer repositories are written on) has separate ``MultiStep*Node`` classes and no ``step_mode``. Both keep
their state in ``MemoryModule``s with a ``reset()``. Every entry point of snn_lats (``measure``, the CLIs, the
fused-neuron swap, OCS tracing, train.py, the Lightning callback) asks this module, never a class path of one
namespace.

Which namespaces exist is found by importing them (a feature check, not a version check).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator

from torch import nn


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:  # 2.x removed clock_driven
        return None


_ab_neuron = importlib.import_module("spikingjelly.activation_based.neuron")
_ab_base = importlib.import_module("spikingjelly.activation_based.base")
_cd_neuron = _optional("spikingjelly.clock_driven.neuron")
_cd_base = _optional("spikingjelly.clock_driven.base")

#: The neuron base classes of every namespace this SpikingJelly has (snn_lats's fused nodes subclass the 1st).
NEURON_TYPES: tuple[type[nn.Module], ...] = (_ab_neuron.BaseNode,) + (
    (_cd_neuron.BaseNode,) if _cd_neuron is not None else ())
#: Stateful modules (neurons, stateful dropout, synapse filters, ...): what ``reset_state`` resets.
MEMORY_TYPES: tuple[type[nn.Module], ...] = (_ab_base.MemoryModule,) + (
    (_cd_base.MemoryModule,) if _cd_base is not None else ())
#: ``clock_driven``'s multi-step neurons: input ``[T, ...]``, one class per model (its API has no step_mode).
CLOCK_DRIVEN_MULTI_STEP: tuple[type[nn.Module], ...] = tuple(
    cls for name, cls in vars(_cd_neuron).items()
    if name.startswith("MultiStep") and isinstance(cls, type) and issubclass(cls, _cd_neuron.BaseNode)
) if _cd_neuron is not None else ()
HAS_CLOCK_DRIVEN = _cd_neuron is not None


def is_neuron(module: nn.Module) -> bool:
    """A SpikingJelly spiking neuron of either namespace (snn_lats's fused nodes included)."""
    return isinstance(module, NEURON_TYPES)


def is_clock_driven(module: nn.Module) -> bool:
    return _cd_base is not None and isinstance(module, _cd_base.MemoryModule)


def is_multi_step(module: nn.Module) -> bool:
    """Takes ``[T, ...]`` sequences: ``step_mode == "m"`` (activation_based) or a ``clock_driven``
    ``MultiStep*`` class."""
    return getattr(module, "step_mode", None) == "m" or isinstance(module, CLOCK_DRIVEN_MULTI_STEP)


def neurons(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of every spiking neuron in ``model``."""
    return {name: m for name, m in model.named_modules() if is_neuron(m)}


def is_spiking(model: nn.Module) -> bool:
    return any(is_neuron(m) for m in model.modules())


def has_state(model: nn.Module) -> bool:
    """Whether any module keeps state between forward calls (a SpikingJelly ``MemoryModule`` of either
    namespace)."""
    return any(isinstance(m, MEMORY_TYPES) for m in model.modules())


def reset_state(model: nn.Module) -> None:
    """Reset every stateful module through its own ``reset()``, whatever SpikingJelly namespace it comes from.

    This is what each version's ``functional.reset_net`` does for its own modules, without its per-module log
    lines (0.0.0.0.14's activation_based ``reset_net`` logs four lines for every ``clock_driven`` module) and
    without 2.x's cache of resettable modules (stale after a module swap). As ``reset_net`` does, a module
    that is no ``MemoryModule`` but has a ``reset()`` is reset too; those are named in one warning.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got a {type(model).__name__}")
    others = []
    for name, m in model.named_modules():
        if isinstance(m, MEMORY_TYPES):
            m.reset()
        elif callable(getattr(m, "reset", None)):
            m.reset()
            others.append(name or type(m).__name__)
    if others:
        warnings.warn(f"reset() was called on modules that are not SpikingJelly MemoryModules, as "
                      f"functional.reset_net does: {', '.join(others[:5])}"
                      + (f" and {len(others) - 5} more" if len(others) > 5 else ""), stacklevel=2)


class _Collect(logging.Filter):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "spikingjelly" in record.pathname.replace("\\", "/") and record.levelno <= logging.WARNING:
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def spikingjelly_logs_summarised(during: str) -> Iterator[None]:
    """Inside snn_lats's own calls: SpikingJelly's log lines (0.0.0.0.14 logs a warning for every module that
    ``set_step_mode``/``reset_net`` visits and does not own) are held back and replaced by one warning that
    counts them and quotes the first. Logging outside the block is untouched."""
    collect = _Collect()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                       if n.startswith("spikingjelly")]
    handlers = [h for lg in loggers for h in lg.handlers]
    for target in (*loggers, *handlers):
        target.addFilter(collect)
    try:
        yield
    finally:
        for target in (*loggers, *handlers):
            target.removeFilter(collect)
        if collect.records:
            first = collect.records[0].getMessage().splitlines()[0][:160]
            warnings.warn(f"SpikingJelly logged {len(collect.records)} message(s) during {during} (held "
                          f"back; the first: {first!r})", stacklevel=3)
