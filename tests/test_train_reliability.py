"""The training script's failure paths: what a kill leaves behind, a resume that would change the run, and bad
configuration, each a clear one-line error before anything is written."""
import json
import re

import pytest
import torch

from experiments import train
from tests.test_train import TINY

FAST = [*TINY, "--max-steps-per-epoch", "2"]


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no except-clause catches it."""


def test_a_kill_between_the_two_checkpoint_writes_leaves_the_best_checkpoint_the_log_agrees_with(tmp_path,
                                                                                                   monkeypatch):
    accuracies = iter([50.0, 60.0, 55.0, 70.0, 65.0, 80.0])  # epoch 2 is a new best: both files are written

    def evaluate(model, loader, device):
        return {"loss": 1.0, "acc1": next(accuracies), "acc5": 90.0, "firing_rate": 0.1, "layer_firing": {}}

    saved = train.save_checkpoint

    def save(obj, path):
        saved(obj, path)
        if obj["epoch"] == 1:  # epoch 2's first write done, killed before the second
            raise Killed

    monkeypatch.setattr(train, "evaluate", evaluate)
    monkeypatch.setattr(train, "save_checkpoint", save)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train.main([*FAST, "--epochs", "3", "--output-dir", str(out)])
    rows = (out / "log.csv").read_text().splitlines()[1:]
    logged_best = max(range(len(rows)), key=lambda i: float(rows[i].split(",")[3]))
    best = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert best["epoch"] == logged_best == 1  # the best file is the epoch the log says is best

    monkeypatch.setattr(train, "save_checkpoint", saved)
    accuracies = iter([60.0, 55.0])  # epochs 2 and 3 again, as a resumed run sees them
    monkeypatch.setattr(train, "evaluate", lambda model, loader, device: {
        "loss": 1.0, "acc1": next(accuracies), "acc5": 90.0, "firing_rate": 0.1, "layer_firing": {}})
    train.main([*FAST, "--epochs", "3", "--output-dir", str(out), "--resume", "auto"])
    summary = json.loads((out / "summary.json").read_text())
    best = torch.load(out / "checkpoint_best.pth", weights_only=True)
    rows = [r.split(",") for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert summary["best_acc1"] == best["best_acc1"] == 60.0 and best["epoch"] == 1


def test_a_resume_that_changes_the_run_is_refused_naming_the_keys(tmp_path):
    out = tmp_path / "run"
    train.main([*FAST, "--epochs", "1", "--output-dir", str(out)])
    config = (out / "config.yaml").read_text()
    events = sorted(p.name for p in (out / "tensorboard").iterdir())
    with pytest.raises(ValueError, match=r"changes the run: epochs \(checkpoint 1, now 3\), final_threshold "
                                         r"\(checkpoint 0.05, now 0.3\)"):
        train.main([*FAST, "--epochs", "3", "--final-threshold", "0.3", "--output-dir", str(out),
                    "--resume", "auto"])
    assert (out / "config.yaml").read_text() == config  # a refused resume writes nothing
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == events
    # what may change on a resume: workers, progress output, where the data and the run live
    train.main([*FAST, "--epochs", "1", "--output-dir", str(out), "--resume", "auto", "--workers", "1",
                "--log-every", "7"])


@pytest.mark.parametrize("text, message", [
    ("epochs: [1\n", r"not valid YAML \(line 2\)"),
    ("5\n", "must be a mapping of option: value, got a int"),
    ("epochs: 2.5\n", "epochs must be an integer, got 2.5"),
    ("epochs: true\n", "epochs must be an integer, got True"),
    ("batch_size: 32.5\n", "batch_size must be an integer, got 32.5"),
    ("lr: [0.1]\n", r"lr must be a number, got \[0.1\]"),
    ("model: 3\n", "model must be a string, got 3"),
    ("trail: 1\n", "trail must be true or false, got 1"),
    ("ignored_layers: fc\n", "ignored_layers must be a list of names, got 'fc'"),
])
def test_bad_config_values_are_one_line_errors_naming_the_key(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exc:
        train.main(["-c", str(config), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert re.search(rf"--config {re.escape(str(config))}: {message}", err), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "-1"], "--workers must be >= 0, got -1"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--max-steps-per-epoch", "0"], "--max-steps-per-epoch must be > 0, got 0"),
    (["--device", "foo"], "--device must be a torch device such as cpu, cuda or cuda:1, got 'foo'"),
    (["--log-every", "0"], "--log-every must be > 0, got 0"),
])
def test_bad_runtime_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        train.main([*FAST, *argv, "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main([*FAST, "--device", "cuda", "--output-dir", str(tmp_path / "out")])
    assert "--device cuda: no CUDA GPU is available here" in capsys.readouterr().err


def test_an_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(SystemExit):
        train.main([*FAST, "--output-dir", str(tmp_path / "out")])
    assert f"--output-dir {tmp_path / 'out'}: exists and is not a directory" in capsys.readouterr().err


def test_a_second_trainer_on_the_same_output_dir_is_refused(tmp_path, capsys):
    from experiments import utils

    out = tmp_path / "run"
    out.mkdir()
    held = utils.lock_run_dir(out)  # another process's lock (flock is per open file, so this stands for it)
    try:
        with pytest.raises(SystemExit) as exc:
            train.main([*FAST, "--epochs", "1", "--output-dir", str(out)])
        assert exc.value.code == 2
        assert "is in use by another training process" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        held.close()
    train.main([*FAST, "--epochs", "1", "--output-dir", str(out)])  # free again
