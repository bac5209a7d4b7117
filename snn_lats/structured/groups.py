"""Coupled channel groups from torch-pruning's ``DependencyGraph``, for CNNs and SpikingJelly SNNs.

Multi-step SpikingJelly models are traced in their own step mode on one time step (T=1), after
``functional.reset_net`` (reference D.3: more than one step mis-tracks channels through SpikingJelly's
time-flattening reshapes, and a forward that left membrane state breaks the trace). See ``tracing_pass``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .. import spiking
from ..layers import find_prunable_layers
from ..outputs import OutputSelector, select_output
from ..training_flags import preserved_training_flags
from .flops import (
    MAC_LAYER_TYPES,
    ForwardFn,
    LayerGeometry,
    LayerTrace,
    default_forward,
    describe_layer,
    layer_geometry,
    reset_spiking_state,
)

# which slice of a member's weight belongs to a channel; "grouped_in": the inputs of a grouped conv
ROLES = ("out", "in", "depthwise", "grouped_in", "bn")
_IGNORABLE_TYPES = (*MAC_LAYER_TYPES, nn.modules.batchnorm._BatchNorm)


class GraphTraceError(RuntimeError):
    """torch-pruning could not build a usable dependency graph for the model."""


@dataclass
class GroupMember:
    """One layer of a group: ``idxs`` are its channel indices along ``dim``, ``root`` the group channel of
    each."""

    name: str
    module: nn.Module
    role: str
    idxs: torch.Tensor
    root: torch.Tensor

    @property
    def dim(self) -> int:
        return 1 if self.role in ("in", "grouped_in") else 0

    @property
    def param(self) -> torch.Tensor | None:
        """The tensor a channel's saliency and regularisation act on: the weight (BN: γ); None if absent, and
        for a grouped conv's inputs (a channel owns no whole slice along one dim there)."""
        return None if self.role == "grouped_in" else getattr(self.module, "weight", None)


@dataclass
class ChannelGroup:
    """Channels coupled through the graph: pruning root channel ``c`` removes ``c`` from every member."""

    key: str  # the root layer's qualified name
    root: nn.Module
    handler: Callable
    size: int
    members: list[GroupMember] = field(default_factory=list)
    # Grouped convs (ResNeXt): root channel c = p + b·(size/tie) for block b; the same positions p must go
    # from every block, so a conv keeps whole, equal groups. 1 = no constraint.
    tie: int = 1

    @property
    def units(self) -> int:
        """Independently removable units: positions within a block (the channels when ``tie == 1``)."""
        return self.size // self.tie

    def couplings(self) -> list[tuple[str, int, torch.Tensor]]:
        """``(layer, dim, channels removed per root channel)`` for every conv/linear member (for MAC
        counts)."""
        out = []
        for m in self.members:
            if m.role in ("out", "in", "depthwise", "grouped_in"):
                out.append((m.name, m.dim, torch.bincount(m.root, minlength=self.size)))
        return out


@dataclass
class GraphInfo:
    graph: tp.DependencyGraph
    groups: list[ChannelGroup]
    geometry: dict[str, LayerGeometry]
    classifier: str | None
    ignored: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # group root -> why it is left unpruned
    output: object = None  # of the dense forward of example_inputs


def resolve_ignored_layers(model: nn.Module, ignored_layers: Iterable[str | nn.Module] | None) -> list[str]:
    """Qualified names of the conv/linear/BN layers that ``ignored_layers`` covers (names, modules,
    containers).

    Unknown names are a ``ValueError`` with a did-you-mean hint (``snn_lats.layers.find_prunable_layers``).
    """
    everything = find_prunable_layers(model, layer_types=_IGNORABLE_TYPES)
    kept = find_prunable_layers(model, layer_types=_IGNORABLE_TYPES, ignored_layers=ignored_layers)
    return [name for name in everything if name not in kept]


def step_mode_modules(model: nn.Module) -> dict[nn.Module, str]:
    return {m: m.step_mode for m in model.modules() if isinstance(getattr(m, "step_mode", None), str)}


def is_multi_step(model: nn.Module) -> bool:
    return any(mode == "m" for mode in step_mode_modules(model).values())


def fixed_multi_step(model: nn.Module) -> bool:
    """Multi-step neurons that cannot switch to single-step mode (SpikingJelly's clock_driven MultiStep*)."""
    return any(spiking.is_multi_step(m) and not isinstance(getattr(m, "step_mode", None), str)
               for m in model.modules())


@contextmanager
def single_step_mode(model: nn.Module):
    """Every SpikingJelly module in single-step mode, state reset; each module's own mode restored after."""
    modes = step_mode_modules(model)
    if not modes:
        yield
        return
    with warnings.catch_warnings():  # set_step_mode's own work, without its per-module notes
        warnings.simplefilter("ignore")
        for module in modes:
            module.step_mode = "s"
    reset_spiking_state(model)
    try:
        yield
    finally:
        reset_spiking_state(model)
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


def first_time_step(example_inputs: object) -> object:
    """``x[:1]`` of a 5-D ``[T, B, C, H, W]`` tensor (one time step, still 5-D), else the input."""
    if isinstance(example_inputs, torch.Tensor) and example_inputs.dim() == 5:
        return example_inputs[:1]
    return example_inputs


@contextmanager
def tracing_pass(model: nn.Module, mode: str):
    """The state torch-pruning traces in; every flag, step mode and attribute is restored after.

    Eval mode (BN running stats and dropout untouched), except spiking neurons, which run in train mode: an
    eval-mode IF/LIF node of SpikingJelly 0.0.0.0.14 computes its spikes without autograd and would cut the
    graph (checked by the trace itself: untraced layers are an error). Neuron state is reset before and after.
    ``mode="s"``: every SpikingJelly module in single-step mode. ``mode="m"``: the model's own step modes, and
    every integer attribute ``T`` set to 1, so that a forward that repeats a static image over ``self.T`` runs
    one time step.
    """
    steps = [(m, m.T) for m in model.modules() if mode == "m" and isinstance(getattr(m, "T", None), int)
             and not isinstance(m.T, bool) and m.T > 1]
    with preserved_training_flags(model):
        model.eval()  # the neurons go to train mode inside the traced forward (_neurons_in_train_mode)
        for m, _ in steps:
            m.T = 1
        try:
            with (single_step_mode(model) if mode == "s" else nullcontext()):
                reset_spiking_state(model)
                yield
        finally:
            reset_spiking_state(model)
            for m, t in steps:
                m.T = t


class _TimeStepProbe:
    """Records the largest leading (time) dimension that a multi-step neuron receives during the trace."""

    def __init__(self, model: nn.Module):
        self.steps, self.where = 1, None
        names = {m: n for n, m in model.named_modules()}
        self._handles = [m.register_forward_pre_hook(self._hook(names[m])) for m in model.modules()
                         if spiking.is_neuron(m) and spiking.is_multi_step(m)]

    def _hook(self, name):
        def hook(module, args):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] > self.steps:
                self.steps, self.where = int(x.shape[0]), name
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def build_channel_groups(
    model: nn.Module,
    example_inputs: object,
    *,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    ignore_classifier: bool = True,
    forward_fn: ForwardFn | None = None,
    trace_forward_fn: ForwardFn | None = None,
    trace_inputs: object = None,
    output: OutputSelector = None,
) -> GraphInfo:
    """Trace ``model`` with torch-pruning and return its prunable channel groups.

    ``forward_fn`` runs ``example_inputs`` the normal way (MAC geometry; the last conv/linear called is the
    classifier, ignored when ``ignore_classifier``). The graph is traced under ``tracing_pass``: in
    single-step mode with ``trace_forward_fn`` on ``trace_inputs`` (default: the SpikingJelly zoo class's
    forward, see ``spikingjelly_zoo_forward``, on one time step of ``example_inputs``); if that forward fails
    and neither was given, in multi-step mode at T=1 with ``forward_fn`` (models that repeat an image over T
    inside). Models whose neurons cannot switch step mode (SpikingJelly's clock_driven ``MultiStep*`` nodes)
    are traced in multi-step mode at T=1 only. torch-pruning traces back from the tensor that ``output``
    selects from the forward's output (:func:`snn_lats.outputs.select_output`; tuple outputs such as
    ``(logits, hook)`` included).
    """
    selector = output
    geometry, order, output = layer_geometry(model, example_inputs, forward_fn)
    if not geometry:
        raise GraphTraceError(f"{type(model).__name__} ran no conv or linear layer on example_inputs; "
                              "nothing to prune")
    ignored = resolve_ignored_layers(model, ignored_layers)
    classifier = order[-1] if ignore_classifier else None
    if classifier is not None and classifier not in ignored:
        ignored.append(classifier)

    snn = bool(step_mode_modules(model))
    fixed = fixed_multi_step(model)  # clock_driven: no single-step mode to switch to
    multi_step = (snn and is_multi_step(model)) or fixed
    user_trace = trace_forward_fn is not None or trace_inputs is not None
    forward = trace_forward_fn or (spikingjelly_zoo_forward(model) if snn else None) or forward_fn
    if trace_inputs is None:
        trace_inputs = single_step_inputs(example_inputs) if multi_step and not fixed else example_inputs
    attempts = []  # (step mode, forward, inputs), in order
    if not fixed or user_trace:
        attempts.append(("s", forward or default_forward, trace_inputs))
    if multi_step and not user_trace:
        # models that repeat a static image over T in forward cannot run single-step layers: multi-step, T=1
        attempts.append(("m", forward_fn or default_forward, first_time_step(example_inputs)))

    failures = []
    for mode, forward, inputs in attempts:
        graph = _trace(model, mode, forward, inputs, failures, selector)
        if graph is not None:
            break
    else:
        if len(failures) == 1:
            raise failures[0]  # one attempt: its own message says which mode
        raise GraphTraceError(f"torch-pruning could not trace {type(model).__name__}: in single-step mode "
                              f"{failures[0].where}; in multi-step mode at T=1 {failures[1].where}"
                              ) from failures[1]
    named = dict(model.named_modules())
    names = {m: n for n, m in named.items()}

    untraced = [n for n in geometry if named[n] not in graph.module2node]
    if untraced:
        shown = ", ".join(f"{describe_layer(model, n)}" for n in untraced[:5])
        raise GraphTraceError(
            f"torch-pruning could not trace {len(untraced)} layer(s) that the forward runs: {shown}. "
            "Their outputs do not reach the model output through autograd (detach, no_grad, .item()/numpy "
            "or integer ops in the forward), so their channel couplings are unknown; keep the forward "
            "differentiable from input to output")

    ignored_modules = [named[n] for n in ignored]
    groups, skipped = [], {}
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
        group.tie, problem = channel_tie(group)
        if problem:
            skipped[group.key] = problem
        else:
            groups.append(group)
    return GraphInfo(graph=graph, groups=groups, geometry=geometry, classifier=classifier, ignored=ignored,
                     skipped=skipped, output=output)


def _trace(model: nn.Module, mode: str, forward: ForwardFn, inputs: object,
           failures: list, output: OutputSelector = None) -> tp.DependencyGraph | None:
    """torch-pruning's graph traced under ``tracing_pass(model, mode)``; None (a GraphTraceError appended to
    ``failures``, ``.where`` saying what failed) if the forward raised or ran more than one time step."""
    graph = tp.DependencyGraph()
    trace = LayerTrace(model)
    steps = _TimeStepProbe(model) if mode == "m" else None
    error = None
    try:
        with tracing_pass(model, mode), torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning's notes on unwrapped parameters (e.g. PLIF's w)
            try:
                graph.build_dependency(model, inputs, forward_fn=_neurons_in_train_mode(forward, output),
                                       verbose=False)
            except Exception as exc:
                where = f"the traced forward failed in {describe_layer(model, trace.innermost())}: {exc}"
                error = GraphTraceError(f"torch-pruning could not trace {type(model).__name__}: {where}")
                error.__cause__ = exc
    finally:
        trace.remove()
        if steps is not None:
            steps.remove()
    if error is None and steps is not None and steps.steps > 1:
        where = (f"the traced forward ran {steps.steps} time steps through multi-step neuron {steps.where!r} "
                 "(T=1 is needed: more mis-tracks channels through the [T*B] reshapes; pass trace_inputs "
                 "with one step)")
        error = GraphTraceError(f"torch-pruning could not trace {type(model).__name__}: {where}")
    if error is None:
        return graph
    error.where = where
    failures.append(error)
    return None


def _neurons_in_train_mode(forward: ForwardFn, output: OutputSelector = None) -> ForwardFn:
    """``forward`` with the spiking neurons put in train mode first (torch-pruning calls model.eval()),
    returning the output tensor that ``output`` selects."""
    def run(model, inputs):
        for m in model.modules():
            if spiking.is_neuron(m):
                m.train()
        return select_output(forward(model, inputs), output)
    return run


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
        return "in" if module.groups == 1 else "grouped_in"
    return None


def channel_tie(group: ChannelGroup) -> tuple[int, str | None]:
    """``(tie, problem)``: the block count that the group's grouped convs impose (lcm of their ``groups``), or
    1 and why the group cannot be pruned consistently."""
    tie = 1
    for m in group.members:
        groups = getattr(m.module, "groups", 1)
        if m.role not in ("out", "grouped_in") or groups == 1:
            continue
        width = m.module.out_channels if m.role == "out" else m.module.in_channels
        order = torch.argsort(m.root)
        if len(m.idxs) != width or not torch.equal(m.idxs[order], torch.arange(width)) or width != group.size:
            return 1, (f"grouped conv {m.name!r} (groups={groups}) has {width} channels along this dim, not "
                       f"mapped one-to-one onto the group's {group.size}: its groups cannot be kept equal")
        tie = math.lcm(tie, groups)
    if group.size % tie:
        return 1, f"its {group.size} channels do not split into {tie} equal blocks for its grouped convs"
    return tie, None
