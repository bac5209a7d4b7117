"""The training script's failure paths: what a kill leaves behind, a resume that would change the run, and bad
configuration, each a clear one-line error before anything is written."""
import errno
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

    def evaluate(model, loader, device, output=None):
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
    monkeypatch.setattr(train, "evaluate", lambda model, loader, device, output=None: {
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
    ("lr: [0.1]\n", r"lr must be a finite number, got \[0.1\]"),
    ("lr: .inf\n", r"lr must be a finite number, got inf"),
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


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "argument --lr: must be a finite number, got 'inf'"),  # nan, 0, -0.1 were refused
    (["--lr", "x"], "argument --lr: must be a number, got 'x'"),
    (["--final-threshold", "nan"], "argument --final-threshold: must be a finite number, got 'nan'"),
    (["--T", "0"], "--T must be >= 1 (time steps), got 0"),  # was a traceback from the model
    (["--momentum", "-0.5"], "--momentum must be >= 0, got -0.5"),  # was torch's ValueError
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1], got 1.5"),
    (["--width-multiplier", "0"], "--width-multiplier must be > 0, got 0.0"),
    (["--freeze-epoch", "-1"], "--freeze-epoch must be >= 0, got -1"),
])
def test_numbers_the_pipeline_cannot_use_are_refused_before_anything_is_built(tmp_path, capsys, argv,
                                                                              message):
    with pytest.raises(SystemExit) as exc:
        train.cli([*FAST, *argv, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.endswith(f"python -m experiments.train: error: {message}\n"), err
    assert not (tmp_path / "out").exists()


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m experiments.train: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_what_only_the_pipeline_can_refuse_is_one_line_and_exit_2_before_anything_is_written(tmp_path,
                                                                                               capsys):
    out = tmp_path / "out"
    # a typo the pruner catches (ignored_layers), a pretrained file that is no checkpoint
    assert train.cli([*FAST, "--ignored-layers", "fcc", "--output-dir", str(out)]) == 2
    assert "ignored_layers: 'fcc' names no module of the model; did you mean ['fc']?" in \
        _one_line_error(capsys.readouterr().err)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    assert train.cli([*FAST, "--pretrained", str(junk), "--output-dir", str(out)]) == 2
    assert f"checkpoint {str(junk)!r} is corrupt or truncated" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


class _FullDisk:
    """``open`` as on a disk that fills up: checkpoint writes after the first ``keep`` fail with ENOSPC."""

    def __init__(self, real, keep: int):
        self.real, self.keep = real, keep

    def __call__(self, path, mode="r", *args, **kwargs):
        f = self.real(path, mode, *args, **kwargs)
        if "w" in mode and "checkpoint" in str(path):
            self.keep -= 1
            if self.keep < 0:
                def fail(data):
                    raise OSError(errno.ENOSPC, "No space left on device")
                f.write = fail
        return f


def test_a_full_disk_during_a_checkpoint_write_is_one_line_naming_the_file_and_the_run_resumes(tmp_path,
                                                                                                monkeypatch,
                                                                                                capsys):
    import snn_lats.io

    out = tmp_path / "run"
    monkeypatch.setattr(snn_lats.io, "open", _FullDisk(open, keep=2), raising=False)  # epoch 1's best, last
    assert train.cli([*FAST, "--epochs", "2", "--output-dir", str(out)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"cannot write {out / 'checkpoint_best.pth'}: No space left on device; free some space" in line \
        or f"cannot write {out / 'checkpoint_last.pth'}: No space left on device; free some space" in line
    assert "then continue with --resume auto" in line
    assert torch.load(out / "checkpoint_last.pth", weights_only=True)["epoch"] == 0  # epoch 1's, whole
    assert not list(out.glob("*.tmp.*"))
    monkeypatch.undo()
    assert train.cli([*FAST, "--epochs", "2", "--output-dir", str(out), "--resume", "auto"]) == 0
    assert torch.load(out / "checkpoint_last.pth", weights_only=True)["epoch"] == 1


def test_a_read_only_output_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from experiments import utils

    def refuse(folder):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".lock"))

    monkeypatch.setattr(utils, "lock_run_dir", refuse)  # as root, chmod cannot make a folder read-only
    out = tmp_path / "ro"
    assert train.cli([*FAST, "--epochs", "1", "--output-dir", str(out)]) == 2
    assert f"cannot write in --output-dir {out}: Permission denied; make the folder writable" in \
        _one_line_error(capsys.readouterr().err)
