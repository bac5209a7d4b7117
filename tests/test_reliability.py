"""Failure paths of the library's loaders: a failed load changes nothing, and a refused file says why without
suggesting to turn the safety check off."""
import os
import re

import pytest
import torch

from snn_lats import LearnedThresholdPruner, MagnitudePruner, SoftThresholdPruner, load_dense
from snn_lats.checkpoint import load_checkpoint
from tests.conftest import TinyCNN


class Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_a_malicious_checkpoint_is_refused_as_such_and_never_run(tmp_path, capfd):
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(ValueError) as exc:
        load_checkpoint(path)
    message = str(exc.value)
    assert "holds objects that are not allowed" in message and "system" in message
    assert "weights_only" not in message and "corrupt" not in message  # no advice to turn the check off
    assert "must never run" not in capfd.readouterr().out


def test_a_truncated_checkpoint_is_called_corrupt(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(path)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_load_dense_that_fails_late_changes_nothing():
    model = TinyCNN()
    SoftThresholdPruner(model, 0.01, "constant")
    before = snapshot(model)
    dense = TinyCNN().state_dict()
    dense["bn1.running_mean"] = torch.zeros(3)  # the last key checked today: after every weight was assigned
    with pytest.raises(ValueError, match=r"bn1.running_mean: checkpoint \(3,\) vs model \(8,\)"):
        load_dense(model, dense)
    for key, value in snapshot(model).items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("make", [lambda m: MagnitudePruner(m, pruning_ratio=0.5, total_steps=10),
                                  lambda m: LearnedThresholdPruner(m)], ids=["magnitude", "ltp"])
def test_load_dense_names_pruners_it_cannot_serve_before_changing_anything(make):
    model = TinyCNN()
    make(model)
    before = snapshot(model)
    with pytest.raises(ValueError,
                       match="has no right_inverse; load_dense serves SoftThresholdPruner's layers"):
        load_dense(model, TinyCNN().state_dict())
    for key, value in snapshot(model).items():
        assert torch.equal(value, before[key]), key


def settings_case(kind):
    if kind == "soft":
        return (lambda **kw: SoftThresholdPruner(TinyCNN(), kw.get("d", 0.1), "s-lats", kw.get("n", 10)),
                {"d": 0.2}, "final_threshold=0.1; this one has final_threshold=0.2")
    if kind == "soft-steps":
        return (lambda **kw: SoftThresholdPruner(TinyCNN(), 0.1, "s-lats", kw.get("n", 10)),
                {"n": 20}, "total_steps=10; this one has total_steps=20")
    if kind == "pgh":
        return (lambda **kw: SoftThresholdPruner(TinyCNN(), 0.1, "pgh", 10, beta=kw.get("beta", 0.5)),
                {"beta": 0.1}, "beta=0.5; this one has beta=0.1")
    if kind == "schedule":
        return (lambda **kw: SoftThresholdPruner(TinyCNN(), 0.1, kw.get("s", "s-lats"), 10,
                                                 **({"beta": 0.5} if kw.get("s") == "pgh" else {})),
                {"s": "pgh"}, "built with schedule='SLATSSchedule'; this one has schedule='PGHSchedule'")
    if kind == "gmp":
        return (lambda **kw: MagnitudePruner(TinyCNN(), pruning_ratio=kw.get("r", 0.5), total_steps=10),
                {"r": 0.9}, "pruning_ratio=0.5; this one has pruning_ratio=0.9")
    return (lambda **kw: LearnedThresholdPruner(TinyCNN(), l0_weight=kw.get("l0", 1.0)),
            {"l0": 2.0}, "l0_weight=1.0; this one has l0_weight=2.0")


@pytest.mark.parametrize("kind", ["soft", "soft-steps", "pgh", "schedule", "gmp", "ltp"])
def test_a_pruner_refuses_a_state_saved_with_other_settings_and_changes_nothing(kind):
    make, other, message = settings_case(kind)
    saved = make()
    for _ in range(3):
        saved.step()
    state = saved.state_dict()
    pruner = make(**other)
    pruner.step()
    before = pruner.state_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        pruner.load_state_dict(state)
    assert pruner.state_dict() == before and pruner.step_count == 1
    same = make()
    same.load_state_dict(state)  # the same settings load, and continue from step 3
    assert same.step_count == 3


def test_a_state_of_other_layers_changes_nothing():
    saved = SoftThresholdPruner(TinyCNN(), 0.1, "s-lats", 10, ignored_layers=["fc"])
    saved.step()
    pruner = SoftThresholdPruner(TinyCNN(), 0.1, "s-lats", 10)
    with pytest.raises(ValueError, match="saved for different layers"):
        pruner.load_state_dict(saved.state_dict())
    assert pruner.step_count == 0
