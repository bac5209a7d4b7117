"""A small timm-style model registry: ``create_model(name, **kw)`` and ``list_models()``."""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def create_model(name: str, structure: dict | None = None, **kwargs) -> nn.Module:
    """Build a registered model; ``structure`` (from ``snn_lats.structured.structure_spec``) rebuilds the
    channel widths of a pruned model on it, so the pruned state_dict loads strictly."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid names: {list_models()}")
    model = _REGISTRY[name](**kwargs)
    if structure is not None:
        from snn_lats.structured.spec import apply_structure

        apply_structure(model, structure)
    return model


from . import mobilenet_v1, resnet, sew_resnet  # noqa: E402,F401  (registers the builders)
