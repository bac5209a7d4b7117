"""experiments.sweep --executor submitit-local / slurm: every run a submitit job that runs the local
executor's command lines, with its resume semantics (finished runs skipped, a killed run continued from its
checkpoint), the executor's flags checked up front (one-line errors, nothing submitted) and --dry-run's plan
per run.

The trainer and the benchmark are stand-ins (as in test_sweep_reliability) so that the jobs take seconds: the
stand-in trainer writes one checkpoint per epoch ({"epoch": N}) and continues from it under --resume auto."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import sweep
from tests.conftest import HANG
from tests.test_sweep import write_spec
from tests.test_sweep_reliability import FAKE_MEASURE
from tests.test_train import ENV, ROOT

pytest.importorskip("submitit")

# FAKE_EPOCHS epochs (default 3), FAKE_SLEEP seconds after each one's checkpoint; each call is recorded in
# OUTPUT_DIR/../calls.txt
FAKE_TRAIN = r"""
import json, os, sys, time
argv = sys.argv[1:]
out = argv[argv.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
    f.write(" ".join([os.path.basename(out), *argv[argv.index("--output-dir") + 2:]]) + "\n")
checkpoint = os.path.join(out, "checkpoint_last.pth")
start = 0
if "--resume" in argv:
    with open(checkpoint) as f:
        start = json.load(f)["epoch"]
log = os.path.join(out, "log.csv")
if not os.path.exists(log):
    with open(log, "w") as f:
        f.write("epoch,seconds,l1_coefficient,started_at\n")
for epoch in range(start + 1, int(os.environ.get("FAKE_EPOCHS", "3")) + 1):
    with open(log, "a") as f:
        f.write(f"{epoch},1.5,,{start}\n")
    with open(checkpoint + ".tmp", "w") as f:
        json.dump({"epoch": epoch}, f)
    os.replace(checkpoint + ".tmp", checkpoint)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"acc1": 50.0, "best_acc1": 51.0, "sparsity": 0.5, "macs": 100, "flops_reduction": 0.0}, f)
"""
# python DRIVER TRAIN MEASURE SWEEP-ARGS...: experiments.sweep with the stand-ins (the commands a job runs are
# built by the sweep, so the jobs run them too)
DRIVER = r"""
import sys
from experiments import sweep
train, measure = sys.argv[1], sys.argv[2]
real_train, real_measure = sweep.train_command, sweep.measure_command
sweep.train_command = lambda *a: [sys.executable, train, *real_train(*a)[3:]]
sweep.measure_command = lambda *a: [sys.executable, measure, *real_measure(*a)[3:]]
sys.exit(sweep.main(sys.argv[3:]))
"""
METHODS = {"dense": {}, "gmp": {"pruning_ratio": [0.8]}}
NAMES = ["dense_seed=0", "gmp_pruning_ratio=0.8_seed=0"]


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """The stand-ins' folder; experiments.sweep (in this process) runs them, and its jobs with it."""
    files = {"fake_train.py": FAKE_TRAIN, "fake_measure.py": FAKE_MEASURE, "driver.py": DRIVER}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    real_train, real_measure = sweep.train_command, sweep.measure_command
    monkeypatch.setattr(sweep, "train_command",
                        lambda *a: [sys.executable, str(tmp_path / "fake_train.py"), *real_train(*a)[3:]])
    monkeypatch.setattr(sweep, "measure_command",
                        lambda *a: [sys.executable, str(tmp_path / "fake_measure.py"), *real_measure(*a)[3:]])
    for key in ("PYTHONPATH", "OMP_NUM_THREADS"):  # main sets PYTHONPATH for its jobs: undone after the test
        monkeypatch.setenv(key, ENV[key])
    return tmp_path


def sweep_cmd(tools: Path, config: Path, *args: str) -> list[str]:
    """The sweep as its own process, with the stand-ins."""
    return [sys.executable, str(tools / "driver.py"), str(tools / "fake_train.py"),
            str(tools / "fake_measure.py"), "-c", str(config), *args]


def run(config, *args, capsys) -> tuple[int, str]:
    """experiments.sweep's main here (the stand-ins patched in): its exit code and its output."""
    capsys.readouterr()
    code = sweep.main(["-c", str(config), *args])
    return code, capsys.readouterr().out


def calls(out: Path) -> list[str]:
    path = out / "runs" / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def jobs(out: Path) -> list[str]:
    """The submitit job folders (one per submitted job) under the default --slurm-log-dir."""
    folder = out / "submitit"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "%j")


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_submitit_sweep_writes_what_the_local_one_does_and_a_rerun_submits_nothing(tools, tmp_path, capsys):
    config = write_spec(tmp_path, METHODS)
    out, local_out = tmp_path / "sweep", tmp_path / "local"
    code, stdout = run(config, "--executor", "submitit-local", "--jobs", "2", capsys=capsys)
    assert code == 0, stdout[-3000:]
    assert "2 of 2 runs finished" in stdout
    assert stdout.count("submitted ") == 2 and len(jobs(out)) == 2
    code, stdout = run(config, "--output-dir", str(local_out), capsys=capsys)
    assert code == 0, stdout[-3000:]

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in (root / "runs").rglob("*") if p.is_file())

    assert files(out) == files(local_out)  # result.json, summary.json, sparsity/, log.csv, the logs
    for name in NAMES:
        for rel in ("summary.json", "sparsity/sparsity.json", "log.csv"):
            assert (out / "runs" / name / rel).read_text() == (local_out / "runs" / name / rel).read_text()
        ours, theirs = (json.loads((d / "runs" / name / "result.json").read_text()) for d in (out, local_out))
        assert {**ours, "wall_seconds": 0} == {**theirs, "wall_seconds": 0}
    strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows(out)]
    assert strip == [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows(local_out)]
    assert [r["run"] for r in rows(out)] == NAMES

    # (b) the rerun: both finished, nothing submitted, nothing trained again
    before, submitted, results = calls(out), jobs(out), (out / "results.csv").read_text()
    code, stdout = run(config, "--executor", "submitit-local", capsys=capsys)
    assert code == 0, stdout[-3000:]
    assert "2 runs, 2 done, 0 to run" in stdout and "submitted" not in stdout
    assert calls(out) == before and jobs(out) == submitted
    assert (out / "results.csv").read_text() == results


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, /proc")
def test_a_job_killed_after_its_first_checkpoint_continues_from_it_on_the_rerun(tools, tmp_path, capsys):
    config = write_spec(tmp_path, {"dense": {}})
    out = tmp_path / "sweep"
    run_dir = out / "runs" / "dense_seed=0"
    proc = subprocess.Popen(sweep_cmd(tools, config, "--executor", "submitit-local"), cwd=ROOT,
                            env={**ENV, "FAKE_SLEEP": "60"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # the job's processes too
    checkpoint = run_dir / "checkpoint_last.pth"
    try:
        deadline = time.time() + HANG
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (run_dir / "checkpoint_last.pth").exists(), "the job wrote no checkpoint"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, the job's controller, the job, its trainer
        proc.wait()
    assert json.loads((run_dir / "checkpoint_last.pth").read_text()) == {"epoch": 1}
    assert not (run_dir / "summary.json").exists() and not (run_dir / "result.json").exists()

    code, stdout = run(config, "--executor", "submitit-local", capsys=capsys)
    assert code == 0, stdout[-3000:]
    assert "1 runs, 0 done, 1 to run" in stdout and "start dense_seed=0 (resuming)" in stdout
    first, second = calls(out)
    assert "--resume" not in first and second.endswith("--resume auto")
    with open(run_dir / "log.csv", newline="") as f:
        log = [(r["epoch"], r["started_at"]) for r in csv.DictReader(f)]
    assert log == [("1", "0"), ("2", "1"), ("3", "1")]  # epochs 2 and 3 from the saved epoch 1, once each
    assert len(jobs(out)) == 2 and [r["run"] for r in rows(out)] == ["dense_seed=0"]


def test_the_checkpoint_of_a_job_resubmits_the_same_run(tmp_path):
    """submitit calls checkpoint() on SLURM's timeout/preemption signal and requeues what it returns."""
    from submitit.helpers import DelayedSubmission

    spec = sweep.load_spec(write_spec(tmp_path, METHODS))
    job = sweep.run_job(sweep.expand(spec)[0], spec, tmp_path / "sweep", tmp_path / "base.yaml", 1)
    submitted = sweep.SubmittedRun(job)
    again = submitted.checkpoint()
    assert isinstance(again, DelayedSubmission) and again.function is submitted and again.args == ()


@pytest.mark.parametrize("args, message", [
    (["--executor", "slurm"], "--executor slurm needs --partition NAME"),
    (["--executor", "slurm", "--partition", "gpu", "--gpus-per-run", "-1"],
     "--gpus-per-run must be an integer >= 0 (GPUs per run), got -1"),
    (["--executor", "slurm", "--partition", "gpu", "--time-limit", "0"],
     "--time-limit must be an integer >= 1 (minutes per run), got 0"),
    (["--executor", "submitit-local", "--time-limit", "-5"], "--time-limit must be an integer >= 1"),
    (["--executor", "submitit-local", "--partition", "gpu"], "--partition: only with --executor slurm"),
    (["--partition", "gpu"], "--partition: only with --executor slurm or submitit-local"),
    (["--executor", "slurm", "--partition", "a b"], "--partition must be a SLURM partition name"),
])
def test_bad_executor_flags_are_one_line_errors_before_anything_is_submitted(tmp_path, capsys, args, message):
    config = write_spec(tmp_path, METHODS)
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["-c", str(config), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "sweep").exists()  # no runs folder, no submitit folder: nothing submitted


def test_slurm_without_sbatch_or_submitit_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    config = write_spec(tmp_path, METHODS)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["-c", str(config), "--executor", "slurm", "--partition", "gpu"])
    assert exit_.value.code == 2 and "sbatch and srun not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["-c", str(config), "--executor", "submitit-local"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "pip install submitit" in err
    assert not (tmp_path / "sweep").exists()


def test_a_slurm_job_asks_for_the_partition_gpus_time_and_cpus_and_the_requeue_signal(tmp_path, monkeypatch):
    srun = tmp_path / "srun"  # submitit's SlurmExecutor looks for it
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    settings = {"partition": "gpu", "gpus": 2, "time": 90, "cpus": 8, "logs": tmp_path / "logs"}
    text = sweep.make_executor("slurm", settings)._make_submission_file_text("CMD", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=8", "--signal=USR2@90",
                 "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in text, text
    settings["gpus"] = 0
    assert "gpus" not in sweep.make_executor("slurm", settings)._make_submission_file_text("CMD", "uid")


def test_dry_run_with_slurm_prints_what_each_run_would_be_submitted_with(tmp_path, capsys):
    config = write_spec(tmp_path, METHODS)
    done = tmp_path / "sweep" / "runs" / NAMES[0]
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    assert sweep.main(["-c", str(config), "--executor", "slurm", "--partition", "gpu", "--gpus-per-run", "2",
                       "--time-limit", "90", "--threads", "8", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2 runs, 1 done, 1 to run (all at once, 8 thread(s) each)" in lines[0]
    assert lines[1].startswith("executor slurm: partition=gpu gpus=2 time=90 min cpus=8 per run; submitit")
    assert lines[2].split() == ["done", NAMES[0], "(finished:", "not", "submitted)"]
    assert lines[3].split() == ["todo", NAMES[1], "->", "slurm:", "partition=gpu", "gpus=2", "time=90", "min",
                                "cpus=8"]
    assert not (tmp_path / "sweep" / "submitit").exists()
