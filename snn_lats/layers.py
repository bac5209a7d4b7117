"""Find the layers a pruner acts on, honouring ``ignored_layers`` (names or modules)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from torch import nn

# SpikingJelly's layer.Conv2d / layer.Linear subclass these, so isinstance covers them in both versions.
DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

IgnoredLayers = Iterable[str | nn.Module] | None


def find_prunable_layers(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
) -> dict[str, nn.Module]:
    """Return ``{qualified_name: module}`` for every layer of ``layer_types`` that is not ignored.

    ``ignored_layers`` holds qualified module names (``"fc"``, ``"layer1.0.conv1"``) or module objects. Ignoring
    a container (``"layer4"``) ignores everything inside it, as Torch-Pruning does. A name or module that is not
    part of ``model`` is an error, so a typo never silently prunes the classifier.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layer_types = tuple(layer_types)
    if not layer_types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in layer_types):
        raise TypeError(f"layer_types must be a non-empty sequence of nn.Module classes, got {layer_types!r}")

    named = dict(model.named_modules())
    ignored_ids: set[int] = set()
    for entry in ignored_layers or ():
        if isinstance(entry, str):
            if entry not in named or entry == "":
                close = difflib.get_close_matches(entry, [n for n in named if n], n=5)
                hint = f"; did you mean {close}?" if close else ""
                raise ValueError(f"ignored_layers: no module named {entry!r} in the model{hint}")
            root = named[entry]
        elif isinstance(entry, nn.Module):
            if not any(m is entry for m in named.values()):
                raise ValueError(f"ignored_layers: module {type(entry).__name__} is not part of the model")
            root = entry
        else:
            raise TypeError(f"ignored_layers entries must be str or nn.Module, got {type(entry).__name__}")
        ignored_ids.update(id(m) for m in root.modules())

    return {
        name: module
        for name, module in named.items()
        if isinstance(module, layer_types) and id(module) not in ignored_ids and hasattr(module, "weight")
    }

