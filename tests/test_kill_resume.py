"""Kill training at many points, inside each kind of file write included, resume, and compare with a run that
was never interrupted: every tensor of both checkpoints, the log and the summary."""
import csv
import json

import pytest
import torch

from experiments import train, utils
from snn_lats import io as snn_io
from tests.test_train import TINY

RUN = [*TINY, "--max-steps-per-epoch", "2", "--epochs", "3"]
TIMING = {"seconds", "img_per_s"}  # wall-clock columns: the only ones a resume may change


class Killed(BaseException):
    """SIGKILL, in-process: no except-clause catches it and nothing after it runs."""


def rows(out):
    with open(out / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def summary(out):
    data = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMING | {"config"}}


def assert_same_checkpoint(a, b):
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert a["epoch"] == b["epoch"] and a["step"] == b["step"] and a["best_acc1"] == b["best_acc1"]
    assert a["pruner"] == b["pruner"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    train.main([*RUN, "--output-dir", str(out)])
    return out


# (what is interrupted, which occurrence): every kind of write the run makes, and the middle of a step
KILLS = [("step", 3), ("checkpoint_best.pth", 1), ("checkpoint_last.pth", 1), ("checkpoint_last.pth", 2),
         ("log.csv", 2), ("config.yaml", 1), ("summary.json", 1)]


@pytest.mark.parametrize("target, occurrence", KILLS, ids=[f"{t}-{n}" for t, n in KILLS])
def test_a_kill_anywhere_then_resume_equals_the_uninterrupted_run(straight, tmp_path, monkeypatch, target,
                                                                     occurrence):
    out = tmp_path / "run"
    seen = {"n": 0}
    real_write, real_update = snn_io.atomic_write, utils.Progress.update

    def write(path, data):  # dies halfway through the write, leaving its temp file as SIGKILL does
        if str(path).endswith(target):
            seen["n"] += 1
            if seen["n"] == occurrence:
                tmp = f"{path}.tmp.999999"
                with open(tmp, "wb") as f:
                    f.write(b"half a file")
                raise Killed
        real_write(path, data)

    def update(self, step, *args):
        seen["n"] += 1
        if seen["n"] == occurrence:
            raise Killed
        real_update(self, step, *args)

    if target == "step":
        monkeypatch.setattr(utils.Progress, "update", update)
    else:
        for module in (snn_io, utils):
            monkeypatch.setattr(module, "atomic_write", write)
    with pytest.raises(Killed):
        train.main([*RUN, "--output-dir", str(out)])
    monkeypatch.undo()

    # a kill before the first checkpoint leaves nothing to resume: the rerun starts over (--resume auto)
    train.main([*RUN, "--output-dir", str(out), "--resume", "auto"])
    assert_same_checkpoint(straight / "checkpoint_last.pth", out / "checkpoint_last.pth")
    assert_same_checkpoint(straight / "checkpoint_best.pth", out / "checkpoint_best.pth")
    assert rows(out) == rows(straight)
    assert summary(out) == summary(straight)
    assert not list(out.glob("*.tmp.*"))  # the dead process's temp files are gone
