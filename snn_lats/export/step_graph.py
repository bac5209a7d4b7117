"""The pre-pass of the NIR export: a model in, one time step of it out, as an ``fx.GraphModule`` made only of
modules SpikingJelly's exporter maps (and ``+``, which NIR expresses as edges that converge on a node).

The model (a deepcopy; the user's is never touched) is squashed (a pruner's parametrization baked in, as
``squash`` does), put in eval mode and traced by running it once on the example input, in its own step mode.
Each traced value carries its real tensor, so Python that reads shapes (``x.dim() == 4`` in the ``models/``
wrappers) runs as usual. The trace is then rewritten into one time step:

- the direct encoding of a wrapper (``x.unsqueeze(0).expand(T, ...)`` / ``.repeat``) and its readout
  (``.mean(0)`` / ``.sum(0)`` over T) are dropped: the simulator's time loop replaces them;
- multi-step modules, SpikingJelly's ``SeqToANNContainer`` / ``MultiStepContainer`` / ``StepModeContainer``
  and ``flatten``/``view`` of a ``[T, B, ...]`` tensor become their single-step equivalents;
- BatchNorm is folded into the convolution or linear layer before it (exact in eval mode up to float
  rounding); ``AdaptiveAvgPool2d`` becomes the ``AvgPool2d`` it equals on the traced input size;
- ``MaxPool2d`` of spikes becomes an ``AvgPool2d`` and a neuron that fires when any input spiked (the OR the
  max of {0, 1} values is), exact on binary inputs; max pooling of anything else is refused;
- snn_lats's fused neurons become the SpikingJelly neurons with the same settings.

Everything else is refused, each module or operation named, before anything is written: a product of two
activations (attention's spike matrix products), a neuron NIR has no model for, a BatchNorm with nothing to
fold into, a grouped convolution (neither SpikingJelly's exporter nor its importer takes one). Neuron settings
NIR cannot express (soft reset, a surrogate whose forward is not a step) are refused or, with
``on_unsupported="warn"``, exported as NIR's model (hard reset to 0, a step) with a warning naming the layers.
"""
from __future__ import annotations

import copy
import math
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import fx, nn
from torch.nn.utils import parametrize

from .._checks import check_choice, check_type
from .trace import ValueTracer

ON_UNSUPPORTED = ("error", "warn")


class NIRExportError(ValueError):
    """What the model holds that NIR cannot express; ``problems`` lists each, module named first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = f"{len(self.problems)} module{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"cannot export to NIR ({count} with what it cannot express; it holds convolutions, "
                         f"linear layers, IF/LIF neurons, average pooling, flatten and additions):\n{lines}")


def _classes(*names: tuple[Any, str]) -> tuple[type, ...]:
    """The classes that exist in this SpikingJelly (0.0.0.0.14 lacks a few of 2.0's)."""
    return tuple(getattr(mod, name) for mod, name in names if hasattr(mod, name))


# Exact classes: a subclass may compute something else (WSConv2d standardises its weight), so it is refused.
WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, *_classes((layer, "Linear"), (layer, "Conv1d"),
                                                            (layer, "Conv2d")))
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm,
                   *_classes((layer, "BatchNorm1d"), (layer, "BatchNorm2d")))
AVGPOOL_TYPES = (nn.AvgPool2d, *_classes((layer, "AvgPool2d")))
ADAPTIVE_AVGPOOL_TYPES = (nn.AdaptiveAvgPool2d, *_classes((layer, "AdaptiveAvgPool2d")))
MAXPOOL_TYPES = (nn.MaxPool2d, *_classes((layer, "MaxPool2d")))
FLATTEN_TYPES = (nn.Flatten, *_classes((layer, "Flatten")))
IDENTITY_TYPES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                  *_classes((layer, "Dropout"), (layer, "Dropout2d")))
# containers whose children run one after the other on every time step
STEP_CONTAINERS = _classes((layer, "SeqToANNContainer"), (layer, "MultiStepContainer"),
                           (layer, "StepModeContainer"))
SJ_NEURONS = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)
# mapped by SpikingJelly's exporter as it is (nir.CubaLIF); not round-tripped by snn_lats's tests
PASSED_NEURONS = _classes((neuron, "CUBALIFNode"))


def _sync_batchnorm_types() -> tuple[type, ...]:
    from ..snn.sync_batchnorm import SyncBatchNorm

    return (SyncBatchNorm,)


def _fused_neuron_types() -> tuple[type, ...]:
    from ..snn.neurons import MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode

    return MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode


def module_kind(module: nn.Module) -> str | None:
    """What the pre-pass makes of a module: weight, batchnorm, neuron, avgpool, adaptive_avgpool, maxpool,
    flatten, identity, container; None for anything it cannot export."""
    cls = type(module)
    if cls in WEIGHT_TYPES:
        return "weight"
    if cls in BATCHNORM_TYPES or cls in _sync_batchnorm_types():
        return "batchnorm"
    if cls in SJ_NEURONS or cls in PASSED_NEURONS or cls in _fused_neuron_types():
        return "neuron"
    if cls in AVGPOOL_TYPES:
        return "avgpool"
    if cls in ADAPTIVE_AVGPOOL_TYPES:
        return "adaptive_avgpool"
    if cls in MAXPOOL_TYPES:
        return "maxpool"
    if cls in FLATTEN_TYPES:
        return "flatten"
    if cls in IDENTITY_TYPES:
        return "identity"
    if cls in STEP_CONTAINERS:
        return "container"
    return None


def _is_neuron(module: nn.Module) -> bool:
    """Neurons are traced as whole modules (and refused by name when NIR has no model for them); other
    modules the pre-pass does not know are stepped into, so the refusal names the operation inside them
    (an attention's matrix products)."""
    return isinstance(module, neuron.BaseNode)


# ---------------------------------------------------------------------------------------------------------
# The copy: squashed, eval mode


def squashed_copy(model: nn.Module) -> nn.Module:
    """A deepcopy of ``model`` in eval mode with every parametrization baked in (what ``squash`` does: LTP's
    hard mask, the soft threshold, a binary mask); the model itself is untouched."""
    check_type("model", model, nn.Module, "a torch.nn.Module")
    was_training = {m: m.training for m in model.modules()}
    model.eval()  # LTP's parametrization gives the hard mask in eval mode: the copy is taken in that state
    try:
        twin = copy.deepcopy(model)
    finally:
        for m, training in was_training.items():
            m.training = training
    for module in twin.modules():
        if parametrize.is_parametrized(module):
            _bake_parametrizations(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    functional.reset_net(twin)
    return twin


@torch.no_grad()
def _bake_parametrizations(module: nn.Module) -> None:
    """Replace each parametrized tensor of ``module`` by a plain parameter holding its current value.

    Not ``parametrize.remove_parametrizations``: it deletes the tensor's property from the module's class,
    which a deepcopy shares with the original, and would break the user's model.
    """
    baked = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    del module._modules["parametrizations"]
    module.__class__ = type(module).__bases__[0]  # parametrize made the class ParametrizedX(X)
    for name, value in baked.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))


# ---------------------------------------------------------------------------------------------------------
# The rewrite into one time step

PLAIN, TIMED, ENCODING, READOUT = "plain", "timed", "encoding", "readout"
_FLATTENS = {torch.flatten, "flatten"}
_RESHAPES = {"view", "reshape", torch.reshape}
_IDENTITY_OPS = {"contiguous", "clone", "detach", torch.clone, torch.detach}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_READOUTS = {"mean": "mean", torch.mean: "mean", "sum": "sum", torch.sum: "sum"}
_MATRIX_PRODUCTS = {operator.matmul, torch.matmul, "matmul", torch.bmm, "bmm", torch.einsum, torch.mm, "mm"}
_PRODUCTS = {operator.mul, operator.imul, torch.mul, "mul", "mul_", *_MATRIX_PRODUCTS}


@dataclass
class StepGraph:
    """One time step of a model, as the exporter needs it.

    Attributes:
        module: the single-step ``fx.GraphModule``; its submodules are the copy's (BN folded into them).
        example: one time step's input, ``[B, ...]``.
        sources: ``{GraphModule target: what it comes from in the user's model}``.
        notes: what the pre-pass did (BN folded, readout dropped, max pooling as OR, ...).
        readout: what was done over T to the output (``"mean over T"``), or None.
        weights: ``{GraphModule target of each weight layer: the user's module name}``.
    """

    module: fx.GraphModule
    example: torch.Tensor
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    readout: str | None = None
    weights: dict[str, str] = field(default_factory=dict)


def _name(target: str) -> str:
    return target or "(the model)"


def _owner(node: fx.Node) -> str:
    """'name (Class)' of the innermost module whose forward holds ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward"
    qualified, cls = list(stack.values())[-1]
    cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
    return f"{_name(qualified)} ({cls_name})"


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


def _normalize(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


class _Rewriter:
    def __init__(self, model: nn.Module, traced: fx.Graph, values: dict[fx.Node, Any], example: torch.Tensor,
                 on_unsupported: str):
        self.model = model
        self.traced = traced
        self.values = values
        self.example = example
        self.on_unsupported = on_unsupported
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.state: dict[fx.Node, str] = {}
        self.modules: dict[str, nn.Module] = {}
        self.sources: dict[str, str] = {}
        self.kinds: dict[str, str] = {}  # target -> module kind in the new graph
        self.refusals: dict[str, dict[str, int]] = {}  # module -> {reason: times}
        self.settings: list[str] = []  # neuron settings NIR cannot express (refused or warned)
        self.notes: list[str] = []
        self.readout: str | None = None
        self.calls: dict[str, int] = {}
        self.multi_step = any(getattr(m, "step_mode", "s") == "m" or type(m) in STEP_CONTAINERS[:2]
                              for m in model.modules())
        self.step_example = example

    # -- helpers
    def refuse(self, what: str, why: str) -> None:
        self.refusals.setdefault(what, {})
        self.refusals[what][why] = self.refusals[what].get(why, 0) + 1

    @property
    def problems(self) -> list[str]:
        """One line per module: what it does that NIR cannot express (a reason met n times says so)."""
        return [f"{what}: " + "; ".join(why if n == 1 else f"{why} ({n} times)" for why, n in whys.items())
                for what, whys in self.refusals.items()]

    def add_module(self, target: str, module: nn.Module, source: str, kind: str) -> str:
        self.modules[target] = module
        self.sources[target] = source
        self.kinds[target] = kind
        return target

    def fresh_target(self, base: str) -> str:
        taken = set(self.modules) | {n for n, _ in self.model.named_modules()}
        target, i = base, 1
        while target in taken:
            target, i = f"{base}_{i}", i + 1
        return target

    def call(self, target: str, x: fx.Node) -> fx.Node:
        return self.graph.call_module(target, (x,))

    # -- the walk
    def run(self) -> None:
        for node in self.traced.nodes:
            handler = getattr(self, f"on_{node.op}")
            handler(node)

    def on_placeholder(self, node: fx.Node) -> None:
        if self.env:  # a second argument of forward
            self.refuse("the model's forward", f"takes more than one input ({node.target!r}); a NIR graph "
                                               "here has one")
            self.skip(node)
            return
        encoded = any(self.is_unsqueeze0(user) for user in node.users)
        timed = self.multi_step and not encoded
        if timed and self.example.dim() < 2:
            self.refuse("example_input", f"a multi-step model takes [T, B, ...], got shape "
                                         f"{tuple(self.example.shape)}")
            timed = False
        self.step_example = self.example[0] if timed else self.example
        self.env[node] = self.graph.placeholder("input")
        self.state[node] = TIMED if timed else PLAIN

    def on_get_attr(self, node: fx.Node) -> None:
        if node.users:
            self.refuse(_owner(node), f"reads the tensor {node.target!r} in its forward; NIR only has the "
                                      "weights of its layers")
        self.skip(node)

    def on_output(self, node: fx.Node) -> None:
        out = node.args[0]
        if not isinstance(out, fx.Node):
            self.refuse("the model's output", f"is a {type(out).__name__} of several values; NIR graphs here "
                                              "have one output")
            return
        if self.state.get(out) not in (PLAIN, TIMED, READOUT):
            return  # the producer was refused
        self.graph.output(self.env[out])

    def is_unsqueeze0(self, node: fx.Node) -> bool:
        if node.target not in ("unsqueeze", torch.unsqueeze):
            return False
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return dim == 0

    def input_of(self, node: fx.Node, what: str) -> fx.Node | None:
        """The single tensor input of ``node``; refuses other signatures."""
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        if len(tensors) != 1 or node.kwargs:
            self.refuse(what, "is called with several inputs; the exporter maps single-input layers")
            return None
        x = tensors[0]
        if self.state.get(x) not in (PLAIN, TIMED):
            if self.state.get(x) == READOUT:
                self.refuse(what, "reads the output averaged over time steps; only the model's output may")
            return None
        return x

    # -- modules
    def on_call_module(self, node: fx.Node) -> None:
        module = self.model.get_submodule(node.target)
        what = f"{_name(node.target)} ({type(module).__name__})"
        x = self.input_of(node, what)
        if x is None:
            return
        state = self.state[x]
        value = self.values[x]
        step_shape = tuple(value.shape[1:] if state == TIMED else value.shape)  # [B, ...] of one step
        out = self.module_chain(node.target, module, self.env[x], state, step_shape, what)
        # a refused module passes its input on, so that what comes after it is checked too
        self.env[node], self.state[node] = (out if out is not None else self.env[x]), state

    def module_chain(self, target: str, module: nn.Module, x: fx.Node, state: str,
                     step_shape: tuple[int, ...], what: str) -> fx.Node | None:
        """The new node(s) for ``module`` applied to ``x`` (one time step of shape ``step_shape``)."""
        # counted here, so that the layers inside a step container (SeqToANNContainer) count too
        self.calls[target] = self.calls.get(target, 0) + 1
        kind = module_kind(module)
        if kind is None and type(module) is nn.Sequential:
            kind = "container"  # inside a step container
        if kind is None:
            self.refuse(what, _unsupported_module_reason(module))
            return None
        step_mode = getattr(module, "step_mode", None)
        if state == TIMED and step_mode == "s" and kind == "neuron":
            self.refuse(what, "runs in single-step mode on a [T, B, ...] sequence, so its state would mix "
                              "time steps")
            return None
        if state == PLAIN and step_mode == "m" and kind != "container":
            self.refuse(what, "runs in multi-step mode on a value without a time dimension")
            return None
        if kind == "container":
            for child_name, child in module.named_children():
                child_target = f"{target}.{child_name}" if target else child_name
                child_what = f"{child_target} ({type(child).__name__})"
                x = self.module_chain(child_target, child, x, PLAIN, step_shape, child_what)
                if x is None:
                    return None
                step_shape = tuple(_run_shape(child, step_shape))
            return x
        if kind == "identity":
            return x
        if kind == "weight":
            if not self.check_weight(module, what):
                return None
            return self.call(self.add_module(target, module, target, "weight"), x)
        if kind == "batchnorm":
            if not module.track_running_stats or module.running_mean is None:
                self.refuse(what, "normalises with batch statistics even in eval mode "
                                  "(track_running_stats=False); nothing to fold into a layer")
                return None
            return self.call(self.add_module(target, module, target, "batchnorm"), x)
        if kind == "neuron":
            converted = self.check_neuron(module, what)
            if converted is None:
                return None
            if self.calls.get(target, 0) > 1:
                self.refuse(what, "is called more than once per time step; its state would be shared")
                return None
            return self.call(self.add_module(target, converted, target, "neuron"), x)
        if kind == "flatten":
            return self.flatten(target, module.start_dim, module.end_dim, x, len(step_shape), what,
                                source=target)
        if kind == "avgpool":
            pool = self.check_avgpool(module, step_shape, what)
            return None if pool is None else self.call(self.add_module(target, pool, target, "pool"), x)
        if kind == "adaptive_avgpool":
            pool = self.adaptive_to_avgpool(module, step_shape, what)
            return None if pool is None else self.call(self.add_module(target, pool, target, "pool"), x)
        if kind == "maxpool":
            return self.maxpool(target, module, x, step_shape, what)
        raise AssertionError(kind)

    def check_weight(self, module: nn.Module, what: str) -> bool:
        if isinstance(module, nn.Linear):
            return True
        ok = True
        if module.groups != 1:
            self.refuse(what, f"is a grouped convolution (groups={module.groups}); SpikingJelly's NIR "
                              "exporter and importer take groups=1 only")
            ok = False
        if module.padding_mode != "zeros":
            self.refuse(what, f"pads with {module.padding_mode!r}; NIR convolutions pad with zeros")
            ok = False
        if isinstance(module.padding, str):
            if module.padding == "valid":
                module.padding = (0,) * len(module.kernel_size)
            elif all(d * (k - 1) % 2 == 0 for d, k in zip(module.dilation, module.kernel_size, strict=True)):
                module.padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size,
                                                                       strict=True))
            else:
                self.refuse(what, "pads 'same' unevenly (an even kernel); NIR padding is symmetric")
                ok = False
        return ok

    def check_neuron(self, module: nn.Module, what: str) -> nn.Module | None:
        """The SpikingJelly neuron to export for ``module`` (a converted copy for fused ones), or None."""
        if type(module) in PASSED_NEURONS:
            return module
        problems = []
        if module.v_reset is None:
            problems.append("soft reset (v_reset=None: V -= V_th after a spike); NIR's IF/LIF reset to "
                            "v_reset")
        surrogate = getattr(module, "surrogate_function", None)
        if getattr(surrogate, "spiking", True) is False:
            problems.append(f"its surrogate {type(surrogate).__name__}(spiking=False) outputs the smooth "
                            "function in the forward pass, not spikes")
        if isinstance(getattr(module, "v_threshold", None), torch.Tensor) \
                and module.v_threshold.numel() != 1:
            self.refuse(what, "has a per-neuron threshold tensor; the exporter maps one threshold per layer")
            return None
        for problem in problems:
            self.settings.append(f"{what}: {problem}")
        if problems and self.on_unsupported == "error":
            return None
        converted = _as_spikingjelly_neuron(module)
        if problems:  # on_unsupported="warn": NIR's own model, said in the warning
            if converted.v_reset is None:
                converted.v_reset = 0.0
                converted.v = 0.0
            if surrogate is not None and getattr(surrogate, "spiking", True) is False:
                converted.surrogate_function = copy.deepcopy(surrogate)
                converted.surrogate_function.spiking = True
        return converted

    def check_avgpool(self, module: nn.AvgPool2d, step_shape, what: str) -> nn.Module | None:
        if module.divisor_override is not None:
            self.refuse(what, "has divisor_override; NIR's AvgPool2d divides by the kernel size")
            return None
        if any(_pair(module.padding)) and not module.count_include_pad:
            self.refuse(what, "excludes padding from the average (count_include_pad=False); NIR's AvgPool2d "
                              "counts it")
            return None
        if module.ceil_mode:
            if not _ceil_is_floor(step_shape, module.kernel_size, module.stride, module.padding):
                self.refuse(what, "has ceil_mode=True, which adds partial windows at this input size; NIR's "
                                  "AvgPool2d has no ceil mode")
                return None
        return nn.AvgPool2d(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding))

    def adaptive_to_avgpool(self, module, step_shape, what: str) -> nn.Module | None:
        h, w = step_shape[-2:]
        size = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
        oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
        if h % oh or w % ow:
            self.refuse(what, f"pools {h}x{w} to {oh}x{ow}, windows of unequal size; NIR's AvgPool2d has one "
                              "kernel size")
            return None
        kernel = (h // oh, w // ow)
        self.notes.append(f"{what} on {h}x{w} inputs: AvgPool2d(kernel_size={kernel}, stride={kernel})")
        return nn.AvgPool2d(kernel, kernel, (0, 0))

    def maxpool(self, target: str, module: nn.MaxPool2d, x: fx.Node, step_shape, what: str):
        producer = x.target if x.op == "call_module" else None
        if producer is None or self.kinds.get(producer) != "neuron" \
                or type(self.modules[producer]) in PASSED_NEURONS:
            self.refuse(what, "max-pools values that are not spikes of an IF/LIF/PLIF layer; NIR has no max "
                              "pooling (of spikes it is exported as an OR)")
            return None
        if _pair(module.dilation) != (1, 1) or module.return_indices:
            self.refuse(what, "has dilation or return_indices; NIR has no max pooling")
            return None
        if module.ceil_mode and not _ceil_is_floor(step_shape, module.kernel_size, module.stride,
                                                   module.padding):
            self.refuse(what, "has ceil_mode=True, which adds partial windows at this input size; NIR's "
                              "AvgPool2d has no ceil mode")
            return None
        kh, kw = _pair(module.kernel_size)
        stride = module.stride if module.stride is not None else module.kernel_size
        pool = nn.AvgPool2d((kh, kw), _pair(stride), _pair(module.padding))
        # the average of k² spikes is 0 or at least 1/k²: a neuron with a threshold below that and a hard
        # reset to 0 fires exactly when one input spiked, and its membrane is back to 0 after every step
        source_neuron = self.modules[producer]
        if isinstance(source_neuron, neuron.IFNode):
            spike = neuron.IFNode(v_threshold=0.5 / (kh * kw), v_reset=0.0)
        else:
            spike = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=0.25 / (kh * kw), v_reset=0.0)
        y = self.call(self.add_module(target, pool, target, "pool"), x)
        or_target = self.fresh_target(f"{target}_or")
        self.notes.append(f"{what} of spikes: AvgPool2d then {type(spike).__name__} {or_target!r} firing "
                          "when any input spiked (max of 0/1 values = OR)")
        return self.call(self.add_module(or_target, spike, f"{target} (max pooling as OR)", "neuron"), y)

    def flatten(self, target: str, start: int, end: int, x: fx.Node, step_rank: int, what: str,
                source: str, timed_dims: bool = False) -> fx.Node | None:
        """nn.Flatten(start, end) of one step ``[B, ...]``; ``timed_dims``: the dims count the T axis."""
        rank = step_rank + (1 if timed_dims else 0)
        start, end = _normalize(start, rank), _normalize(end, rank)
        if timed_dims:
            start, end = start - 1, end - 1
        if start < 1:
            self.refuse(what, "flattens the batch (or time) dimension into the features")
            return None
        if end < start:
            return x
        # end counted from the last dim: importers that forget the batch dim (snnTorch, Norse) still flatten
        # all features
        module = nn.Flatten(start, end - step_rank)
        return self.call(self.add_module(target, module, source, "flatten"), x)

    # -- functions and methods
    def on_call_method(self, node: fx.Node) -> None:
        self.on_call_function(node)

    def on_call_function(self, node: fx.Node) -> None:
        target = node.target
        what = _owner(node)
        tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
        if any(self.state.get(a) is None for a in tensors):
            self.state[node] = None  # an input was refused already
            return
        if target in _ADDS:
            self.add(node, what)
        elif self.is_unsqueeze0(node):
            self.encode_start(node, what)
        elif target in ("expand", "repeat"):
            self.encode_repeat(node, what)
        elif target in _READOUTS:
            self.readout_op(node, what)
        elif target in _IDENTITY_OPS:
            x = node.args[0]
            self.env[node], self.state[node] = self.env.get(x), self.state[x]
        elif target in _FLATTENS or target in _RESHAPES:
            self.flatten_op(node, what)
        else:
            self.skip(node)
            two = sum(isinstance(a, fx.Node) for a in node.args) >= 2
            if target in _MATRIX_PRODUCTS and two:
                self.refuse(what, f"multiplies two activations ({_op_name(node)}), a spike matrix product "
                                  "as in attention; NIR has no node for it")
            elif target in _PRODUCTS and two:
                self.refuse(what, f"multiplies two activations elementwise ({_op_name(node)}, as SEW's AND "
                                  "and IAND connections do); NIR has no node for it")
            elif target in _PRODUCTS:
                self.refuse(what, f"scales activations by a constant ({_op_name(node)}); NIR has no such "
                                  "node between layers")
            else:
                self.refuse(what, f"applies {_op_name(node)}, which has no NIR node")

    def skip(self, node: fx.Node) -> None:
        """After refusing ``node``: it passes its first input on, so that what follows is checked too."""
        laid_out = [a for a in node.args if isinstance(a, fx.Node) and self.state.get(a) in (PLAIN, TIMED)]
        x = laid_out[0] if laid_out else None
        self.env[node], self.state[node] = (self.env[x], self.state[x]) if x is not None else (None, None)

    def add(self, node: fx.Node, what: str) -> None:
        if node.target == torch.add and ("alpha" in node.kwargs or len(node.args) > 2):
            self.refuse(what, "adds with alpha; NIR sums converging edges unscaled")
            self.skip(node)
            return
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            self.refuse(what, f"adds a constant ({_op_name(node)}); NIR sums activations only")
            self.skip(node)
            return
        states = {self.state[a], self.state[b]}
        if len(states) != 1 or states - {PLAIN, TIMED}:
            self.refuse(what, "adds values of different time layouts")
            self.skip(node)
            return
        if self.values[a].shape != self.values[b].shape:
            self.refuse(what, "adds values of different shapes (broadcasting); NIR edges converge on equal "
                              "shapes")
            self.skip(node)
            return
        self.env[node] = self.graph.call_function(operator.add, (self.env[a], self.env[b]))
        self.state[node] = states.pop()

    def encode_start(self, node: fx.Node, what: str) -> None:
        x = node.args[0]
        if not self.multi_step or self.state[x] != PLAIN:
            self.refuse(what, "adds a leading dimension with .unsqueeze(0) outside the direct encoding of a "
                              "multi-step model")
            self.skip(node)
            return
        self.env[node], self.state[node] = self.env[x], ENCODING

    def encode_repeat(self, node: fx.Node, what: str) -> None:
        x = node.args[0]
        before, after = self.values[x].shape, self.values[node].shape
        if self.state[x] != ENCODING or after[1:] != before[1:]:
            self.refuse(what, f"{_op_name(node)} is not the repetition of the input over time steps")
            self.skip(node)
            return
        self.env[node], self.state[node] = self.env[x], TIMED
        self.notes.append(f"direct encoding ({what}: the input repeated over T={after[0]}) left to the "
                          "simulator: the graph takes the same input at every step")

    def readout_op(self, node: fx.Node, what: str) -> None:
        x = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        users = list(node.users)
        to_output = all(u.op == "output" or u.target in _IDENTITY_OPS for u in users)
        if self.state[x] != TIMED or dim not in (0, (0,), [0]) or keepdim or not to_output:
            self.refuse(what, f"{_op_name(node)} over dim {dim} is not the readout over time steps of the "
                              "model's output (only that is left to the simulator)")
            self.skip(node)
            return
        self.readout = f"{_READOUTS[node.target]} over T"
        self.notes.append(f"readout ({what}: {self.readout}) left to the simulator: the graph's output is "
                          "one step's")
        self.env[node], self.state[node] = self.env[x], READOUT

    def flatten_op(self, node: fx.Node, what: str) -> None:
        x = node.args[0]
        state = self.state[x]
        if state not in (PLAIN, TIMED):
            self.refuse(what, f"{_op_name(node)} of a value without a step layout")
            self.skip(node)
            return
        before, after = tuple(self.values[x].shape), tuple(self.values[node].shape)
        lead = 2 if state == TIMED else 1
        if before == after:
            self.env[node], self.state[node] = self.env[x], state
            return
        if node.target in _FLATTENS:  # flatten(start, end) as called
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            start, end = _normalize(start, len(before)), _normalize(end, len(before))
            ok = start >= lead
        else:  # a view/reshape that keeps the leading dims and merges the trailing ones into one
            start, end = len(after) - 1, len(before) - 1
            ok = after[:start] == before[:start] and math.prod(before[start:]) == after[start] \
                and start >= lead
        if not ok:
            self.refuse(what, f"{_op_name(node)} reshapes {before} to {after}, which is not a flatten of "
                              "the feature dimensions of one time step")
            self.skip(node)
            return
        owner = (list((node.meta.get("nn_module_stack") or {}).values()) or [("", None)])[-1][0]
        target = self.fresh_target(f"{owner}.flatten" if owner else "flatten")
        out = self.flatten(target, start, end, self.env[x], len(before) - (1 if state == TIMED else 0), what,
                           source=f"{what}: {_op_name(node)}", timed_dims=state == TIMED)
        if out is not None:
            self.env[node], self.state[node] = out, state

    # -- after the walk
    def fold_batchnorms(self) -> None:
        """Fold each BatchNorm into the weight layer whose output it alone reads."""
        for node in list(self.graph.nodes):
            if node.op != "call_module" or self.kinds.get(node.target) != "batchnorm":
                continue
            bn = self.modules[node.target]
            what = f"{node.target} ({type(bn).__name__})"
            producer = node.args[0]
            layer_target = producer.target if producer.op == "call_module" else None
            if layer_target is None or self.kinds.get(layer_target) != "weight":
                self.refuse(what, "does not follow a convolution or linear layer; NIR has no BatchNorm and "
                                  "there is nothing to fold it into")
                continue
            if len(producer.users) != 1 or self.calls.get(layer_target, 0) != 1:
                self.refuse(what, f"follows {layer_target}, whose output (or weights) other nodes use too; "
                                  "folding would change them")
                continue
            layer_module = self.modules[layer_target]
            if bn.num_features != layer_module.weight.shape[0]:
                self.refuse(what, f"normalises {bn.num_features} features but {layer_target} has "
                                  f"{layer_module.weight.shape[0]} outputs")
                continue
            fold_batchnorm(layer_module, bn)
            self.notes.append(f"{what} folded into {layer_target}")
            node.replace_all_uses_with(producer)
            self.graph.erase_node(node)
            del self.modules[node.target], self.sources[node.target], self.kinds[node.target]


def _unsupported_module_reason(module: nn.Module) -> str:
    cls = type(module)
    if isinstance(module, neuron.BaseNode):
        return ("a neuron NIR has no model for here (IF, LIF and ParametricLIF map, and SpikingJelly's "
                "CUBALIFNode)")
    if isinstance(module, (nn.Conv2d, nn.Linear, nn.Conv1d)):
        return (f"a {cls.__name__} with its own forward (a subclass of {cls.__mro__[1].__name__}); only the "
                "plain torch and SpikingJelly classes map")
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool3d, nn.Conv3d)):
        return "NIR has 2-d pooling and 1-d/2-d convolutions only"
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "a normalisation that cannot be folded into a layer (only BatchNorm1d/2d in eval mode fold)"
    return "no NIR mapping for this module"


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _ceil_is_floor(step_shape, kernel, stride, padding) -> bool:
    """Whether ceil_mode gives the same output size as floor mode on this input."""
    stride = kernel if stride is None else stride
    for size, k, s, p in zip(step_shape[-2:], _pair(kernel), _pair(stride), _pair(padding), strict=True):
        span = size + 2 * p - k
        floor, ceil = span // s + 1, -(-span // s) + 1
        if ceil > floor and (ceil - 1) * s < size + p:  # torch drops a last window that starts in the padding
            return False
    return True


def _run_shape(module: nn.Module, shape: tuple[int, ...]) -> torch.Size:
    """The output shape of ``module`` on one step of ``shape`` (for containers' children)."""
    with torch.no_grad():
        probe = copy.deepcopy(module)
        if hasattr(probe, "step_mode"):
            functional.set_step_mode(probe, "s")
        functional.reset_net(probe)
        return probe(torch.zeros(shape)).shape


@torch.no_grad()
def fold_batchnorm(layer_module: nn.Module, bn: nn.Module) -> None:
    """Fold an eval-mode BatchNorm into the convolution or linear layer before it, in place, in float64:
    W' = W·γ/√(σ²+ε) per output channel, b' = (b − μ)·γ/√(σ²+ε) + β. Zero weights stay exactly zero."""
    weight = layer_module.weight
    scale = (bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var.double())) \
        / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
    bias = layer_module.bias.double() if layer_module.bias is not None else torch.zeros_like(scale)
    new_weight = (weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype)
    new_bias = ((bias - bn.running_mean.double()) * scale + shift).to(weight.dtype)
    layer_module.weight = nn.Parameter(new_weight, requires_grad=False)
    layer_module.bias = nn.Parameter(new_bias, requires_grad=False)


def _as_spikingjelly_neuron(module: nn.Module) -> nn.Module:
    """SpikingJelly's IF/LIF/PLIF node with the settings of ``module`` (itself when it already is one)."""
    if type(module) in SJ_NEURONS:
        return module
    from ..snn.neurons import MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode

    common = dict(v_threshold=module.v_threshold, v_reset=module.v_reset,
                  surrogate_function=module.surrogate_function, detach_reset=module.detach_reset)
    if isinstance(module, MultiStepParametricLIFNode):
        plif = neuron.ParametricLIFNode(decay_input=module.decay_input, **common)
        plif.w = nn.Parameter(module.w.detach().clone(), requires_grad=False)
        return plif
    if isinstance(module, MultiStepLIFNode):
        return neuron.LIFNode(tau=module.tau, decay_input=module.decay_input, **common)
    if isinstance(module, MultiStepIFNode):
        return neuron.IFNode(**common)
    raise AssertionError(type(module))


def build_step_graph(model: nn.Module, example_input: torch.Tensor, *,
                     on_unsupported: str = "error") -> StepGraph:
    """One time step of ``model`` as a single-step ``fx.GraphModule`` of mappable modules (see the module
    docstring). ``model`` is not changed; NIRExportError lists everything that cannot be exported."""
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("example_input", example_input, torch.Tensor, "a torch.Tensor")
    on_unsupported = check_choice("on_unsupported", on_unsupported, ON_UNSUPPORTED)
    twin = squashed_copy(model)
    example = example_input.detach().to(next(twin.parameters(), example_input).device)
    tracer = ValueTracer(example, lambda m: module_kind(m) is not None or _is_neuron(m))
    try:
        with torch.no_grad():
            traced = tracer.trace(twin)
    except fx.proxy.TraceError as exc:
        where = next(reversed(tracer.module_stack.values()), ("", None))[0] if tracer.module_stack else ""
        raise NIRExportError([f"{_name(where)}: its forward branches on a traced value, which the exporter "
                              f"cannot follow ({exc})"]) from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"running the model on example_input of shape {tuple(example_input.shape)} failed: "
                         f"{exc}") from exc
    functional.reset_net(twin)
    rewriter = _Rewriter(twin, traced, tracer.values, example, on_unsupported)
    rewriter.run()
    if not rewriter.problems:
        rewriter.fold_batchnorms()
    problems = rewriter.problems + (rewriter.settings if on_unsupported == "error" else [])
    if problems:
        raise NIRExportError(problems)
    if rewriter.settings:
        warnings.warn("exported to NIR with NIR's neuron model instead of these settings (the graph differs "
                      "from the model there): " + "; ".join(rewriter.settings), stacklevel=3)
    if not any(n.op == "output" for n in rewriter.graph.nodes):
        raise NIRExportError(["the model's output: not produced by anything the exporter maps"])
    module = fx.GraphModule(rewriter.modules, rewriter.graph, class_name="StepGraph")
    functional.set_step_mode(module, "s")
    functional.reset_net(module)
    weights = {t: rewriter.sources[t] for t, k in rewriter.kinds.items() if k == "weight"}
    return StepGraph(module, rewriter.step_example, dict(rewriter.sources), rewriter.notes, rewriter.readout,
                     weights)
