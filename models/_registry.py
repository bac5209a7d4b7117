"""The model registry: builders and what ``experiments.train`` needs to know about each (``ModelInfo``).

Kept apart from ``models/__init__`` so that the model modules import it without an import cycle.
"""
from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from snn_lats._checks import check_int

# The options experiments.train can pass to a builder, each a keyword argument of the builder by the same name
# (train.py's --neuron sets neuron_type, and the data set sets image_size); num_classes and in_channels come
# from the data set.
TRAIN_OPTIONS = ("T", "neuron_type", "cnf", "stem", "width_multiplier", "image_size")
# keyword arguments renamed since, as saved checkpoints may still spell them (model_kwargs)
_RENAMED = {"img_size": "image_size", "neuron": "neuron_type"}


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model declares.

    - ``snn``: a spiking network with ``T`` time steps (direct encoding, logits averaged over T: ``[B,
      classes]``); call ``spikingjelly.activation_based.functional.reset_net`` after every batch.
    - ``classifier``: the module name of its classifier, the default ``--ignored-layers`` of SNNs.
    - ``options``: the keyword arguments of ``TRAIN_OPTIONS`` its builder takes (train.py sets them from its
      flags and the data set; ``create_model(name, neuron_type="lif")`` takes them by these names).
    - ``arch_kwargs``: further architecture keyword arguments, settable with train.py's ``--model-kwargs``.
    - ``family``: where it comes from (e.g. ``spikingjelly.activation_based.model.spikformer``).

    """

    name: str
    snn: bool = False
    classifier: str = "fc"
    options: tuple[str, ...] = ()
    arch_kwargs: tuple[str, ...] = ()
    family: str = ""

    def __post_init__(self):
        unknown = set(self.options) - set(TRAIN_OPTIONS)
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown train options {sorted(unknown)}; valid: "
                             f"{TRAIN_OPTIONS}")
        if self.snn != ("T" in self.options):
            raise ValueError(f"model {self.name!r}: an SNN takes the option 'T' and an ANN does not")

    @property
    def accepted_kwargs(self) -> tuple[str, ...]:
        """Every keyword argument of its builder."""
        return ("num_classes", "in_channels", *self.options, *self.arch_kwargs)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, **info):
    """Register a builder under its function name: ``@register_model`` or ``@register_model(snn=True, ...)``
    with the fields of ``ModelInfo``."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _INFO[fn.__name__] = ModelInfo(fn.__name__, **info)
        _REGISTRY[fn.__name__] = fn
        return fn

    return register if fn is None else register(fn)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, one of {list_models()}, got {name!r}")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid names: {list_models()}")


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def model_info(name: str) -> ModelInfo:
    _check_name(name)
    return _INFO[name]


def create_model(name: str, structure: dict | None = None, **kwargs) -> nn.Module:
    """Build a registered model; ``structure`` (from ``snn_lats.structured.structure_spec``) rebuilds the
    channel widths of a pruned model on it, so the pruned state_dict loads strictly."""
    _check_name(name)
    for old, new in _RENAMED.items():
        if old in kwargs and new not in kwargs:  # a checkpoint's model_kwargs from before the rename
            warnings.warn(f"create_model({name!r}): {old}= is spelled {new}= now", FutureWarning,
                          stacklevel=2)
            kwargs[new] = kwargs.pop(old)
    for key in ("num_classes", "in_channels"):  # every builder takes them; a 0 would build empty layers
        if key in kwargs:
            kwargs[key] = check_int(key, kwargs[key], minimum=1)
            if kwargs[key] > torch.iinfo(torch.int64).max:  # torch sizes are int64 (else a raw TypeError)
                raise ValueError(f"{key} must be an int >= 1 that fits in int64, got {kwargs[key]!r}")
    model = _REGISTRY[name](**kwargs)
    if structure is not None:
        from snn_lats.structured.spec import apply_structure

        apply_structure(model, structure)
    return model
