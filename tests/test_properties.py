"""Property tests (issue #15, "keep it fixed"): the public constructors and loaders, fed generated arguments.

Any generated input either works, or raises a ``ValueError``/``TypeError`` whose message names the argument
(for a state dict: the offending key or setting), and nothing is ever half-changed: after a raised error the
model's tensors (``torch.equal``), its parametrizations and the pruner's ``state_dict()`` are exactly as
before the call. ``experiments.train.parse_args`` either returns or exits with argparse's usage and a one-line
error, and writes nothing. Tiny models only, so each example takes milliseconds.
"""
from __future__ import annotations

import copy
import math
import os
import re
import tempfile

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from spikingjelly.activation_based import neuron
from torch import nn
from torch.nn.utils import parametrize

import models
import snn_lats
from experiments import args as train_args
from experiments import train
from snn_lats import LearnedThresholdPruner, MagnitudePruner, SoftThresholdPruner
from snn_lats.metrics import measure
from snn_lats.schedules import ConstantSchedule
from snn_lats.structured import OCSPruner
from tests.conftest import TinyCNN

NAN, INF = float("nan"), float("inf")
LAYERS = ("conv1", "bn1", "conv2", "fc")  # TinyCNN's modules
PRUNABLE = ("conv1", "conv2", "fc")
X, Y = torch.randn(2, 1, 8, 8), torch.tensor([1, 3])  # a batch for TinyCNN


def props(examples: int):
    """Hypothesis settings of this file: no deadline (a loaded CI machine), no example database written into
    the working tree, fixtures allowed (each example builds its own model). ``SNN_LATS_PROPERTY_SCALE=10``
    runs ten times the examples (a longer local hunt)."""
    examples = max(1, round(examples * float(os.environ.get("SNN_LATS_PROPERTY_SCALE", "1"))))
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (tests/conftest.py)


class Make:
    """A value that needs the example's model (an optimizer over it, one of its modules); ``make(model)``."""

    def __init__(self, what: str, make):
        self.what, self.make = what, make

    def __repr__(self) -> str:
        return self.what

    def __deepcopy__(self, memo):
        return self  # a marker: copies of a state keep it


def resolve(value, model):
    if isinstance(value, Make):
        return value.make(model)
    if isinstance(value, list):
        return [resolve(v, model) for v in value]
    return value


OPTIMIZER = Make("SGD(model)", lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
SCHEDULER = Make("CosineAnnealingLR(SGD(model))", lambda m: torch.optim.lr_scheduler.CosineAnnealingLR(
    getattr(m, "_optimizer", None) or OPTIMIZER.make(m), T_max=10))
FC_MODULE = Make("model.fc", lambda m: m.fc)
BN_MODULE = Make("model.bn1", lambda m: m.bn1)
STRAY_MODULE = Make("nn.Linear(2, 2) (not in the model)", lambda m: nn.Linear(2, 2))
TINY = Make("TinyCNN()", lambda m: TinyCNN())

# --- strategies ---------------------------------------------------------------------------------------------

BAD = st.one_of(
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.sampled_from([NAN, INF, -INF, -1, -1.5, 0, 0.0, 10**30, 2**63, -(2**63)]),
    st.integers(-3, 3).map(np.int64),
    st.sampled_from([0.5, NAN, INF, -1.0]).map(np.float32),
    st.lists(st.integers(-2, 2), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 2), max_size=2),
)


def mixed(valid, bad=BAD):
    """Mostly ``valid``, one value in four from ``bad`` (a plain ``one_of`` would weigh every branch of BAD
    like the valid ones, and almost no example would build anything)."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else valid)


def arg(*valid):
    """Valid values mixed with bad ones."""
    return mixed(st.sampled_from(valid))


NAME = st.one_of(st.sampled_from((*LAYERS, "", "layer1", "fc.weight", "conv")), st.text(max_size=6))
IGNORED = mixed(st.lists(st.sampled_from(["fc", "conv2", FC_MODULE]), max_size=2, unique=True),
                st.one_of(st.lists(st.one_of(NAME, st.sampled_from([FC_MODULE, BN_MODULE, STRAY_MODULE])),
                                   min_size=1, max_size=2), NAME, BAD))
LAYER_TYPES = mixed(st.sampled_from([(nn.Conv2d,), (nn.Linear,), (nn.Conv2d, nn.Linear), [nn.Linear]]),
                    st.one_of(st.sampled_from([(nn.Conv1d,), (nn.BatchNorm2d,), (), nn.Conv2d, ("Conv2d",),
                                               (int,)]), BAD))
SCALES = mixed(
    st.one_of(st.dictionaries(st.sampled_from(PRUNABLE), arg(0.0, 0.5, 1.0, 2), max_size=3),
              st.just(lambda name, module: 1.0)),
    st.one_of(st.dictionaries(NAME, arg(0.5), max_size=2),
              st.sampled_from([lambda name, module: "x", lambda name, module: -1.0]), BAD))
OPTIMIZERS = mixed(st.just(OPTIMIZER))


def zeroed_model(zeroed: str | None) -> nn.Module:
    """TinyCNN, with layer ``zeroed``'s weights set to one constant (a layer whose |w| has no spread)."""
    model = TinyCNN()
    if zeroed is not None:
        with torch.no_grad():
            getattr(model, zeroed).weight.fill_(0.5)
    return model


# --- the property's checks ----------------------------------------------------------------------------------

def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_tensors(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert list(after) == list(before), f"state_dict keys changed: {sorted(set(after) ^ set(before))}"
    for key, value in before.items():
        now = after[key]
        assert now.dtype == value.dtype and now.shape == value.shape and torch.equal(now, value), \
            f"{key} changed"


def parametrized(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if parametrize.is_parametrized(m)]


def same(a, b) -> bool:
    """Deep equality of plain containers: same types, NaN equal to NaN, tensors with ``torch.equal``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def names_one_of(exc: BaseException, names) -> None:
    """The error's message names one of ``names``, as a whole word (``layer_scale['x']`` names
    layer_scale)."""
    message = str(exc)

    def mentions(name) -> bool:
        if repr(name) in message:  # '' or a non-string key, or one with odd characters, as its repr
            return True
        return bool(isinstance(name, str) and name
                    and re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message))

    assert any(mentions(n) for n in names), \
        f"{type(exc).__name__}: {message!r} names none of {sorted(map(repr, names))}"


def attempt(call, names, model: nn.Module, *, pruner=None, allow=()):
    """``call()``: its result, or None when it raised a TypeError/ValueError naming one of ``names`` and left
    ``model`` (tensors and parametrizations) and ``pruner.state_dict()`` as they were. Any other exception
    propagates and fails the property (``allow``: other exception types a call may document)."""
    before, prepared = tensors(model), parametrized(model)
    saved = copy.deepcopy(pruner.state_dict()) if pruner is not None else None
    try:
        result = call()
    except (TypeError, ValueError, *allow) as exc:
        event(f"raised {type(exc).__name__}")
        names_one_of(exc, names)
        assert parametrized(model) == prepared, f"parametrizations left behind by a failed call: {exc}"
        assert_same_tensors(before, model)
        if pruner is not None:
            assert same(pruner.state_dict(), saved), f"pruner state changed by a failed load: {exc}"
        return None
    event("worked")
    return result


def all_finite(obj) -> bool:
    """No NaN or ±inf float anywhere in a plain container."""
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


# --- constructors -------------------------------------------------------------------------------------------

SOFT_ARGS = {
    "final_threshold": arg(0.0, 0.01, 0.05),
    "schedule": mixed(
        st.sampled_from(["s-lats", "slats", "LATS", "lats", "pgh", "lr", "constant", lambda step: 0.01 * step,
                         ConstantSchedule(0.01)]),
        st.one_of(st.sampled_from(["cosine", "", lambda step: "x", lambda step: -1.0, lambda step: NAN]),
                  BAD)),
    "total_steps": arg(1, 10, 100),
    "ignored_layers": IGNORED,
    "layer_types": LAYER_TYPES,
    "layer_scale": SCALES,
    "start_step": arg(0, 1, 5),
    "steps_per_epoch": arg(None, 1, 5),
    "beta": arg(None, 0.1, 1.0, 3.0),
    "l1_coefficient": arg(None, 0.0, 1e-3),
    "optimizer": OPTIMIZERS,
    "lr_scheduler": mixed(st.just(SCHEDULER)),
    "compensate": arg(True, False),
    "freeze_at": arg(None, 0, 3),
}


def build(cls, model, kwargs, needed=()):
    """``cls(model, **kwargs)`` under the property; the names an error may give are the arguments passed and
    the ones the constructor needs (``needed``)."""
    kwargs = {k: resolve(v, model) for k, v in kwargs.items()}
    if isinstance(kwargs.get("lr_scheduler"), torch.optim.lr_scheduler.LRScheduler) \
            and isinstance(kwargs.get("optimizer"), torch.optim.Optimizer):
        kwargs["lr_scheduler"] = torch.optim.lr_scheduler.CosineAnnealingLR(kwargs["optimizer"], T_max=10)
    pruner = attempt(lambda: cls(model, **kwargs), {*kwargs, *needed}, model)
    if pruner is not None:
        assert parametrized(model) == sorted(pruner.layers)
        assert set(pruner.state_dict()) >= {"step", "layers", "settings"}
    return pruner


def _steps(kwargs) -> int:
    value = kwargs.get("total_steps")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@props(120)
@given(kwargs=st.fixed_dictionaries({k: SOFT_ARGS[k] for k in ("final_threshold", "total_steps")},
                                    optional={k: v for k, v in SOFT_ARGS.items()
                                              if k not in ("final_threshold", "total_steps")}))
@example(kwargs={"final_threshold": 0.01, "schedule": lambda step: "x"})  # float('x') escaped raw
@example(kwargs={"final_threshold": 0.01, "lr_scheduler": "x", "optimizer": OPTIMIZER, "schedule": "lr",
                 "total_steps": 10})  # the scheduler was deep-copied and stepped: AttributeError
@example(kwargs={"final_threshold": 0.01, "total_steps": 10, "layer_types": (nn.Conv1d,)})
def test_soft_threshold_pruner_arguments(kwargs):
    # simulating the LR schedule runs every step: keep it short
    if "lr_scheduler" in kwargs and _steps(kwargs) > 1000:
        kwargs["total_steps"] = 100
    model = TinyCNN()
    before = model(X)
    pruner = build(SoftThresholdPruner, model, kwargs, needed=("final_threshold", "total_steps"))
    if pruner is not None and pruner.compensate:  # a built pruner keeps the model's function
        torch.testing.assert_close(model(X), before, atol=1e-5, rtol=1e-4)


LTP_ARGS = {
    "l0_weight": arg(0.0, 1.0, 1e-3),
    "temperature": arg(0.5, 1.0),
    "normalize": arg("count", "macs", "none", "COUNT", "flops"),
    "layer_weights": mixed(st.dictionaries(st.sampled_from(PRUNABLE), arg(0.0, 1.0, 2), max_size=3),
                           st.one_of(st.dictionaries(NAME, arg(1.0), max_size=2), BAD)),
    "initial_threshold": arg(0.0, 0.5, -1.0),
    "ignored_layers": IGNORED,
    "layer_types": LAYER_TYPES,
}


@props(80)
@given(kwargs=st.fixed_dictionaries({}, optional=LTP_ARGS),
       zeroed=st.sampled_from([None, None, "conv1", "fc"]))
@example(kwargs={}, zeroed="fc")  # conv1 and conv2 stayed parametrized when fc's unit could not be set
def test_learned_threshold_pruner_arguments(kwargs, zeroed):
    model = zeroed_model(zeroed)
    build(LearnedThresholdPruner, model, kwargs, needed=(zeroed,) if zeroed else ())


GMP_ARGS = {
    "start_step": arg(0, 1, 5),
    "initial_ratio": arg(0.0, 0.3, 0.9),
    "frequency": arg(1, 100),
    "global_pruning": arg(True, False),
    "ignored_layers": IGNORED,
    "layer_types": LAYER_TYPES,
}


@props(80)
@given(pruning_ratio=arg(0.0, 0.5, 0.9, 1.0), total_steps=arg(1, 10),
       kwargs=st.fixed_dictionaries({}, optional=GMP_ARGS))
def test_magnitude_pruner_arguments(pruning_ratio, total_steps, kwargs):
    build(MagnitudePruner, TinyCNN(), {"pruning_ratio": pruning_ratio, "total_steps": total_steps, **kwargs})


OCS_ARGS = {
    "target_flops_reduction": arg(0.3, 0.5),
    "ignored_layers": IGNORED,
    "layer_prune_limit": arg(0.5, 0.75),
    "monitor_start_epoch": arg(0, 2),
    "reg_start_epoch": arg(None, 3),
    "reg_init": arg(1e-4, 0.0),
    "reg_delta": arg(1e-4),
    "reg_interval": arg(1, 2),
    "stability_threshold": arg(0.999, 1.0),
    "prune_epoch_cap": arg(None, 0, 5),
    "regularizer": arg("shrink", "group_lasso", "lasso"),
    "optimizer": OPTIMIZERS,
    "flops_tolerance": arg(5e-4, 0.1),
    "cost_temperature": arg(1e6, 1.0),
    "prune_limit_rate": arg(1.0, 0.5),
    "importance_p": arg(1, 2, 2.0),
    "round_to": arg(None, 2, 3),
    "ignore_classifier": arg(True, False),
}


@props(15)
@pytest.mark.filterwarnings("ignore:OCSPruner. .* left unpruned:UserWarning")
@given(kwargs=st.fixed_dictionaries({}, optional=OCS_ARGS),
       inputs=st.sampled_from(["image", "image", "image", "wrong shape", "string"]))
@example(kwargs={"ignored_layers": ["conv1"]}, inputs="image")  # one rankable group left: refused, named
def test_ocs_pruner_arguments(kwargs, inputs):
    model = TinyCNN()
    example_inputs = {"image": torch.randn(1, 1, 8, 8), "wrong shape": torch.randn(1, 3, 8, 8),
                      "string": "x"}[inputs]
    kwargs = {k: resolve(v, model) for k, v in kwargs.items()}
    # a forward that fails on example_inputs is the documented RuntimeError naming example_inputs
    allow = (RuntimeError,) if inputs != "image" else ()
    before = tensors(model)
    pruner = attempt(lambda: OCSPruner(model, example_inputs, **kwargs), {*kwargs, "example_inputs"}, model,
                     allow=allow)
    if pruner is not None:  # tracing and probing the groups leave the model as it was
        assert_same_tensors(before, model)


# --- measure ------------------------------------------------------------------------------------------------

BATCHES = {
    "[x]": lambda: [X], "[(x, y)]": lambda: [(X, Y)], "[]": lambda: [], "iter([x, x])": lambda: iter([X, X]),
    "generator": lambda: (b for b in [X]), "[[x]]": lambda: [[X]], "[5]": lambda: [5],
    "[None]": lambda: [None],
    "[(5,)]": lambda: [(5,)], "'ab'": lambda: "ab", "5": lambda: 5, "None": lambda: None,
    "{'x': x}": lambda: {"x": X},
}
GOOD_BATCHES = ["[x]", "[(x, y)]", "iter([x, x])", "generator", "[[x]]"]
MEASURE_ARGS = {
    "e_ac_pj": arg(0.9, 0.0),
    "e_mac_pj": arg(4.6, 0.0),
    "per_channel": arg(True, False),
    "neuron_types": mixed(st.sampled_from([(neuron.IFNode,), (nn.ReLU,), (neuron.LIFNode, neuron.IFNode)]),
                          LAYER_TYPES),
    "max_batches": arg(None, 1, 2),
    "reference": mixed(st.sampled_from([TINY, None])),
    "products": arg(True, False),
    "sample_dim": arg(None, 0, 1, 2),
}


@props(25)
@given(batches=mixed(st.sampled_from(GOOD_BATCHES), st.sampled_from(sorted(BATCHES))),
       kwargs=st.fixed_dictionaries({}, optional=MEASURE_ARGS))
@example(batches="5", kwargs={})  # for batch in 5: "'int' object is not iterable"
@example(batches="[x]", kwargs={"reference": TINY, "neuron_types": (nn.Conv2d, nn.Linear)})  # 1 - n / 0
def test_measure_arguments(batches, kwargs):
    model = TinyCNN()
    model.train()
    kwargs = {k: resolve(v, model) for k, v in kwargs.items()}
    report = attempt(lambda: measure(model, BATCHES[batches](), **kwargs), {*kwargs, "batches"}, model)
    assert model.training, "measure left the model in eval mode"
    hooks = [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooks, f"measure left hooks on {hooks}"
    if report is not None:
        assert report.total["samples"] > 0


# --- models.create_model ------------------------------------------------------------------------------------

CHEAP_MODELS = ("mobilenet_v1", "ms_resnet18", "spike_driven_transformer_tiny", "qkformer_tiny",
                "spikformer_tiny")
WIDTH_MODELS = ("mobilenet_v1", "ms_resnet18")  # built at a small width (their default one is the full size)
MODEL_KWARGS = {"num_classes": arg(1, 10), "in_channels": arg(1, 3)}  # every builder takes them
OTHER_KWARGS = {"T": arg(1, 2), "neuron_type": arg("if", "lif"), "cnf": arg("ADD"),
                "stem": arg("cifar", "imagenet"), "image_size": arg(28, (28, 28)), "bogus": arg(1)}


@props(40)
@given(name=mixed(st.sampled_from(CHEAP_MODELS),
                  st.one_of(st.sampled_from(["resnet", "Resnet18", "", "vgg"]), st.text(max_size=8), BAD)),
       width=arg(0.0625, 0.125),
       structure=st.one_of(st.none(), st.none(), st.none(), BAD,
                           st.just({"format": "snn_lats.structure", "version": 1, "layers": {}})),
       kwargs=st.fixed_dictionaries({}, optional=MODEL_KWARGS),
       other=mixed(st.just({}), st.fixed_dictionaries({}, optional=OTHER_KWARGS)))
@example(name="mobilenet_v1", width=0.125, structure=None, kwargs={"num_classes": 2**63}, other={})
@example(name="mobilenet_v1", width=0.125, structure=5, kwargs={}, other={})
def test_create_model_arguments(name, width, structure, kwargs, other):
    kwargs = {**kwargs, **other}
    if name in WIDTH_MODELS:
        kwargs = {**kwargs, "width_multiplier": width}
    try:
        model = models.create_model(name, structure=structure, **kwargs)
    except (TypeError, ValueError) as exc:
        event(f"raised {type(exc).__name__}")
        names_one_of(exc, {*kwargs, "model", "structure"})
        return
    event("worked")
    assert isinstance(model, nn.Module)


# --- load_dense / export_dense ------------------------------------------------------------------------------

def dense_values(value):
    """Replacements for one entry of a dense state_dict: bad types, wrong shapes, NaN, other dtypes."""
    if not isinstance(value, torch.Tensor):
        return BAD
    return st.one_of(BAD, st.sampled_from([
        torch.zeros(3), torch.full_like(value, NAN) if value.is_floating_point() else value + 1,
        value.double(), value.long(), value.tolist(), torch.zeros(()), value[None]]))


@st.composite
def dense_mutations(draw, dense: dict[str, torch.Tensor]):
    """A mutated copy of ``dense`` and the keys it touched (None: the container itself)."""
    state, touched = dict(dense), set()
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        op = draw(st.sampled_from(["drop", "add", "replace", "replace"]))
        if op == "drop" and state:
            key = draw(st.sampled_from(sorted(state, key=repr)))
            del state[key]
        elif op == "add":
            key = draw(st.one_of(st.sampled_from(["conv1.parametrizations.weight.original", "fc.mask",
                                                  "bn2.weight", "conv1.weight"]), st.text(max_size=5),
                                 st.integers(-1, 1)))
            state[key] = draw(st.one_of(st.just(torch.zeros(2)), BAD))
        elif state:
            key = draw(st.sampled_from(sorted(state, key=repr)))
            state[key] = draw(dense_values(state[key]))
        else:
            continue
        touched.add(key)
    wrap = draw(st.sampled_from(["plain", "plain", "model", "state_dict", "bad"]))
    if wrap == "bad":
        return draw(st.one_of(BAD, st.just(list(state.items())), st.just({"model": 5}))), {None}
    return (state if wrap == "plain" else {wrap: state, "epoch": 3}), touched


@props(60)
@given(data=st.data(), threshold=st.sampled_from([0.0, 0.01]))
@example(data=None, threshold=0.01).via("a value that is not a tensor, in a plain state_dict")
def test_load_dense_mutated_state_dicts(data, threshold):
    model = TinyCNN()
    pruner = SoftThresholdPruner(model, threshold, "constant")
    dense = snn_lats.export_dense(TinyCNN())
    if data is None:  # the explicit example: fc.bias replaced by a string
        state, touched = {**dense, "fc.bias": "x"}, {"fc.bias"}
    else:
        state, touched = data.draw(dense_mutations(dense))
    names = {k for k in touched if k is not None} | ({"state_dict"} if None in touched else set())
    before = copy.deepcopy(pruner.state_dict())
    loaded = attempt(lambda: snn_lats.load_dense(model, state) or True, names, model, pruner=pruner)
    assert same(pruner.state_dict(), before)
    if loaded:
        exported = snn_lats.export_dense(model)
        assert set(exported) == set(dense)
        assert all(exported[k].shape == dense[k].shape for k in dense)


@props(30)
@given(which=st.sampled_from(["plain", "soft", "gmp", "ltp", "bad"]), bad=BAD, clone=arg(True, False),
       target=st.sampled_from(["plain", "soft", "gmp", "ltp", "bad"]))
@example(which="bad", bad="x", clone=True, target="plain")  # not a module: a TypeError naming model
def test_export_dense_and_load_dense_arguments(which, bad, clone, target):
    def prepared(kind):
        model = TinyCNN()
        {"plain": lambda: None, "bad": lambda: None,
         "soft": lambda: SoftThresholdPruner(model, 0.01, "constant"),
         "gmp": lambda: MagnitudePruner(model, 0.5, 10),
         "ltp": lambda: LearnedThresholdPruner(model)}[kind]()
        return model

    source = bad if which == "bad" else prepared(which)
    try:
        state = snn_lats.export_dense(source, clone=clone)
    except (TypeError, ValueError) as exc:
        names_one_of(exc, {"model", "clone"})
        return
    assert not any(".parametrizations." in k for k in state)
    model = bad if target == "bad" else prepared(target)
    if isinstance(model, nn.Module):
        attempt(lambda: snn_lats.load_dense(model, state), {"model"}, model)
    else:
        with pytest.raises((TypeError, ValueError)) as info:
            snn_lats.load_dense(model, state)
        names_one_of(info.value, {"model"})


# --- each pruner's load_state_dict --------------------------------------------------------------------------

def _soft_lr(model):
    model._optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return SoftThresholdPruner(model, schedule="lr", l1_coefficient=1e-3, optimizer=model._optimizer)


WEIGHT_PRUNERS = {
    "soft": lambda m: SoftThresholdPruner(m, 0.05, total_steps=10),
    "soft-lr": _soft_lr,
    "soft-frozen": lambda m: SoftThresholdPruner(m, 0.05, "constant", freeze_at=1, layer_scale={"fc": 0.5}),
    "gmp": lambda m: MagnitudePruner(m, 0.5, total_steps=10, frequency=1),
    "ltp": lambda m: LearnedThresholdPruner(m, normalize="macs", layer_weights={"fc": 2.0}),
}


def _advance(pruner, model, steps=2):
    for _ in range(steps):
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        if hasattr(model, "_optimizer"):
            model._optimizer.step()
        pruner.step()
        model.zero_grad()


def paths(obj, prefix=()):
    """Every path into nested dicts and lists (the root is ``()``)."""
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += paths(value, (*prefix, i))
    return out


BUMP = Make("(the value + 1)", None)
STATE_VALUES = st.one_of(
    BAD, st.just(BUMP), st.just(BUMP), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([torch.ones(2), torch.tensor(0.5), [], {}, [["conv2", 8]], [[0, 99]], [[0, 1], []]]),
    st.lists(st.sampled_from((*PRUNABLE, "other")), max_size=4),
    st.dictionaries(st.sampled_from((*PRUNABLE, "x")), st.one_of(st.integers(-1, 5), st.floats(0, 2),
                                                                  st.text(max_size=2)), max_size=3),
)


@st.composite
def state_mutations(draw, state: dict):
    """A mutated deep copy of a pruner's ``state`` and the names an error about it may give: the components
    of every path it touched ("state_dict" for the root)."""
    state = copy.deepcopy(state)
    names: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(state, dict):
            break
        path = draw(st.sampled_from(paths(state)))
        names |= {str(p) for p in path if isinstance(p, str)} or {"state_dict", "state"}
        op = draw(st.sampled_from(["set", "set", "drop", "add"])) if path else "set"
        parent = state
        for p in path[:-1]:
            parent = parent[p]
        if op == "drop":
            del parent[path[-1]]
            continue
        if op == "add":
            target = parent[path[-1]]
            if isinstance(target, dict):
                key = draw(st.sampled_from(["other", "conv1", "x"]))
                target[key] = copy.deepcopy(draw(STATE_VALUES))
                names.add(key)
            elif isinstance(target, list):
                target.append(copy.deepcopy(draw(STATE_VALUES)))
            continue
        value = copy.deepcopy(draw(STATE_VALUES))  # sampled constants are shared between examples
        current = parent[path[-1]] if path else state
        if value is BUMP:
            if not (isinstance(current, (int, float)) and not isinstance(current, bool)):
                continue
            value = current + 1
        if path:
            parent[path[-1]] = value
        else:
            state = value
    return state, names


def assert_usable(pruner, model) -> None:
    """After a load that worked: the pruner's figures are finite, and it steps (or refuses as documented)."""
    state = pruner.state_dict()
    assert all_finite({k: v for k, v in state.items() if k != "history"}), state
    assert all_finite(pruner.log_dict()), pruner.log_dict()
    try:
        _advance(pruner, model, steps=1)
    except RuntimeError as exc:  # the model's buffers were not loaded with this state: a stale-model refusal
        assert str(exc).startswith("step() refused"), exc
    assert all_finite(pruner.log_dict()), pruner.log_dict()


@pytest.mark.parametrize("kind", sorted(WEIGHT_PRUNERS))
@pytest.mark.filterwarnings("ignore:MagnitudePruner.load_state_dict. this state has no mask counts")
@props(60)
@given(data=st.data())
def test_weight_pruner_load_state_dict_mutated(kind, data):
    make = WEIGHT_PRUNERS[kind]
    source_model = TinyCNN()
    source = make(source_model)
    _advance(source, source_model)
    state = source.state_dict()
    check_model = TinyCNN()
    make(check_model).load_state_dict(copy.deepcopy(state))  # the real state loads
    model = TinyCNN()
    pruner = make(model)
    mutated, names = data.draw(state_mutations(state))
    loaded = attempt(lambda: pruner.load_state_dict(mutated) or True, names, model, pruner=pruner)
    if loaded:
        assert_usable(pruner, model)


@pytest.mark.parametrize("kind, path, value", [
    ("soft", ("step",), "x"),  # int('x') escaped raw after nothing was checked
    ("soft", ("threshold",), "x"),  # the step count was assigned before float('x') failed
    ("soft", ("scales", "fc"), "x"),
    ("soft", ("layers",), 5),  # list(5)
    ("soft", ("settings",), [1]),  # [1].keys()
    ("soft", ("threshold",), NAN),  # accepted: every layer's threshold became NaN
    ("soft-lr", ("schedule",), 5),  # 5.get('l1_coefficient')
    ("ltp", ("macs_per_weight", "fc"), "x"),  # int('x') after the step, l0_weight, ... were assigned
    ("ltp", ("normalize",), "flops"),  # accepted: regularization() then used no normalisation
    ("gmp", ("mask_zeros", "conv1"), "x"),
    ("gmp", ("mask_zeros", "conv1"), -1),
])
def test_weight_pruner_load_state_dict_regressions(kind, path, value):
    source_model = TinyCNN()
    source = WEIGHT_PRUNERS[kind](source_model)
    _advance(source, source_model)
    state = copy.deepcopy(source.state_dict())
    parent = state
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    model = TinyCNN()
    pruner = WEIGHT_PRUNERS[kind](model)
    before, saved = tensors(model), copy.deepcopy(pruner.state_dict())
    with pytest.raises((TypeError, ValueError)) as info:
        pruner.load_state_dict(state)
    names_one_of(info.value, {path[-1]})
    assert same(pruner.state_dict(), saved)
    assert_same_tensors(before, model)


@pytest.fixture(scope="module")
def ocs_pruner():
    """One OCSPruner on TinyCNN, scored for three epochs (tracing is the slow part: built once; every example
    starts by loading this state back)."""
    model = TinyCNN()
    pruner = OCSPruner(model, torch.randn(1, 1, 8, 8), 0.4, monitor_start_epoch=1, reg_start_epoch=2,
                       prune_epoch_cap=5)
    for epoch in range(3):
        pruner.epoch_start(epoch)
    return pruner, model, copy.deepcopy(pruner.state_dict())


@props(40)
@given(data=st.data())
def test_ocs_load_state_dict_mutated(ocs_pruner, data):
    pruner, model, pristine = ocs_pruner
    pruner.load_state_dict(copy.deepcopy(pristine))
    mutated, names = data.draw(state_mutations(pristine))
    loaded = attempt(lambda: pruner.load_state_dict(mutated) or True, names, model, pruner=pruner)
    if loaded:
        state = pruner.state_dict()
        assert all_finite({k: v for k, v in state.items() if k != "history"}), state
        assert all_finite(pruner.log_dict())
        assert 0 <= pruner.candidate_flops_reduction <= 1
        if not pruner.pruned:
            pruner.epoch_start((pruner._epoch if pruner._epoch is not None else 0) + 1)
            assert all_finite(pruner.log_dict())


@pytest.mark.parametrize("path, value", [
    (("selection", 0), [0, 99]),  # IndexError in the mask
    (("stability", "structures", 0), [[0, 1]]),  # loaded; the next epoch_start raised (1 group, not 2)
    (("groups", 1), np.float32(0.5)),  # "the truth value of an array ... is ambiguous"
    (("reg_lambda",), "x"),  # float('x') after target_flops_reduction, epoch, ... were assigned
    (("stability",), None),  # None['lag'] after the same
    (("epoch",), -1),  # accepted
    (("dense_flops",), 10),  # accepted: a reduction of -4415 ("target out of reach") at the next epoch
])
def test_ocs_load_state_dict_regressions(ocs_pruner, path, value):
    pruner, model, pristine = ocs_pruner
    pruner.load_state_dict(copy.deepcopy(pristine))
    state = copy.deepcopy(pristine)
    parent = state
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    saved = copy.deepcopy(pruner.state_dict())
    with pytest.raises((TypeError, ValueError)) as info:
        pruner.load_state_dict(state)
    names_one_of(info.value, {p for p in path if isinstance(p, str)})
    assert same(pruner.state_dict(), saved)


# --- experiments/train.py's command line --------------------------------------------------------------------

PARSER = train_args.get_args_parser()
PROG = PARSER.prog
OPTIONS = sorted(s for a in PARSER._actions for s in a.option_strings
                 if s not in ("-h", "--help", "--output-dir"))
LONG_NAMES = sorted(a.dest for a in PARSER._actions if a.dest not in ("help", "output_dir"))
TOKEN_VALUES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0", "0.5", "10", "3", "true", "cpu", "cuda:0",
                     "meta", "digits", "sew_resnet18", "resnet18", "spikformer_tiny", "s-lats", "gmp", "ocs",
                     "ltp", "lr", "fc", "conv1=2", "=1", "a=nan", '{"depths": 2}', "[1]", "{", "step",
                     "epoch", "fp16", "auto", "a\nb"]),
)
PAIRS = st.sampled_from([  # what a user types: the option and a value it takes
    ["--epochs", "3"], ["--lr", "0.05"], ["--seed", "1"], ["--method", "gmp"], ["--batch-size", "8"],
    ["--ignored-layers", "fc"], ["--trail"], ["--no-trail"], ["--device", "cpu"], ["--model", "resnet18"],
    ["--layer-scale", "conv1=2"], ["--amp", "bf16"], ["--workers", "0"], ["--data", "digits"],
    ["--sched-interval", "epoch"], ["--warmup-epochs", "1"], ["--pruning-ratio", "0.5"]])
TOKENS = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(["--bogus", "-x", "--lr=", "--T=2"]),
                   TOKEN_VALUES)
ARGV = st.lists(mixed(PAIRS, TOKENS.map(lambda t: [t])), max_size=5).map(lambda parts: sum(parts, []))
BASE = st.sampled_from([[], ["--final-threshold", "0.1"], ["--method", "gmp", "--epochs", "2"],
                        ["--method", "ocs", "--model", "resnet18", "--epochs", "4"]])


def parse_under_property(argv, out: str, capsys):
    """``parse_args(argv)``: the namespace, or None after argparse's usage and a one-line error (exit 2), no
    traceback; nothing is written to ``out``."""
    capsys.readouterr()
    try:
        parsed = train.parse_args(argv)
        event("parsed")
    except SystemExit as exc:
        event("usage error")
        err = capsys.readouterr().err
        assert exc.code == 2, (exc.code, err)
        usage = PARSER.format_usage()
        assert err.startswith(usage), err
        rest = err[len(usage):]
        assert rest.startswith(f"{PROG}: error: "), err
        assert rest.endswith("\n") and rest.count("\n") == 1, f"not a one-line error: {rest!r}"
        assert "Traceback" not in err
        parsed = None
    assert not os.path.exists(out), f"parse_args wrote {out}"
    return parsed


@props(100)
@given(base=BASE, argv=ARGV)
@example(base=[], argv=["--pretrained", "a\nb"])  # the error spread over two lines
def test_train_argv(base, argv, capsys):
    if any(len(t) >= 3 and "--help".startswith(t) for t in argv):  # argparse's prefix matching of --help
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        parse_under_property([*base, *argv, "--output-dir", out], out, capsys)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
              st.sampled_from(["digits", "resnet18", "gmp", "cpu", "fc", "conv1=2"])),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=5,
)
YAML_KEYS = st.one_of(st.sampled_from(LONG_NAMES),
                      st.sampled_from(LONG_NAMES).map(lambda k: k.replace("_", "-")),
                      st.text(max_size=5), st.integers(-2, 2), st.booleans())


VALID_CONFIG = {"epochs": 3, "lr": 0.1, "method": "gmp", "ignored_layers": ["fc"], "trail": True,
                "layer_scale": {"conv1": 2}, "data": "digits", "model-kwargs": None, "warmup_epochs": 1}
CONFIGS = mixed(st.fixed_dictionaries({}, optional={k: st.just(v) for k, v in VALID_CONFIG.items()}),
                st.one_of(st.dictionaries(YAML_KEYS, YAML_VALUES, max_size=5), YAML_VALUES))


@props(80)
@given(config=CONFIGS,
       raw=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=20),
                     st.sampled_from(["a: [1, 2", "- 1\n- 2", "42", "? [1]\n: 2", "epochs: 1\n\tlr: 2", "",
                                      b"epochs: \xff\xfe"])),
       base=BASE)
@example(config={}, raw="\x1f", base=[])  # yaml's ReaderError prints two lines
@example(config={}, raw=b"lr: \xff", base=[])  # not UTF-8
@example(config={1: 2, "a": 3}, raw=None, base=[])  # sorted() of int and str keys
def test_train_config_file(config, raw, base, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "config.yaml"), os.path.join(tmp, "out")
        text = yaml.safe_dump(config) if raw is None else raw
        with open(path, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        parse_under_property(["-c", path, *base, "--output-dir", out], out, capsys)
        assert sorted(os.listdir(tmp)) == ["config.yaml"]


def test_config_type_problem_is_none_exactly_for_what_parse_args_takes():
    """config_type_problem's verdicts on a few values of every kind of option (the helper the config
    property exercises through files)."""
    actions = {a.dest: a for a in PARSER._actions}
    cases = [("epochs", 3, None), ("epochs", True, "an integer"), ("epochs", 2.0, "an integer"),
             ("lr", 1, None), ("lr", "0.1", "a finite number"), ("lr", INF, "a finite number"),
             ("ignored_layers", ["fc"], None),
             ("ignored_layers", "fc", "a list of names"), ("trail", 1, "true or false"),
             ("layer_scale", {"fc": 2}, None), ("data", 5, "a string"),
             ("epochs", None, "set (it has a default)")]
    for dest, value, problem in cases:
        assert train_args.config_type_problem(actions[dest], value) == problem, (dest, value)
