"""snn_lats._checks, and that every public entry point checks its arguments through it: a wrong type is a
TypeError, a right type out of range a ValueError, and the message reads "{name} must be <allowed>, got
{value!r}". Bools are not numbers, integer-likes are ints, NaN and ±inf are not finite numbers."""
import math
import re

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import nn
from torch.nn.utils import parametrize

import snn_lats
from snn_lats import _checks
from snn_lats._checks import (
    check_bool,
    check_choice,
    check_classes,
    check_int,
    check_names,
    check_number,
    check_type,
)
from snn_lats.metrics import SynapseCounter, measure
from snn_lats.schedules import (
    CallableSchedule,
    ConstantSchedule,
    LATSSchedule,
    LRProportionalSchedule,
    PGHSchedule,
)
from snn_lats.snn import MultiStepLIFNode, use_fused_neurons
from snn_lats.structured import OCSPruner, StabilityTracker, group_saliency
from snn_lats.trail import Trail, pick

NAN, INF = float("nan"), float("inf")
MESSAGE = re.compile(r"^[\w\[\]'()]+ must be .+, got .+")  # "{name} must be <allowed>, got {value!r}"


def _raises(error, message, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises exactly ``error`` with a message starting with ``message``."""
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    assert text.startswith(message), text
    assert MESSAGE.match(text), text
    return text


# --- the helpers --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, kwargs, error, message", [
    (True, {}, TypeError, "x must be a finite number, got True"),
    (np.bool_(False), {}, TypeError, "x must be a finite number, got np.False_"),
    ("0.5", {}, TypeError, "x must be a finite number, got '0.5'"),
    (None, {}, TypeError, "x must be a finite number, got None"),
    (torch.tensor(0.5), {}, TypeError, "x must be a finite number, got tensor(0.5000)"),
    (NAN, {}, ValueError, "x must be a finite number, got nan"),
    (INF, {"minimum": 0}, ValueError, "x must be a finite number >= 0, got inf"),
    (-INF, {}, ValueError, "x must be a finite number, got -inf"),
    (0, {"above": 0}, ValueError, "x must be a finite number > 0, got 0"),
    (-1e-9, {"minimum": 0}, ValueError, "x must be a finite number >= 0, got -1e-09"),
    (1.0, {"above": 0, "below": 1}, ValueError, "x must be a number in (0, 1), got 1.0"),
    (0, {"above": 0, "maximum": 1}, ValueError, "x must be a number in (0, 1], got 0"),
    (1, {"minimum": 0, "below": 1}, ValueError, "x must be a number in [0, 1), got 1"),
    (NAN, {"minimum": 0, "maximum": 1}, ValueError, "x must be a number in [0, 1], got nan"),
    (2, {"maximum": 1}, ValueError, "x must be a finite number <= 1, got 2"),
    ("1", {"above": 1, "optional": True}, TypeError, "x must be a finite number > 1 or None, got '1'"),
])
def test_check_number_rejects(value, kwargs, error, message):
    with pytest.raises(error) as info:
        check_number("x", value, **kwargs)
    assert str(info.value) == message


def test_check_number_accepts_reals_and_returns_a_float():
    for value, kwargs in [(3, {}), (np.int64(3), {}), (np.float32(0.25), {"above": 0, "below": 1}),
                          (0.0, {"minimum": 0}), (1, {"above": 0, "maximum": 1}), (-2.5, {})]:
        out = check_number("x", value, **kwargs)
        assert type(out) is float and out == float(value)
    assert check_number("x", None, optional=True) is None


@pytest.mark.parametrize("value, kwargs, error, message", [
    (10.0, {}, TypeError, "n must be an int, got 10.0"),
    (True, {"minimum": 0}, TypeError, "n must be an int >= 0, got True"),
    (np.float32(3), {}, TypeError, "n must be an int, got np.float32(3.0)"),
    ("3", {"minimum": 0, "optional": True}, TypeError, "n must be an int >= 0 or None, got '3'"),
    (None, {"minimum": 1}, TypeError, "n must be an int >= 1, got None"),
    (0, {"minimum": 1}, ValueError, "n must be an int >= 1, got 0"),
    (np.int64(-1), {"minimum": 0}, ValueError, "n must be an int >= 0, got np.int64(-1)"),
])
def test_check_int_rejects(value, kwargs, error, message):
    with pytest.raises(error) as info:
        check_int("n", value, **kwargs)
    assert str(info.value) == message


def test_check_int_accepts_integer_likes_and_returns_a_plain_int():
    for value in (10, np.int64(10), np.uint8(10), torch.tensor(10)):
        out = check_int("n", value, minimum=1)
        assert type(out) is int and out == 10
    assert check_int("n", None, optional=True) is None


def test_check_bool_takes_only_bools():
    assert check_bool("c", True) is True and check_bool("c", np.bool_(False)) is False
    for value, shown in (("no", "'no'"), (1, "1"), (0, "0"), (None, "None")):
        with pytest.raises(TypeError) as info:
            check_bool("compensate", value)
        assert str(info.value) == f"compensate must be True or False, got {shown}"


def test_check_choice_types_and_values():
    assert check_choice("m", "macs", ("count", "macs")) == "macs"
    with pytest.raises(ValueError, match=r"^m must be one of \('count', 'macs'\), got 'params'$"):
        check_choice("m", "params", ("count", "macs"))
    with pytest.raises(TypeError, match=r"^m must be one of \('count', 'macs'\), got 3$"):
        check_choice("m", 3, ("count", "macs"))
    out = check_choice("p", np.int64(2), (1, 2))
    assert type(out) is int and out == 2
    for value in (2.0, True):  # a float or a bool is not an int choice, though 2.0 == 2 and True == 1
        with pytest.raises(TypeError, match=rf"^p must be one of \(1, 2\), got {value}$"):
            check_choice("p", value, (1, 2))
    with pytest.raises(ValueError, match=r"^p must be one of \(1, 2\), got 3$"):
        check_choice("p", 3, (1, 2))
    assert check_choice("d", None, (None, 0, 1)) is None
    with pytest.raises(TypeError, match=r"^d must be one of \(None, 0, 1\), got False$"):
        check_choice("d", False, (None, 0, 1))


def test_check_names_wants_a_list_not_a_bare_name():
    with pytest.raises(TypeError) as info:
        check_names("ignored_layers", "fc", modules=True)
    assert str(info.value) == ("ignored_layers must be a list of layer names or modules, got 'fc' (a bare "
                               "string): pass ['fc']")
    with pytest.raises(TypeError, match=r"^ignored_layers must be .*, got Linear\(.*\(a bare module\): pass "
                                        r"\[module\]$"):
        check_names("ignored_layers", nn.Linear(2, 2), modules=True)
    with pytest.raises(TypeError, match=r"^ignored_layers\[1\] must be a str or nn.Module, got 3$"):
        check_names("ignored_layers", ["fc", 3], modules=True)
    with pytest.raises(TypeError, match=r"^names\[0\] must be a str, got Linear"):
        check_names("names", [nn.Linear(2, 2)])
    with pytest.raises(TypeError, match=r"^names must be a list of layer names, got 5$"):
        check_names("names", 5)
    assert check_names("names", None) == ()
    assert check_names("names", (n for n in ["a", "b"])) == ("a", "b")


def test_check_classes_and_check_type():
    assert check_classes("layer_types", [nn.Linear], nn.Module, "nn.Module") == (nn.Linear,)
    with pytest.raises(TypeError, match=r"^layer_types must be a non-empty sequence of nn.Module classes, "
                                        r"got Linear \(a bare class\): pass \(Linear,\)$"):
        check_classes("layer_types", nn.Linear, nn.Module, "nn.Module")
    with pytest.raises(ValueError, match=r"^layer_types must be a non-empty sequence of nn.Module classes, "
                                         r"got \(\)$"):
        check_classes("layer_types", (), nn.Module, "nn.Module")
    with pytest.raises(TypeError, match=r"^layer_types\[1\] must be a subclass of nn.Module, "
                                        r"got <class 'int'>$"):
        check_classes("layer_types", (nn.Linear, int), nn.Module, "nn.Module")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    assert check_type("optimizer", opt, torch.optim.Optimizer, "a torch.optim.Optimizer") is opt
    with pytest.raises(TypeError, match=r"^optimizer must be a torch.optim.Optimizer or None, got 'sgd'$"):
        check_type("optimizer", "sgd", torch.optim.Optimizer, "a torch.optim.Optimizer", optional=True)


def test_a_long_repr_is_shown_as_the_type_name():
    assert _checks.shown(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == "a Sequential"
    assert _checks.shown([1.0]) == "[1.0]"


# --- every entry point routes through them ------------------------------------------------------------------

def _mlp():
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def _soft(**kw):
    return snn_lats.SoftThresholdPruner(_mlp(), **{"final_threshold": 0.1, "total_steps": 10, **kw})


def _gmp(**kw):
    return snn_lats.MagnitudePruner(_mlp(), **{"pruning_ratio": 0.5, "total_steps": 10, **kw})


def _ltp(**kw):
    return snn_lats.LearnedThresholdPruner(_mlp(), **kw)


def _ocs(**kw):
    return OCSPruner(_Conv(), torch.randn(1, 3, 4, 4), **{"target_flops_reduction": 0.5, **kw})


BARE = "ignored_layers must be a list of layer names or modules, got '0' (a bare string): pass ['0']"
PRUNER_CASES = [
    # SoftThresholdPruner (and its schedules)
    (_soft, {"final_threshold": NAN}, ValueError, "final_threshold must be a finite number >= 0, got nan"),
    (_soft, {"final_threshold": INF}, ValueError, "final_threshold must be a finite number >= 0, got inf"),
    (_soft, {"final_threshold": True}, TypeError, "final_threshold must be a finite number >= 0, got True"),
    (_soft, {"final_threshold": "0.1"}, TypeError, "final_threshold must be a finite number >= 0, got '0.1'"),
    (_soft, {"total_steps": 10.0}, TypeError, "total_steps must be an int >= 1 or None, got 10.0"),
    (_soft, {"total_steps": np.int64(0)}, ValueError,
     "total_steps must be an int >= 1 or None, got np.int64(0)"),
    (_soft, {"start_step": -1}, ValueError, "start_step must be an int >= 0, got -1"),
    (_soft, {"start_step": 2.0}, TypeError, "start_step must be an int >= 0, got 2.0"),
    (_soft, {"start_step": 10}, ValueError, "start_step must be < total_steps=10, got 10"),
    (_soft, {"compensate": "no"}, TypeError, "compensate must be True or False, got 'no'"),
    (_soft, {"compensate": 1}, TypeError, "compensate must be True or False, got 1"),
    (_soft, {"freeze_at": 1.5}, TypeError, "freeze_at must be an int >= 0 or None, got 1.5"),
    (_soft, {"freeze_at": -1}, ValueError, "freeze_at must be an int >= 0 or None, got -1"),
    (_soft, {"schedule": "pgh", "beta": NAN}, ValueError, "beta must be a finite number > 0, got nan"),
    (_soft, {"schedule": "pgh", "beta": 1.0}, ValueError, "beta must be a finite number > 0 and != 1"),
    (_soft, {"schedule": "pgh", "beta": "0.5"}, TypeError, "beta must be a finite number > 0, got '0.5'"),
    (_soft, {"schedule": "lats", "steps_per_epoch": 0}, ValueError,
     "steps_per_epoch must be an int >= 1 or None, got 0"),
    (_soft, {"final_threshold": None, "schedule": "lr", "l1_coefficient": NAN}, ValueError,
     "l1_coefficient must be a finite number >= 0, got nan"),
    (_soft, {"layer_scale": {"0": NAN}}, ValueError,
     "layer_scale['0'] must be a finite number >= 0, got nan"),
    (_soft, {"layer_scale": {"0": "2"}}, TypeError, "layer_scale['0'] must be a finite number >= 0, got '2'"),
    (_soft, {"layer_scale": [1.0]}, TypeError, "layer_scale must be a dict, a callable or None, got [1.0]"),
    (_soft, {"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer or None, got 'sgd'"),
    (_soft, {"ignored_layers": "0"}, TypeError, BARE),
    (_soft, {"ignored_layers": [3]}, TypeError, "ignored_layers[0] must be a str or nn.Module, got 3"),
    (_soft, {"layer_types": nn.Linear}, TypeError,
     "layer_types must be a non-empty sequence of nn.Module classes, got Linear (a bare class)"),
    # MagnitudePruner
    (_gmp, {"pruning_ratio": NAN}, ValueError, "pruning_ratio must be a number in [0, 1), got nan"),
    (_gmp, {"pruning_ratio": "0.5"}, TypeError, "pruning_ratio must be a number in [0, 1), got '0.5'"),
    (_gmp, {"initial_ratio": INF}, ValueError, "initial_ratio must be a number in [0, 1), got inf"),
    (_gmp, {"initial_ratio": 0.6}, ValueError, "initial_ratio must be <= pruning_ratio=0.5, got 0.6"),
    (_gmp, {"total_steps": True}, TypeError, "total_steps must be an int >= 1, got True"),
    (_gmp, {"start_step": 10}, ValueError, "start_step must be < total_steps=10, got 10"),
    (_gmp, {"frequency": 0}, ValueError, "frequency must be an int >= 1, got 0"),
    (_gmp, {"global_pruning": "yes"}, TypeError, "global_pruning must be True or False, got 'yes'"),
    (_gmp, {"ignored_layers": "0"}, TypeError, BARE),
    # LearnedThresholdPruner
    (_ltp, {"initial_threshold": NAN}, ValueError, "initial_threshold must be a finite number, got nan"),
    (_ltp, {"initial_threshold": "0.1"}, TypeError, "initial_threshold must be a finite number, got '0.1'"),
    (_ltp, {"l0_weight": NAN}, ValueError, "l0_weight must be a finite number >= 0, got nan"),
    (_ltp, {"l0_weight": -0.1}, ValueError, "l0_weight must be a finite number >= 0, got -0.1"),
    (_ltp, {"temperature": INF}, ValueError, "temperature must be a finite number > 0, got inf"),
    (_ltp, {"temperature": 0}, ValueError, "temperature must be a finite number > 0, got 0"),
    (_ltp, {"temperature": True}, TypeError, "temperature must be a finite number > 0, got True"),
    (_ltp, {"normalize": "params"}, ValueError,
     "normalize must be one of ('count', 'macs', 'none'), got 'params'"),
    (_ltp, {"normalize": 3}, TypeError, "normalize must be one of ('count', 'macs', 'none'), got 3"),
    (_ltp, {"layer_weights": {"0": NAN}}, ValueError,
     "layer_weights['0'] must be a finite number >= 0, got nan"),
    (_ltp, {"layer_weights": [("0", 1.0)]}, TypeError,
     "layer_weights must be a dict {layer name: weight} or None, got [('0', 1.0)]"),
    (_ltp, {"ignored_layers": "0"}, TypeError, BARE),
    # OCSPruner
    (_ocs, {"target_flops_reduction": NAN}, ValueError,
     "target_flops_reduction must be a number in (0, 1), got nan"),
    (_ocs, {"target_flops_reduction": "0.5"}, TypeError,
     "target_flops_reduction must be a number in (0, 1), got '0.5'"),
    (_ocs, {"layer_prune_limit": True}, TypeError, "layer_prune_limit must be a number in (0, 1), got True"),
    (_ocs, {"reg_init": NAN}, ValueError, "reg_init must be a finite number >= 0, got nan"),
    (_ocs, {"reg_delta": -1.0}, ValueError, "reg_delta must be a finite number >= 0, got -1.0"),
    (_ocs, {"reg_interval": 0}, ValueError, "reg_interval must be an int >= 1, got 0"),
    (_ocs, {"monitor_start_epoch": 1.0}, TypeError, "monitor_start_epoch must be an int >= 0, got 1.0"),
    (_ocs, {"reg_start_epoch": -1}, ValueError, "reg_start_epoch must be an int >= 0 or None, got -1"),
    (_ocs, {"stability_threshold": 1.5}, ValueError,
     "stability_threshold must be a number in (0, 1], got 1.5"),
    (_ocs, {"prune_epoch_cap": 1}, ValueError,
     "prune_epoch_cap must be >= monitor_start_epoch=2 (pruning needs a scored selection), got 1"),
    (_ocs, {"flops_tolerance": NAN}, ValueError, "flops_tolerance must be a number in (0, 1), got nan"),
    (_ocs, {"cost_temperature": INF}, ValueError, "cost_temperature must be a finite number > 0, got inf"),
    (_ocs, {"prune_limit_rate": NAN}, ValueError, "prune_limit_rate must be a finite number > 0, got nan"),
    (_ocs, {"importance_p": 2.0}, TypeError, "importance_p must be one of (1, 2), got 2.0"),
    (_ocs, {"importance_p": 3}, ValueError, "importance_p must be one of (1, 2), got 3"),
    (_ocs, {"round_to": 0}, ValueError, "round_to must be an int >= 1 or None, got 0"),
    (_ocs, {"ignore_classifier": "no"}, TypeError, "ignore_classifier must be True or False, got 'no'"),
    (_ocs, {"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer or None, got 'sgd'"),
    (_ocs, {"regularizer": 3}, TypeError,
     "regularizer must be one of ('shrink', 'group_lasso') or a ChannelRegularizer, got 3"),
    (_ocs, {"regularizer": "l1"}, ValueError,
     "regularizer must be one of ('shrink', 'group_lasso') or a ChannelRegularizer, got 'l1'"),
    (_ocs, {"ignored_layers": "fc"}, TypeError,
     "ignored_layers must be a list of layer names or modules, got 'fc' (a bare string): pass ['fc']"),
]


@pytest.mark.parametrize("build, kwargs, error, message", PRUNER_CASES,
                         ids=[f"{c[0].__name__}-{next(iter(c[1]))}" for c in PRUNER_CASES])
def test_pruner_constructors_check_through_the_helpers(build, kwargs, error, message, monkeypatch):
    built = []
    monkeypatch.setattr(parametrize, "register_parametrization",
                        lambda *a, **k: built.append(a))  # a rejected constructor prepares nothing
    _raises(error, message, build, **kwargs)
    assert not built


def test_model_must_be_a_module_everywhere():
    for fn in (lambda: snn_lats.SoftThresholdPruner("resnet50", 0.1, total_steps=10),
               lambda: snn_lats.MagnitudePruner("resnet50", 0.5, 10),
               lambda: snn_lats.LearnedThresholdPruner("resnet50"),
               lambda: OCSPruner("resnet50", torch.randn(1, 3, 4, 4)),
               lambda: measure("resnet50", [torch.rand(2, 4)]),
               lambda: snn_lats.suggest_threshold("resnet50", 0.5),
               lambda: use_fused_neurons("resnet50")):
        _raises(TypeError, "model must be a torch.nn.Module, got 'resnet50'", fn)


OTHER_CASES = [
    # measure: energies and the other settings
    (lambda: measure(_mlp(), [torch.rand(2, 4)], e_ac_pj=NAN), ValueError,
     "e_ac_pj must be a finite number >= 0, got nan"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], e_ac_pj=INF), ValueError,
     "e_ac_pj must be a finite number >= 0, got inf"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], e_mac_pj=NAN), ValueError,
     "e_mac_pj must be a finite number >= 0, got nan"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], e_mac_pj=-4.6), ValueError,
     "e_mac_pj must be a finite number >= 0, got -4.6"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], e_ac_pj="0.9"), TypeError,
     "e_ac_pj must be a finite number >= 0, got '0.9'"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], max_batches=0), ValueError,
     "max_batches must be an int >= 1 or None, got 0"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], per_channel="yes"), TypeError,
     "per_channel must be True or False, got 'yes'"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], sample_dim=True), TypeError,
     "sample_dim must be one of (None, 0, 1), got True"),
    (lambda: measure(_mlp(), [torch.rand(2, 4)], neuron_types=neuron.LIFNode), TypeError,
     "neuron_types must be a non-empty sequence of nn.Module classes, got LIFNode (a bare class)"),
    (lambda: SynapseCounter.for_module(nn.ReLU()), TypeError,
     "module must be a layer SynapseCounter supports: nn.Conv1d, nn.Conv2d, nn.Conv3d and nn.Linear, "
     "got ReLU()"),
    # schedules on their own
    (lambda: ConstantSchedule(0.1, start_step=1.5), TypeError, "start_step must be an int >= 0, got 1.5"),
    (lambda: LATSSchedule(0.1, 10, steps_per_epoch=0), ValueError,
     "steps_per_epoch must be an int >= 1, got 0"),
    (lambda: PGHSchedule(0.1, 10, beta=INF), ValueError, "beta must be a finite number > 0, got inf"),
    (lambda: LRProportionalSchedule(NAN), ValueError, "l1_coefficient must be a finite number >= 0, got nan"),
    (lambda: CallableSchedule(5), TypeError, "schedule must be a callable, got 5"),
    (lambda: CallableSchedule(lambda step: NAN).threshold_at(3), ValueError,
     "schedule(3) must be a finite number >= 0, got nan"),
    # thresholds
    (lambda: snn_lats.suggest_threshold(_mlp(), NAN), ValueError,
     "sparsity must be a number in [0, 1), got nan"),
    (lambda: snn_lats.suggest_threshold(_mlp(), 0.5, ignored_layers="0"), TypeError, BARE),
    (lambda: snn_lats.relative_weight_scale(_mlp(), 3), TypeError,
     "statistic must be one of ('std', 'max'), got 3"),
    (lambda: snn_lats.sparsity_report(_mlp(), ignored_layers="0"), TypeError, BARE),
    # fused neurons
    (lambda: MultiStepLIFNode(tau=NAN), ValueError, "tau must be a finite number > 1 or None, got nan"),
    (lambda: MultiStepLIFNode(tau=True), TypeError, "tau must be a finite number > 1 or None, got True"),
    (lambda: MultiStepLIFNode(backend=3), TypeError, "backend must be one of ('cupy', 'torch', None), got 3"),
    (lambda: MultiStepLIFNode(decay_input="yes"), TypeError, "decay_input must be True or False, got 'yes'"),
    (lambda: MultiStepLIFNode(surrogate_function="relu"), ValueError,
     "surrogate_function must be surrogate.ATan, surrogate.Sigmoid or one of ('atan', 'sigmoid'), "
     "got 'relu'"),
    (lambda: MultiStepLIFNode(surrogate_function=3), TypeError,
     "surrogate_function must be surrogate.ATan, surrogate.Sigmoid or one of ('atan', 'sigmoid'), got 3"),
    (lambda: use_fused_neurons(_mlp(), backend="triton"), ValueError,
     "backend must be one of ('cupy', 'torch', None), got 'triton'"),
    # trails, OCS helpers, LTP's param groups, attach and state dicts
    (lambda: pick([], min_sparsity=NAN), ValueError,
     "min_sparsity must be a number in [0, 1] or None, got nan"),
    (lambda: pick([], min_acc="90"), TypeError, "min_acc must be a finite number or None, got '90'"),
    (lambda: StabilityTracker(lag=0), ValueError, "lag must be an int >= 1, got 0"),
    (lambda: group_saliency(None, 3), ValueError, "p must be one of (1, 2), got 3"),
    (lambda: _ltp().param_groups(threshold_lr=NAN), ValueError,
     "threshold_lr must be a finite number > 0, got nan"),
    (lambda: _soft().attach("sgd"), TypeError, "optimizer must be a torch.optim.Optimizer, got 'sgd'"),
    (lambda: _gmp().load_state_dict([]), TypeError, "state_dict must be a dict, got []"),
]


@pytest.mark.parametrize("fn, error, message", OTHER_CASES, ids=[m.split(" ")[0] for _, _, m in OTHER_CASES])
def test_other_entry_points_check_through_the_helpers(fn, error, message):
    _raises(error, message, fn)


def test_trail_add_checks_its_figures(tmp_path):
    trail = Trail(tmp_path)
    _raises(ValueError, "epoch must be an int >= 0, got -1", trail.add, {}, epoch=-1, acc1=1.0, sparsity=0.5)
    _raises(ValueError, "acc1 must be a finite number, got nan", trail.add, {}, epoch=1, acc1=NAN,
            sparsity=0.5)
    _raises(ValueError, "sparsity must be a number in [0, 1], got 1.5", trail.add, {}, epoch=1, acc1=1.0,
            sparsity=1.5)
    assert list(tmp_path.iterdir()) == []
    assert trail.add({}, epoch=np.int64(2), acc1=np.float32(50.0), sparsity=0.5).path == "epoch_002.pth"


def test_lightning_callback_checks_its_own_arguments():
    lightning = pytest.importorskip("snn_lats.integrations.lightning")
    _raises(TypeError, "squash_on_fit_end must be True or False, got 'yes'", lightning.SoftThresholdPruning,
            final_threshold=0.1, squash_on_fit_end="yes")
    _raises(TypeError, "total_steps must be an int >= 1 or None, got 10.0", lightning.SoftThresholdPruning,
            final_threshold=0.1, total_steps=10.0)


# --- integer-likes are ints, numpy floats are numbers: same pruning as with plain Python values -------------

def test_numpy_integers_and_floats_are_accepted_like_python_ones():
    torch.manual_seed(0)
    a = snn_lats.SoftThresholdPruner(_mlp(), 0.25, "s-lats", 10, start_step=2)
    torch.manual_seed(0)
    b = snn_lats.SoftThresholdPruner(_mlp(), np.float32(0.25), "s-lats", np.int64(10), start_step=np.int64(2))
    assert type(b.schedule.total_steps) is int and type(b.schedule.start_step) is int
    assert [a.schedule.threshold_at(s) for s in range(12)] == [b.schedule.threshold_at(s) for s in range(12)]
    c = snn_lats.SoftThresholdPruner(_mlp(), np.float32(0.25), "lats", np.int64(10), start_step=np.int64(0),
                                     steps_per_epoch=np.int64(5), freeze_at=np.int64(8))
    assert c.schedule.final_threshold == 0.25 and c.schedule.steps_per_epoch == 5 and c.freeze_at == 8
    gmp = snn_lats.MagnitudePruner(_mlp(), np.float64(0.5), np.int64(10), start_step=np.int64(0),
                                   frequency=np.int32(2))
    assert (gmp.total_steps, gmp.start_step, gmp.frequency) == (10, 0, 2)
    assert all(type(v) is int for v in (gmp.total_steps, gmp.start_step, gmp.frequency))
    ocs = _ocs(monitor_start_epoch=np.int64(0), importance_p=np.int64(1),
               target_flops_reduction=np.float32(0.5))
    assert type(ocs.monitor_start_epoch) is int and ocs.importance_p == 1
    assert ocs.target_flops_reduction == 0.5
    ltp = _ltp(initial_threshold=np.float32(0.5), temperature=np.float64(0.25), l0_weight=np.int64(2))
    assert (ltp.l0_weight, ltp.temperature) == (2.0, 0.25)
    assert [float(t.detach()) for t in ltp.thresholds()] == [0.5, 0.5]
    report = measure(_mlp(), [torch.rand(2, 4)], e_ac_pj=np.float32(0.5), e_mac_pj=np.int64(4),
                     max_batches=np.int64(1))
    assert report.total["dense_energy_pj"] == 4 * report.total["dense_macs"]
    assert not math.isnan(report.total["energy_pj"])
