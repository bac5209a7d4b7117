"""Failure paths of the library's loaders: a failed load changes nothing, and a refused file says why without
suggesting to turn the safety check off."""
import os

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
