"""experiments.sweep when things go wrong: its trainer dies with it (even after SIGKILL), a run directory in
use by another trainer, truncated run files, stale temp files."""
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from experiments import sweep
from tests.test_sweep import BASE, write_spec
from tests.test_train import ENV, ROOT

LINUX = sys.platform.startswith("linux")

# Stand-ins for experiments.train and experiments.benchmark_sparsity that write the files the sweep reads in a
# fraction of a second (no torch). The trainer records each call in OUTPUT_DIR/../calls.txt.
FAKE_TRAIN = r"""
import json, os, sys
argv = sys.argv[1:]
out = argv[argv.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
    f.write(" ".join([os.path.basename(out), *argv[argv.index("--output-dir") + 2:]]) + "\n")
if os.environ.get("FAKE_BUSY") and os.environ["FAKE_BUSY"] in out:
    sys.stderr.write(f"python -m experiments.train: error: --output-dir {out} is in use by another training "
                     "process (pid 4242); wait for it or stop it\n")
    sys.exit(2)
with open(os.path.join(out, "log.csv"), "w") as f:
    f.write("epoch,seconds,l1_coefficient\n1,1.5,\n")
with open(os.path.join(out, "checkpoint_last.pth"), "w") as f:
    f.write("weights")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"acc1": 50.0, "best_acc1": 51.0, "sparsity": 0.5, "macs": 100, "flops_reduction": 0.0}, f)
"""
FAKE_MEASURE = r"""
import json, os, sys
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
total = {"samples": 10, "firing_rate": 0.1, "sops": 1000.0, "macs": 100.0, "energy_pj": 1e7,
         "energy_ratio": 0.2}
with open(os.path.join(out, "sparsity.json"), "w") as f:
    json.dump({"total": total}, f)
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """The sweep's commands run the stand-ins (with the real commands' arguments)."""
    train, measure = tmp_path / "fake_train.py", tmp_path / "fake_measure.py"
    train.write_text(FAKE_TRAIN)
    measure.write_text(FAKE_MEASURE)
    real_train, real_measure = sweep.train_command, sweep.measure_command
    monkeypatch.setattr(sweep, "train_command",
                        lambda *a: [sys.executable, str(train), *real_train(*a)[3:]])
    monkeypatch.setattr(sweep, "measure_command",
                        lambda *a: [sys.executable, str(measure), *real_measure(*a)[3:]])
    return tmp_path / "sweep"


def calls(out: Path) -> list[str]:
    path = out / "runs" / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


# --- 1. the trainer dies with the sweep -------------------------------------------------------------------

def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, ...), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has died, whoever reaps it


def trainer_of(pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None and int(stat[1]) == pid:
            try:
                if b"experiments.train" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return int(entry)
            except OSError:
                pass
    return None


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_sweep_takes_its_trainer_with_it(tmp_path):
    config = write_spec(tmp_path, {"dense": {}}, base={**BASE, "epochs": 500})
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", "-c", str(config)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, trainer = time.time() + 180, None
        while trainer is None and proc.poll() is None and time.time() < deadline:
            trainer = trainer_of(proc.pid)
            time.sleep(0.05)
        assert trainer is not None, "the sweep started no trainer"
        assert os.getpgid(trainer) == proc.pid  # in the sweep's process group: Ctrl-C reaches it
        proc.kill()  # SIGKILL: no handler of the sweep runs
        proc.wait()
        deadline = time.time() + 10
        while alive(trainer) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(trainer), "the trainer outlived its sweep"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_asks_to_die_with_the_sweep_and_lives_as_long_as_its_launching_thread_waits(tmp_path):
    """PR_SET_PDEATHSIG fires when the thread that forked the child ends: sweep.run_child forks from the
    calling thread and waits there, so a worker thread outlives its child; the child reads its own setting."""
    probe = ("import ctypes, time; libc = ctypes.CDLL(None, use_errno=True); sig = ctypes.c_int(); "
             "libc.prctl(2, ctypes.byref(sig), 0, 0, 0); "  # 2: PR_GET_PDEATHSIG
             "time.sleep(0.5); print(sig.value)")
    results = []
    worker = threading.Thread(target=lambda: results.append(
        sweep.run_child([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True)))
    worker.start()
    worker.join()
    assert results[0].returncode == 0 and results[0].stdout.strip() == str(int(signal.SIGKILL))


# --- 2. a run directory in use -----------------------------------------------------------------------------

def test_a_run_whose_directory_is_in_use_is_reported_and_the_sweep_goes_on(tmp_path, fake_tools, capsys,
                                                                           monkeypatch):
    config = write_spec(tmp_path, {"dense": {}, "gmp": {"pruning_ratio": [0.8]}})
    monkeypatch.setenv("FAKE_BUSY", "dense_seed=0")
    assert sweep.main(["-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert "SKIPPED dense_seed=0: " in out and "is in use by another training process" in out
    assert "done  gmp_pruning_ratio=0.8_seed=0" in out
    assert "1 of 2 runs finished" in out
    assert not (fake_tools / "runs" / "dense_seed=0" / "result.json").exists()
    assert (fake_tools / "runs" / "gmp_pruning_ratio=0.8_seed=0" / "result.json").exists()


TRAIN_LOCKS = any("is in use by another training process" in p.read_text()
                  for p in (ROOT / "experiments").glob("*.py") if p.name != "sweep.py")


@pytest.mark.skipif(not TRAIN_LOCKS, reason="experiments/train.py does not lock OUTPUT_DIR/.lock yet")
def test_a_real_trainer_refuses_a_directory_another_one_holds(tmp_path):
    config = write_spec(tmp_path, {"dense": {}})
    run_dir = tmp_path / "sweep" / "runs" / "dense_seed=0"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run([sys.executable, "-m", "experiments.sweep", "-c", str(config)], cwd=ROOT,
                                env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SKIPPED dense_seed=0: " in result.stdout and "in use by another training process" in result.stdout
    assert not (run_dir / "summary.json").exists()


# --- 3. truncated run files --------------------------------------------------------------------------------

def test_a_truncated_result_json_is_a_run_to_finish_not_a_crash(tmp_path, fake_tools, capsys):
    config = write_spec(tmp_path, {"dense": {}, "gmp": {"pruning_ratio": [0.8]}})
    assert sweep.main(["-c", str(config)]) == 0
    result = fake_tools / "runs" / "dense_seed=0" / "result.json"
    result.write_text(result.read_text()[:20])  # a write cut short (an old sweep, a full disk)
    capsys.readouterr()

    assert sweep.main(["-c", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 done, 1 to run" in out
    notes = [line for line in out.splitlines() if str(result) in line]
    assert len(notes) == 1 and "not finished" in notes[0], out
    assert sweep.main(["-c", str(config), "--recollect"]) == 0  # the finished run only
    rows = (fake_tools / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].endswith("gmp_pruning_ratio=0.8_seed=0")
    capsys.readouterr()

    before = calls(fake_tools)
    assert sweep.main(["-c", str(config)]) == 0  # measured and collected again; trained already
    assert calls(fake_tools) == before
    assert json.loads(result.read_text())["run"] == "dense_seed=0"
    assert len((fake_tools / "results.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("content", ['{"acc1": 50.0, "best_a', "", "[1, 2]"], ids=["cut", "empty", "list"])
def test_a_truncated_summary_json_trains_the_run_again_from_its_checkpoint(tmp_path, fake_tools, capsys,
                                                                           content):
    config = write_spec(tmp_path, {"dense": {}})
    run_dir = fake_tools / "runs" / "dense_seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint_last.pth").write_text("weights")
    (run_dir / "summary.json").write_text(content)

    assert sweep.main(["-c", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if str(run_dir / "summary.json") in line]
    assert len(notes) == 1 and "not finished" in notes[0], out
    assert "partial  dense_seed=0" in out

    assert sweep.main(["-c", str(config)]) == 0
    assert calls(fake_tools) == ["dense_seed=0 --resume auto"]
    assert json.loads((run_dir / "result.json").read_text())["acc1"] == 50.0


def test_a_run_whose_figures_cannot_be_collected_fails_alone(tmp_path, fake_tools, capsys, monkeypatch):
    config = write_spec(tmp_path, {"dense": {}, "gmp": {"pruning_ratio": [0.8]}})

    def collect(run, *args):
        if run.method == "dense":
            raise ValueError("sparsity.json: no 'total'")
        return real(run, *args)

    real = sweep.collect
    monkeypatch.setattr(sweep, "collect", collect)
    assert sweep.main(["-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED dense_seed=0: " in out and "no 'total'" in out
    assert "1 of 2 runs finished" in out


# --- 4. temp files ------------------------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_sweep_writes_through_atomic_write_and_removes_the_temp_files_a_killed_sweep_left(
        tmp_path, fake_tools, monkeypatch):
    config = write_spec(tmp_path, {"dense": {}})
    run_dir = fake_tools / "runs" / "dense_seed=0"
    run_dir.mkdir(parents=True)
    pid = dead_pid()
    stale = [fake_tools / f"results.csv.tmp.{pid}", fake_tools / f"base.yaml.tmp.{pid}",
             run_dir / f"result.json.tmp.{pid}"]
    for path in stale:
        path.write_text("half")
    live = fake_tools / f"results.csv.tmp.{os.getppid()}"  # a live process's: not ours to remove
    live.write_text("someone else's")
    written = []
    real = sweep.atomic_write
    monkeypatch.setattr(sweep, "atomic_write", lambda path, data: (written.append(Path(path).name),
                                                                   real(path, data)))
    assert sweep.main(["-c", str(config)]) == 0
    assert {"base.yaml", "results.csv", "result.json"} <= set(written)
    assert [p for p in stale if p.exists()] == []
    assert live.exists()
    left = [p for p in fake_tools.rglob("*") if ".tmp." in p.name and p != live]
    assert left == []
