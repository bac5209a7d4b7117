"""Channel structure specs: record the widths of a pruned model, rebuild them on a freshly built dense one.

A spec is plain JSON-serialisable data, stored in checkpoints next to the state_dict::

    {"format": "snn_lats.structure", "version": 1,
     "layers": {"layer1.0.conv1": {"kind": "conv", "type": "Conv2d", "in_channels": 40, "out_channels": 23,
                                   "groups": 1, "kernel_size": [3, 3]},
                "layer1.0.bn1": {"kind": "batchnorm", "type": "BatchNorm2d", "num_features": 23},
                "fc": {"kind": "linear", "type": "Linear", "in_features": 301, "out_features": 1000}, ...}}

``apply_structure(model, spec)`` slices every listed layer's parameters and buffers to the recorded widths
(the values are placeholders until a state_dict is loaded), so
``model.load_state_dict(pruned_state, strict=True)`` works. Every conv, linear and batch-norm layer of the
model must be listed, with the same kind and kernel, and no wider than the model: anything else is a
``ValueError`` naming the layers and shapes, and leaves the model untouched.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from .flops import MAC_LAYER_TYPES, reset_spiking_state

SPEC_FORMAT = "snn_lats.structure"
SPEC_VERSION = 1
_BN = nn.modules.batchnorm._BatchNorm


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, MAC_LAYER_TYPES):
        return "conv"
    if isinstance(module, _BN):
        return "batchnorm"
    return None


def _torch_type(module: nn.Module) -> str:
    # the torch.nn class, also for SpikingJelly's subclasses and under torch.nn.utils.parametrize
    for cls in type_before_parametrizations(module).__mro__:
        if cls.__module__.startswith("torch.nn"):
            return cls.__name__
    return type(module).__name__


def _entry(module: nn.Module) -> dict:
    kind = _kind(module)
    entry = {"kind": kind, "type": _torch_type(module)}
    if kind == "linear":
        entry.update(in_features=int(module.in_features), out_features=int(module.out_features))
    elif kind == "conv":
        entry.update(in_channels=int(module.in_channels), out_channels=int(module.out_channels),
                     groups=int(module.groups), kernel_size=[int(k) for k in module.kernel_size])
    else:
        entry.update(num_features=int(module.num_features))
    return entry


def structure_spec(model: nn.Module) -> dict:
    """The channel widths of every conv, linear and batch-norm layer of ``model`` (JSON-serialisable)."""
    layers = {name: _entry(m) for name, m in model.named_modules() if _kind(m) is not None}
    return {"format": SPEC_FORMAT, "version": SPEC_VERSION, "layers": layers}


def _describe(entry: Mapping) -> str:
    if entry.get("kind") == "linear":
        return (f"{entry.get('type')}(in_features={entry.get('in_features')}, "
                f"out_features={entry.get('out_features')})")
    if entry.get("kind") == "conv":
        return (f"{entry.get('type')}(in_channels={entry.get('in_channels')}, "
                f"out_channels={entry.get('out_channels')}"
                f", groups={entry.get('groups')}, kernel_size={tuple(entry.get('kernel_size') or ())})")
    return f"{entry.get('type')}(num_features={entry.get('num_features')})"


_WIDTHS = {"linear": ("in_features", "out_features"), "conv": ("in_channels", "out_channels", "groups"),
           "batchnorm": ("num_features",)}


def _check(name: str, module: nn.Module, entry: object) -> str | None:
    """Why ``entry`` cannot be applied to ``module`` (None if it can)."""
    have = _entry(module)
    if not isinstance(entry, Mapping) or entry.get("kind") != have["kind"]:
        return f"{name}: the model has {_describe(have)}, the spec {entry!r}"
    try:
        widths = {k: int(entry[k]) for k in _WIDTHS[have["kind"]]}
    except (KeyError, TypeError, ValueError):
        return f"{name}: spec entry {dict(entry)!r} lacks integer {list(_WIDTHS[have['kind']])}"
    bad = (any(w < 1 or w > have[k] for k, w in widths.items())
           or (have["kind"] == "conv" and list(entry.get("kernel_size") or []) != have["kernel_size"]))
    if have["kind"] == "conv" and not bad:
        # Only whole groups: a depthwise conv stays depthwise, an ordinary one keeps groups == 1.
        depthwise = have["groups"] > 1 and have["groups"] == have["in_channels"] == have["out_channels"]
        if depthwise:
            bad = not (widths["groups"] == widths["in_channels"] == widths["out_channels"])
        else:
            bad = widths["groups"] != have["groups"] or widths["in_channels"] % widths["groups"] != 0
    if bad:
        return f"{name}: the model has {_describe(have)}, the spec asks for {_describe(entry)}"
    return None


def apply_structure(model: nn.Module, spec: Mapping) -> nn.Module:
    """Shrink ``model``'s layers in place to the widths in ``spec`` (see module doc) and return it."""
    layers_ok = isinstance(spec, Mapping) and isinstance(spec.get("layers"), Mapping)
    if not layers_ok or spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"apply_structure: spec must be a dict made by structure_spec "
                         f"(format {SPEC_FORMAT!r} with a 'layers' mapping), got {type(spec).__name__}")
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"apply_structure: spec version {spec.get('version')!r} is not supported "
                         f"(this library writes version {SPEC_VERSION})")
    named = dict(model.named_modules())
    layers = {name: m for name, m in named.items() if _kind(m) is not None}
    problems = []
    for name in spec["layers"]:
        if name not in layers:
            close = difflib.get_close_matches(str(name), list(layers), n=3)
            hint = f" (did you mean {close}?)" if close else ""
            what = f"is a {type(named[name]).__name__}" if name in named else "does not exist"
            problems.append(f"{name}: the spec lists it but in the model it {what}{hint}")
    for name, module in layers.items():
        if name not in spec["layers"]:
            problems.append(f"{name}: the model has {_describe(_entry(module))}, "
                            "the spec has no entry for it")
            continue
        problem = _check(name, module, spec["layers"][name])
        if problem:
            problems.append(problem)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"apply_structure: the spec does not match {type(model).__name__} "
                         f"({len(problems)} layer(s)): {shown}")
    with torch.no_grad():
        for name, module in layers.items():
            _shrink(module, spec["layers"][name])
    reset_spiking_state(model)  # neuron state sized for the old widths
    return model


def _slice_param(module: nn.Module, attr: str, index: tuple[slice, ...]) -> None:
    old = getattr(module, attr)
    if old is None:
        return
    new = old.detach()[index].clone()
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(module, attr, new)  # a registered buffer stays a buffer


def _shrink(module: nn.Module, entry: Mapping) -> None:
    kind = entry["kind"]
    if kind == "linear":
        out, inp = int(entry["out_features"]), int(entry["in_features"])
        _slice_param(module, "weight", (slice(0, out), slice(0, inp)))
        _slice_param(module, "bias", (slice(0, out),))
        module.out_features, module.in_features = out, inp
    elif kind == "conv":
        out, inp, groups = int(entry["out_channels"]), int(entry["in_channels"]), int(entry["groups"])
        _slice_param(module, "weight", (slice(0, out), slice(0, inp // groups)))
        _slice_param(module, "bias", (slice(0, out),))
        module.out_channels, module.in_channels, module.groups = out, inp, groups
    else:
        n = int(entry["num_features"])
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(module, attr, (slice(0, n),))
        module.num_features = n
