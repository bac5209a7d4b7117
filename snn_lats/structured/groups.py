"""Coupled channel groups from torch-pruning's ``DependencyGraph``, for CNNs and SpikingJelly SNNs.

SpikingJelly models are traced in single-step mode after ``functional.reset_net`` and returned to the step
modes they had (reference D.3: tracing in multi-step mode mis-tracks channels through SpikingJelly's
time-flattening reshapes, and a forward that left membrane state breaks the trace).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ..layers import find_prunable_layers
from .flops import (
    MAC_LAYER_TYPES,
    ForwardFn,
    LayerGeometry,
    LayerTrace,
    default_forward,
    describe_layer,
    evaluation_pass,
    layer_geometry,
)

ROLES = ("out", "in", "depthwise", "bn")  # which slice of a member's weight belongs to a channel
_IGNORABLE_TYPES = (*MAC_LAYER_TYPES, nn.modules.batchnorm._BatchNorm)


class GraphTraceError(RuntimeError):
    """torch-pruning could not build a usable dependency graph for the model."""


@dataclass
class GroupMember:
    """One layer of a group: ``idxs`` are its channel indices along ``dim``, ``root`` the group channel of each."""

    name: str
    module: nn.Module
    role: str
    idxs: torch.Tensor
    root: torch.Tensor

    @property
    def dim(self) -> int:
        return 1 if self.role == "in" else 0

    @property
    def param(self) -> torch.Tensor | None:
        """The tensor a channel's saliency and regularisation act on: the weight (BN: γ); None if absent."""
        return getattr(self.module, "weight", None)


@dataclass
class ChannelGroup:
    """Channels coupled through the graph: pruning root channel ``c`` removes ``c`` from every member."""

    key: str  # the root layer's qualified name
    root: nn.Module
    handler: Callable
    size: int
    members: list[GroupMember] = field(default_factory=list)

    def couplings(self) -> list[tuple[str, int, torch.Tensor]]:
        """``(layer, dim, channels removed per root channel)`` for every conv/linear member (for MAC counts)."""
        out = []
        for m in self.members:
            if m.role in ("out", "in", "depthwise"):
                out.append((m.name, m.dim, torch.bincount(m.root, minlength=self.size)))
        return out


@dataclass
class GraphInfo:
    graph: tp.DependencyGraph
    groups: list[ChannelGroup]
    geometry: dict[str, LayerGeometry]
    classifier: str | None
    ignored: list[str]


def resolve_ignored_layers(model: nn.Module, ignored_layers: Iterable[str | nn.Module] | None) -> list[str]:
    """Qualified names of the conv/linear/BN layers that ``ignored_layers`` covers (names, modules, containers).

    Unknown names are a ``ValueError`` with a did-you-mean hint (``snn_lats.layers.find_prunable_layers``).
    """
    everything = find_prunable_layers(model, layer_types=_IGNORABLE_TYPES)
    kept = find_prunable_layers(model, layer_types=_IGNORABLE_TYPES, ignored_layers=ignored_layers)
    return [name for name in everything if name not in kept]


def step_mode_modules(model: nn.Module) -> dict[nn.Module, str]:
    return {m: m.step_mode for m in model.modules() if isinstance(getattr(m, "step_mode", None), str)}


def is_multi_step(model: nn.Module) -> bool:
    return any(mode == "m" for mode in step_mode_modules(model).values())


@contextmanager
def single_step_mode(model: nn.Module):
    """Every SpikingJelly module in single-step mode, state reset; each module's own mode restored after."""
    modes = step_mode_modules(model)
    if not modes:
        yield
        return
    from spikingjelly.activation_based import functional

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        functional.set_step_mode(model, "s")
    functional.reset_net(model)
    try:
        yield
    finally:
        functional.reset_net(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for module, mode in modes.items():
                module.step_mode = mode


def spikingjelly_zoo_forward(model: nn.Module) -> ForwardFn | None:
    """For a subclass of a SpikingJelly model-zoo class that overrides ``forward`` (as ``models.sew_resnet``
    does, to repeat input over T and average the output), the zoo class's own single-step forward."""
    mro = type(model).__mro__
    if mro[0].__module__.startswith("spikingjelly."):
        return None
    for cls in mro[1:]:
        if cls.__module__.startswith("spikingjelly.") and "forward" in cls.__dict__:
            return lambda m, x, _cls=cls: _cls.forward(m, x)
    return None


def single_step_inputs(example_inputs: object) -> object:
    """One time step of a multi-step input: ``x[0]`` of a 5-D ``[T, B, C, H, W]`` tensor, else the input."""
    if isinstance(example_inputs, torch.Tensor) and example_inputs.dim() == 5:
        return example_inputs[0]
    return example_inputs


def build_channel_groups(
    model: nn.Module,
    example_inputs: object,
    *,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    ignore_classifier: bool = True,
    forward_fn: ForwardFn | None = None,
    trace_forward_fn: ForwardFn | None = None,
    trace_inputs: object = None,
) -> GraphInfo:
    """Trace ``model`` with torch-pruning and return its prunable channel groups.

    ``forward_fn`` runs ``example_inputs`` the normal way (MAC geometry; the last conv/linear called is the
    classifier, ignored when ``ignore_classifier``). The graph is traced with ``trace_forward_fn`` on
    ``trace_inputs``; for SpikingJelly models these default to the single-step forward (see
    ``spikingjelly_zoo_forward``) on one time step of ``example_inputs``.
    """
    geometry, order, _ = layer_geometry(model, example_inputs, forward_fn)
    if not geometry:
        raise GraphTraceError(f"{type(model).__name__} ran no conv or linear layer on example_inputs; "
                              "nothing to prune")
    ignored = resolve_ignored_layers(model, ignored_layers)
    classifier = order[-1] if ignore_classifier else None
    if classifier is not None and classifier not in ignored:
        ignored.append(classifier)

    snn = bool(step_mode_modules(model))
    if trace_forward_fn is None:
        trace_forward_fn = (spikingjelly_zoo_forward(model) if snn else None) or forward_fn or default_forward
    if trace_inputs is None:
        trace_inputs = single_step_inputs(example_inputs) if snn and is_multi_step(model) else example_inputs

    named = dict(model.named_modules())
    names = {m: n for n, m in named.items()}
    graph = tp.DependencyGraph()
    trace = LayerTrace(model)
    try:
        with single_step_mode(model), evaluation_pass(model), torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning's notes on unwrapped parameters (e.g. PLIF's w)
            try:
                graph.build_dependency(model, trace_inputs, forward_fn=trace_forward_fn, verbose=False)
            except Exception as exc:
                where = describe_layer(model, trace.innermost())
                raise GraphTraceError(f"torch-pruning could not trace {type(model).__name__}: the traced forward "
                                      f"failed in {where}: {exc}") from exc
    finally:
        trace.remove()

    untraced = [n for n in geometry if named[n] not in graph.module2node]
    if untraced:
        shown = ", ".join(f"{describe_layer(model, n)}" for n in untraced[:5])
        raise GraphTraceError(
            f"torch-pruning could not trace {len(untraced)} layer(s) that the forward runs: {shown}. Their outputs "
            "do not reach the model output through autograd (detach, no_grad, .item()/numpy or integer ops in "
            "the forward), so their channel couplings are unknown; keep the forward differentiable from input "
            "to output")

    ignored_modules = [named[n] for n in ignored]
    groups = []
    for tp_group in graph.get_all_groups(ignored_layers=ignored_modules, root_module_types=MAC_LAYER_TYPES):
        root_dep = tp_group[0].dep
        root = root_dep.target.module
        group = ChannelGroup(key=names[root], root=root, handler=root_dep.handler, size=len(tp_group[0].idxs))
        for item in tp_group:
            module = item.dep.target.module
            role = _role(graph, module, item.dep.handler)
            if role is None or module not in names:
                continue
            group.members.append(GroupMember(
                name=names[module], module=module, role=role,
                idxs=torch.as_tensor(list(item.idxs), dtype=torch.long),
                root=torch.as_tensor(list(item.root_idxs), dtype=torch.long),
            ))
        groups.append(group)
    return GraphInfo(graph=graph, groups=groups, geometry=geometry, classifier=classifier, ignored=ignored)


def _role(graph: tp.DependencyGraph, module: nn.Module, handler: Callable) -> str | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn" if module.affine else None
    if isinstance(module, nn.Linear):
        return "out" if graph.is_out_channel_pruning_fn(handler) else "in"
    if isinstance(module, MAC_LAYER_TYPES):
        if getattr(module, "transposed", False):
            return None
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return "depthwise"
        if graph.is_out_channel_pruning_fn(handler):
            return "out"
        return "in" if module.groups == 1 else None  # grouped (non-depthwise) inputs: no per-channel slice
    return None
