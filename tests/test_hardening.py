"""The failure paths a probe of careless and hostile input found (issue 25), one test per kind: a refused call
names what is wrong and leaves the model and the pruner exactly as they were; nothing wrong is accepted
silently; no raw traceback stands where a sentence belongs."""
import json
import math
import re
import warnings

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn
from torch.nn.utils import parametrize

import snn_lats
from snn_lats import (
    LearnedThresholdPruner,
    MagnitudePruner,
    SoftThresholdPruner,
    load_dense,
    squash_state_dict,
)
from snn_lats.schedules import LATSSchedule, PGHSchedule, SLATSSchedule, ThresholdSchedule
from snn_lats.trail import Trail, read_trail
from tests.conftest import TinyCNN

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRUNERS = {
    "soft": lambda m, **kw: SoftThresholdPruner(m, 0.01, "constant", **kw),
    "gmp": lambda m, **kw: MagnitudePruner(m, 0.5, 10, **kw),
    "ltp": lambda m, **kw: LearnedThresholdPruner(m, **kw),
}


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched_values(model, before):
    """Every tensor is as it was (NaN where it was NaN) and no key came or went: nothing was registered."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key].nan_to_num(), value.nan_to_num()), key


# --- damaging: a refused call must change nothing -----------------------------------------------------------

@pytest.mark.parametrize("kind", PRUNERS)
@pytest.mark.parametrize("how", ["weight_norm", "spectral_norm", "torch_prune", "old_weight_norm"])
def test_a_layer_parametrized_or_pruned_by_others_is_refused_by_name_before_anything_is_registered(kind, how):
    model = TinyCNN()
    if how == "weight_norm":
        nn.utils.parametrizations.weight_norm(model.conv2)
    elif how == "spectral_norm":
        nn.utils.parametrizations.spectral_norm(model.conv2)
    elif how == "torch_prune":
        torch_prune.l1_unstructured(model.conv2, "weight", 0.5)
    else:
        with pytest.warns(FutureWarning):
            nn.utils.weight_norm(model.conv2)
    before = snapshot(model)
    what = {"weight_norm": r"parametrized already \(_WeightNorm\).*remove_parametrizations",
            "spectral_norm": r"parametrized already \(_SpectralNorm\)",
            "torch_prune": r"pruned with torch.nn.utils.prune .*prune.remove\(layer, 'weight'\)",
            "old_weight_norm": r"torch.nn.utils.weight_norm applied .*remove_weight_norm"}[how]
    with pytest.raises(ValueError, match=rf"layer 'conv2' \(Conv2d\) .*{what}"):
        PRUNERS[kind](model)
    # conv1 comes first and is prunable: before the fix it was parametrized when conv2 failed
    assert not parametrize.is_parametrized(model.conv1)
    assert model.state_dict().keys() == before.keys()
    PRUNERS[kind](model, ignored_layers=["conv2"])  # what the message offers works


@pytest.mark.parametrize("kind", PRUNERS)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")  # nn.Linear(4, 0) itself
def test_a_layer_without_weights_is_refused_by_name(kind):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 0), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '1' \(Linear\) has no weights \(shape \(0, 4\)\)"):
        PRUNERS[kind](model)
    assert not parametrize.is_parametrized(model[0])


def test_an_optimizer_without_the_weights_is_refused_before_the_model_is_prepared():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer does not hold the pruned weights of 2 layer\(s\)"):
        SoftThresholdPruner(model, None, "lr", l1_coefficient=0.01, optimizer=other)
    assert not any(parametrize.is_parametrized(m) for m in model)
    groups = torch.optim.SGD([{"params": [model[0].weight], "lr": 0.1}, {"params": [model[1].weight]}],
                             lr=0.2)
    with pytest.raises(ValueError, match=r"different learning rates \[0.1, 0.2\]"):
        SoftThresholdPruner(model, None, "lr", l1_coefficient=0.01, optimizer=groups)
    assert not any(parametrize.is_parametrized(m) for m in model)
    SoftThresholdPruner(model, None, "lr", l1_coefficient=0.01, optimizer=torch.optim.SGD(model.parameters()))


@pytest.mark.parametrize("dtype, final", [(torch.float32, 1e300), (torch.float16, 1e5),
                                          (torch.bfloat16, 1e39)])
def test_a_threshold_the_weights_dtype_cannot_hold_is_refused_at_construction(dtype, final):
    model = nn.Sequential(nn.Linear(4, 4)).to(dtype)
    with pytest.raises(ValueError, match=rf"final_threshold = {re.escape(repr(final))} .* overflows the "
                                         rf"layer's {dtype}"):
        SoftThresholdPruner(model, final, "s-lats", 10)
    assert not parametrize.is_parametrized(model[0])
    with pytest.raises(ValueError, match=r"layer_scale\['0'\] = 1e\+300"):
        SoftThresholdPruner(model, 0.0, "constant", layer_scale={"0": 1e300})


def test_a_schedule_step_that_would_overflow_or_go_bad_is_refused_and_the_step_does_not_move():
    model = nn.Sequential(nn.Linear(4, 4)).half()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    pruner = SoftThresholdPruner(model, None, "lr", l1_coefficient=1e5, optimizer=optimizer)  # d: 1e5 > 65504
    with pytest.raises(ValueError, match=r"threshold at step 1 = 100000.0 .* overflows the layer's "
                                         r"torch.float16"):
        pruner.step()
    assert pruner.step_count == 0 and pruner.threshold == 0.0
    values = iter([0.1, math.nan])
    pruner = SoftThresholdPruner(nn.Sequential(nn.Linear(4, 4)), schedule=lambda step: next(values))
    with pytest.raises(ValueError, match=r"schedule\(1\) must be a finite number >= 0, got nan"):
        pruner.step()
    assert pruner.step_count == 0 and pruner.threshold == 0.1


def test_load_dense_refuses_what_model_load_state_dict_would_fail_on_or_convert_before_changing_anything():
    model = TinyCNN()
    SoftThresholdPruner(model, 0.01, "constant")
    before = snapshot(model)
    cases = {
        "bn1.bias": (torch.empty(8, device="meta"), "is on the meta device"),
        "conv1.bias": (torch.zeros(8).to_sparse(), "is a torch.sparse_coo tensor"),
        "conv2.weight": (torch.ones(8, 8, 3, 3, dtype=torch.int64),
                         r"is integer \(torch.int64\), the model's is floating-point"),
        "fc.weight": (torch.ones(10, 512, dtype=torch.bool), r"is bool \(torch.bool\)"),
        "fc.bias": (torch.ones(10, dtype=torch.complex64), r"is complex \(torch.complex64\)"),
        "bn1.num_batches_tracked": (torch.tensor(1.5), r"is floating-point \(torch.float32\), the model's is "
                                                       r"integer"),
    }
    for key, (value, message) in cases.items():
        dense = TinyCNN().state_dict()
        dense[key] = value
        with pytest.raises(ValueError, match=rf"load_dense: state_dict\['{key}'\] {message}"):
            load_dense(model, dense)
        assert_untouched_values(model, before)


# --- silent: accepted and wrong ----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, kwargs, ignored", [
    ("s-lats", {"total_steps": 10, "beta": 0.5}, "beta="),
    ("s-lats", {"total_steps": 10, "l1_coefficient": 0.5}, "l1_coefficient="),
    ("constant", {"total_steps": 10}, "total_steps="),
    ("pgh", {"total_steps": 10, "beta": 0.5, "steps_per_epoch": 2}, "steps_per_epoch="),
    ("lr", {"l1_coefficient": 0.5, "total_steps": 10}, "total_steps="),
])
def test_an_argument_the_named_schedule_ignores_is_refused(schedule, kwargs, ignored):
    model = nn.Sequential(nn.Linear(4, 4))
    final = None if schedule == "lr" else 0.1
    with pytest.raises(ValueError, match=rf"schedule='{schedule}' does not use {ignored} \(it takes "):
        SoftThresholdPruner(model, final, schedule, **kwargs)
    assert not parametrize.is_parametrized(model[0])


def test_arguments_beside_a_schedule_object_or_callable_must_agree_with_it():
    model = nn.Sequential(nn.Linear(4, 4))
    schedule = SLATSSchedule(0.1, total_steps=10)
    with pytest.raises(ValueError, match=r"given with final_threshold=, .* \(it has final_threshold=0.1"):
        SoftThresholdPruner(model, 0.2, schedule)
    with pytest.raises(ValueError, match=r"given with total_steps=, .* \(it has total_steps=10\)"):
        SoftThresholdPruner(model, None, schedule, 20)
    with pytest.raises(ValueError, match=r"given with beta=, .* \(it has none of them\)"):
        SoftThresholdPruner(model, None, schedule, beta=0.5)
    with pytest.raises(ValueError, match=r"schedule=a callable does not use final_threshold="):
        SoftThresholdPruner(model, 0.1, lambda step: 0.0)
    assert not parametrize.is_parametrized(model[0])
    SoftThresholdPruner(model, 0.1, schedule, 10)  # the same values are no conflict


def test_an_lr_scheduler_of_another_optimizer_or_one_the_schedule_ignores_is_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    with pytest.raises(ValueError, match="lr_scheduler= steps another optimizer than optimizer="):
        SoftThresholdPruner(model, 0.1, "lr", 10, optimizer=optimizer,
                            lr_scheduler=torch.optim.lr_scheduler.StepLR(other, 3))
    ours = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    with pytest.raises(ValueError, match=r"schedule='s-lats' does not use lr_scheduler="):
        SoftThresholdPruner(model, 0.1, "s-lats", 10, optimizer=optimizer, lr_scheduler=ours)
    with pytest.raises(ValueError, match=r"schedule='lr' does not use lr_scheduler=, total_steps="):
        SoftThresholdPruner(model, None, "lr", 10, l1_coefficient=0.1, optimizer=optimizer, lr_scheduler=ours)
    assert not parametrize.is_parametrized(model[0])


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.embed.weight  # tied to a layer no pruner prunes

    def forward(self, x):
        return self.head(self.b(self.a(x)))


@pytest.mark.parametrize("kind", PRUNERS)
def test_tied_weights_are_refused_by_name(kind):
    model = Tied()
    with pytest.raises(ValueError, match=r"layer 'a': its weight is one Parameter shared by \['a.weight', "
                                         r"'b.weight'\] \(tied weights\)"):
        PRUNERS[kind](model)
    with pytest.raises(ValueError, match=r"layer 'head': .* shared by \['embed.weight', 'head.weight'\]"):
        PRUNERS[kind](model, ignored_layers=["a", "b"])
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def test_with_every_user_of_a_tied_weight_ignored_the_rest_is_pruned_and_squashed_exactly():
    """What the refusal offers (the probe's case, squash() of two layers sharing one Parameter, changed the
    outputs by 0.08): the tied weight stays one Parameter, untouched, and squash() keeps the outputs."""
    model = Tied()
    model.extra = nn.Linear(4, 4)
    pruner = SoftThresholdPruner(model, 0.1, "constant", ignored_layers=["a", "b", "head"])
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected = model(x)
        pruner.squash()
        assert torch.equal(model(x), expected)
        assert model.a.weight is model.b.weight


@pytest.mark.parametrize("kind", PRUNERS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_refused_at_construction_and_warned_about_in_training(kind, value):
    model = TinyCNN()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = value
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"layer\(s\) \['conv2'\] have NaN or infinite weights"):
        PRUNERS[kind](model)
    assert_untouched_values(model, before)
    model = TinyCNN()
    pruner = PRUNERS[kind](model)
    with torch.no_grad():
        pruner.weights()[1][0, 0, 0, 0] = value  # the run diverges
    with pytest.warns(UserWarning, match=r"layer 'conv2' has NaN or infinite weights at step 1: the training "
                                         r"diverged"):
        pruner.step()


def test_load_dense_refuses_non_finite_weights_of_the_pruned_layers():
    model = TinyCNN()
    SoftThresholdPruner(model, 0.01, "constant")
    before = snapshot(model)
    dense = TinyCNN().state_dict()
    dense["fc.weight"][0, 0] = math.inf
    with pytest.raises(ValueError, match=r"NaN or infinite weights in \['fc.weight'\]"):
        load_dense(model, dense)
    assert_untouched_values(model, before)


@pytest.mark.parametrize("key, value, message", [
    ("conv1.parametrizations.weight.0.threshold", torch.tensor(math.nan), r"must be one finite number, got "
                                                                          r"tensor\(nan\)"),
    ("conv1.parametrizations.weight.0.scale", torch.tensor(math.inf), "must be one finite number"),
    ("conv1.parametrizations.weight.0.threshold", torch.ones(3), "must be one finite number, got tensor"),
    ("conv1.parametrizations.weight.0.mask", torch.ones(3, dtype=torch.bool), r"has shape \(3,\), the weight "
                                                                              r"\(8, 1, 3, 3\)"),
    ("conv1.parametrizations.weight.original", [1.0], r"must be a torch.Tensor, got \[1.0\]"),
])
def test_squash_state_dict_names_a_bad_parametrization_entry(key, value, message):
    model = TinyCNN()
    SoftThresholdPruner(model, 0.01, "constant", freeze_at=0 if key.endswith("mask") else None)
    state = model.state_dict()
    state[key] = value
    with pytest.raises((ValueError, TypeError), match=message):
        squash_state_dict(state)


@pytest.mark.parametrize("bad, error, message", [
    ([1, 2], TypeError, r"state_dict must be a state_dict \(a mapping of names to tensors\), got \[1, 2\]"),
    ({1: torch.ones(1)}, TypeError, "state_dict keys must be strings, got 1"),
])
def test_squash_state_dict_names_input_that_is_no_state_dict(bad, error, message):
    with pytest.raises(error, match=message):
        squash_state_dict(bad)


@pytest.mark.parametrize("kind", PRUNERS)
def test_a_squashed_pruner_loads_no_state(kind):
    model = TinyCNN()
    pruner = PRUNERS[kind](model)
    state = pruner.state_dict()
    pruner.squash()
    with pytest.raises(RuntimeError, match=r"load_state_dict\(\) called after squash\(\)"):
        pruner.load_state_dict(state)
    assert pruner.step_count == 0


@pytest.mark.parametrize("saver", PRUNERS)
@pytest.mark.parametrize("loader", PRUNERS)
def test_a_state_of_another_kind_of_pruner_is_refused(saver, loader):
    state = PRUNERS[saver](TinyCNN()).state_dict()
    pruner = PRUNERS[loader](TinyCNN())
    if saver == loader:
        pruner.load_state_dict(state)
        return
    names = {"soft": "SoftThresholdPruner", "gmp": "MagnitudePruner", "ltp": "LearnedThresholdPruner"}
    before = pruner.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not accepted with a warning
        with pytest.raises(ValueError, match=rf"state_dict\['kind'\] is '{names[saver]}': .* this is a "
                                             rf"{names[loader]}"):
            pruner.load_state_dict(state)
        del state["kind"]  # as saved by an older version: told apart by its settings
        with pytest.raises(ValueError, match=r"missing keys|with the settings .* another kind"):
            pruner.load_state_dict(state)
    assert pruner.state_dict() == before


def test_a_loaded_threshold_above_the_schedules_final_threshold_is_refused():
    pruner = SoftThresholdPruner(TinyCNN(), 0.1, "s-lats", 10)
    pruner.step()
    state = pruner.state_dict()
    for bad in (1e6, 0.1 * 1.01):
        state["threshold"] = bad
        with pytest.raises(ValueError, match=rf"state_dict\['threshold'\] = {bad!r} is above this schedule's "
                                             "final_threshold 0.1"):
            pruner.load_state_dict(state)
    assert pruner.step_count == 1
    state["threshold"] = 0.1  # D itself, as at the end of the schedule
    pruner.load_state_dict(state)


@pytest.mark.parametrize("schedule", [SLATSSchedule(0.1, 10), LATSSchedule(0.1, 10, 5),
                                      PGHSchedule(0.1, 10, 0.5), snn_lats.ConstantSchedule(0.1)])
@pytest.mark.parametrize("step, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("3", TypeError)])
def test_threshold_at_refuses_a_step_that_is_not_a_count(schedule, step, error):
    with pytest.raises(error, match=rf"step must be an int >= 0, got {step!r}"):
        schedule.threshold_at(step)
    assert schedule.threshold_at(10) == pytest.approx(0.1)


def test_a_users_schedule_subclass_gets_the_same_step_check():
    class Linear(ThresholdSchedule):
        def threshold_at(self, step):
            return 0.01 * step

    with pytest.raises(ValueError, match="step must be an int >= 0, got -2"):
        Linear().threshold_at(-2)
    assert Linear().threshold_at(3) == pytest.approx(0.03)


def test_read_trail_refuses_an_entry_whose_path_leaves_the_trail_folder(tmp_path):
    trail = Trail(tmp_path / "trail")
    trail.add(nn.Linear(2, 2).state_dict(), epoch=1, acc1=90.0, sparsity=0.5)
    index = tmp_path / "trail" / "index.json"
    entries = json.loads(index.read_text())
    for path in ("../../../etc/passwd", "/etc/passwd", "..", "sub/epoch_001.pth", "..\\x.pth"):
        entries[0]["path"] = path
        index.write_text(json.dumps(entries))
        with pytest.raises(ValueError, match=r"entry 0: path must be a file name inside the trail folder"):
            read_trail(tmp_path / "trail")
    for field, value, message in (("epoch", "1", "epoch must be an int"), ("acc1", None, "acc1 must be"),
                                  ("sparsity", 2.0, r"sparsity must be a number in \[0, 1\]")):
        bad = [{**entries[0], "path": "epoch_001.pth", field: value}]
        index.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            read_trail(tmp_path / "trail")


def test_pick_from_trail_copies_nothing_from_outside_the_trail(tmp_path, capsys):
    from experiments import pick_from_trail

    secret = tmp_path / "secret.txt"
    secret.write_text("not a checkpoint")
    trail = Trail(tmp_path / "trail")
    trail.add(nn.Linear(2, 2).state_dict(), epoch=1, acc1=90.0, sparsity=0.5)
    index = tmp_path / "trail" / "index.json"
    index.write_text(json.dumps([{"epoch": 1, "acc1": 90.0, "sparsity": 0.5, "path": "../secret.txt"}]))
    with pytest.raises(SystemExit) as exc:
        pick_from_trail.main([str(tmp_path / "trail"), "--min-acc", "50", "--copy-to", str(tmp_path / "x")])
    assert exc.value.code == 2 and "must be a file name inside the trail folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    index.write_text(json.dumps([{"epoch": 1, "acc1": 90.0, "sparsity": 0.5, "path": "link.pth"}]))
    (tmp_path / "trail" / "link.pth").symlink_to(secret)
    assert pick_from_trail.main([str(tmp_path / "trail"), "--min-acc", "50", "--copy-to",
                                 str(tmp_path / "x")]) == 2
    assert "outside the trail; nothing copied" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_lightning_callback_refuses_a_state_that_cannot_be_a_pruners():
    pytest.importorskip("lightning.pytorch", reason="lightning is not installed")
    from snn_lats.integrations.lightning import SoftThresholdPruning

    callback = SoftThresholdPruning(0.1)
    with pytest.raises(TypeError, match="state_dict must be a dict .*, got None"):
        callback.load_state_dict(None)
    with pytest.raises(ValueError, match=r"not a SoftThresholdPruner's state: it is missing the keys \["):
        callback.load_state_dict({"x": 1})
    assert callback._pending_state is None
    callback.load_state_dict({})  # what state_dict() gives before the pruner exists: nothing to restore
    assert callback._pending_state is None


# --- raw tracebacks where a sentence belongs ----------------------------------------------------------------

@pytest.mark.parametrize("method", ["regularization", "soft_l0", "band_fraction", "report", "log_dict"])
def test_ltp_after_squash_says_so(method):
    pruner = LearnedThresholdPruner(TinyCNN())
    pruner.squash()
    with pytest.raises(RuntimeError, match=r"\(\) called after squash\(\): the pruner no longer controls"):
        getattr(pruner, method)()


def test_a_state_whose_layers_come_in_another_order_names_them():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    pruner = SoftThresholdPruner(model, 0.1, "constant")
    state = pruner.state_dict()
    state["layers"] = ["1", "0"]
    with pytest.raises(ValueError, match=r"same layers in another order: layer 0 is '1' in the checkpoint, "
                                         r"'0' in this pruner"):
        pruner.load_state_dict(state)
    state["layers"] = ["0", "0", "1"]
    with pytest.raises(ValueError, match=r"3 entries for 2 names: a layer is listed twice"):
        pruner.load_state_dict(state)


def test_sparsity_report_of_a_meta_model_says_why_it_cannot_count():
    model = TinyCNN().to("meta")
    with pytest.raises(ValueError, match=r"layer 'conv1' has its weights on the meta device: .*to_empty"):
        snn_lats.sparsity_report(model)


def test_a_trail_on_an_existing_file_says_so(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"directory must be a folder .*, which is a file"):
        Trail(path)
    with pytest.raises(TypeError, match="directory must be a path, got 3"):
        Trail(3)
