"""Find the layers a pruner acts on, honouring ``ignored_layers`` (names or modules)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from torch import nn

from ._checks import check_classes, check_names, check_type

# SpikingJelly's layer.Conv1d/2d/3d and layer.Linear subclass these: isinstance covers them in both versions.
DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

IgnoredLayers = Iterable[str | nn.Module] | None


def find_prunable_layers(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
) -> dict[str, nn.Module]:
    """Return ``{qualified_name: module}`` for every layer of ``layer_types`` that is not ignored.

    ``ignored_layers`` holds qualified module names (``"fc"``, ``"layer1.0.conv1"``) or module objects.
    Ignoring a container (``"layer4"``) ignores everything inside it, as Torch-Pruning does. An entry that is
    neither a prunable layer nor a container holding one (a typo, a neuron or pooling layer next to the
    classifier) is a ``ValueError`` naming the closest prunable names, so it never silently leaves the
    classifier pruned.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    layer_types = check_classes("layer_types", layer_types, nn.Module, "nn.Module")
    ignored_layers = check_names("ignored_layers", ignored_layers, modules=True)

    named = dict(model.named_modules())
    prunable = {n: m for n, m in named.items() if isinstance(m, layer_types) and hasattr(m, "weight")}
    # what an entry may name: a prunable layer or a container holding one ("" is the whole model: not allowed)
    holders = {".".join(n.split(".")[:i]) for n in prunable for i in range(1, n.count(".") + 2)}
    kinds = "/".join(t.__name__ for t in layer_types)
    prunable_ids = {id(m) for m in prunable.values()}

    def did_you_mean(name: str) -> str:
        close = difflib.get_close_matches(name, sorted(holders), n=5)
        return f"; did you mean {close}?" if close else ""

    ignored_ids: set[int] = set()
    for entry in ignored_layers:
        if isinstance(entry, str):
            if entry not in holders:
                what = "names no module of the model"
                if entry in named and entry:
                    what = (f"is a {type(named[entry]).__name__}, neither a prunable layer ({kinds}) nor a "
                            "container holding one")
                raise ValueError(f"ignored_layers: {entry!r} {what}{did_you_mean(entry)}")
            root = named[entry]
        else:  # an nn.Module (check_names allows nothing else)
            if not any(m is entry for m in named.values()):
                raise ValueError(f"ignored_layers: module {type(entry).__name__} is not part of the model")
            if not any(id(sub) in prunable_ids for sub in entry.modules()):
                name = next(n for n, m in named.items() if m is entry)
                raise ValueError(f"ignored_layers: module {name!r} ({type(entry).__name__}) is neither a "
                                 f"prunable layer ({kinds}) nor a container holding one{did_you_mean(name)}")
            root = entry
        ignored_ids.update(id(m) for m in root.modules())

    return {name: module for name, module in prunable.items() if id(module) not in ignored_ids}
