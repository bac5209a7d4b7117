"""experiments.sweep when things go wrong: its trainer dies with it (even after SIGKILL), a run directory in
use by another trainer, truncated run files, stale temp files, and sweep files train.py would refuse (checked
up front, each a one-line error; property tests of the --dry-run command line)."""
import argparse
import contextlib
import fcntl
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import sweep
from experiments.args import config_type_problem, finite_float, get_args_parser
from experiments.args import parse_args as train_parse_args
from experiments.methods import METHODS
from tests.conftest import HANG
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
        deadline, trainer = time.time() + HANG, None
        while trainer is None and proc.poll() is None and time.time() < deadline:
            trainer = trainer_of(proc.pid)
            time.sleep(0.05)
        assert trainer is not None, "the sweep started no trainer"
        assert os.getpgid(trainer) == proc.pid  # in the sweep's process group: Ctrl-C reaches it
        proc.kill()  # SIGKILL: no handler of the sweep runs
        proc.wait()
        deadline = time.time() + HANG
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
                                env=ENV, capture_output=True, text=True, timeout=HANG)
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


# --- 5. sweep files train.py would refuse ------------------------------------------------------------------

def spec_error(tmp_path, methods=None, **extra) -> str:
    with pytest.raises(ValueError) as info:
        sweep.load_spec(write_spec(tmp_path, methods or {"dense": {}}, **extra))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "sweep.yaml") in message
    return message


def test_keys_train_py_does_not_know_are_refused_with_close_matches(tmp_path):
    message = spec_error(tmp_path, base={**BASE, "batchsize": 32})
    assert "base: unknown key 'batchsize'" in message and "did you mean 'batch_size'" in message
    message = spec_error(tmp_path, {"gmp": {"pruning_ratio": [0.8], "pruning_end": 2}})
    assert "methods.gmp: unknown key 'pruning_end'" in message and "pruning_end_epoch" in message
    assert "'xyzzy'" in spec_error(tmp_path, base={**BASE, "xyzzy": 1})
    sweep.load_spec(write_spec(tmp_path, {"dense": {}}, base={**BASE, "batch-size": 32}))  # as train.py takes
    for key in ("config", "resume"):
        assert f"must not set {key!r}" in spec_error(tmp_path, {"dense": {key: "x"}})


def test_values_are_checked_as_train_py_checks_config_values(tmp_path):
    assert "base.lr must be a finite number, got 'fast'" in spec_error(tmp_path, base={**BASE, "lr": "fast"})
    assert "base.lr must be a finite number, got inf" in spec_error(tmp_path, base={**BASE, "lr": math.inf})
    assert "base.epochs must be an integer, got 2.5" in spec_error(tmp_path, base={**BASE, "epochs": 2.5})
    assert "base.compile must be true or false" in spec_error(tmp_path, base={**BASE, "compile": "yes"})
    assert "methods.gmp.pruning_ratio[1] must be a finite number, got 'x'" in spec_error(
        tmp_path, {"gmp": {"pruning_ratio": [0.8, "x"]}})
    assert "methods.pgh.beta must be a finite number, got 'b'" in spec_error(
        tmp_path, {"pgh": {"final_threshold": [0.1], "beta": "b"}})
    assert "methods.gmp.pruning_ratio is an empty list" in spec_error(tmp_path,
                                                                      {"gmp": {"pruning_ratio": []}})
    assert "methods.s-lats needs final_threshold" in spec_error(tmp_path, {"s-lats": {}})
    message = spec_error(tmp_path, {"pgh": {"final_threshold": [0.1, 0.10]}})
    assert "'pgh_final_threshold=0.1_seed=0' twice" in message
    for seeds in ([True], [-1], [0, 0], "0", [], [0.5]):
        message = spec_error(tmp_path, seeds=seeds)
        assert "'seeds' must be a non-empty list of distinct integers >= 0" in message
    assert "measure.batch_size must be an integer > 0" in spec_error(tmp_path, measure={"batch_size": "8"})
    assert "'output_dir' must be a path" in spec_error(tmp_path, output_dir=3)
    spec = sweep.load_spec(write_spec(tmp_path, {"s-lats": {"layer_scale": ["conv1=2", "conv1=3"]},
                                                 "gmp": {"ignored_layers": ["fc"], "pruning_ratio": 0.8}},
                                      base={**BASE, "final_threshold": 0.1}))
    assert len(sweep.expand(spec)) == 3
    # values of the right type that train.py's own checks refuse: refused up front, naming the run
    message = spec_error(tmp_path, {"gmp": {"pruning_ratio": [0.5, 1.5]}})
    assert ("methods.gmp: experiments.train refuses run gmp_pruning_ratio=1.5_seed=0: --pruning-ratio must "
            "be in [0, 1), got 1.5") in message
    assert "refuses run dense_seed=0: --T must be >= 1" in spec_error(tmp_path, base={**BASE, "T": 0})
    # the runs' GPU is where they run: a CUDA device is not checked on this machine
    assert sweep.load_spec(write_spec(tmp_path, {"dense": {}}, base={**BASE, "device": "cuda"}))


def test_malformed_yaml_and_a_file_that_is_not_a_mapping_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("base:\n  data: digits\n methods: {dense: {}\n")
    with pytest.raises(SystemExit) as info:
        sweep.main(["-c", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert f"{path}: not valid YAML (line 3" in err
    path.write_text("- base\n- methods\n")
    with pytest.raises(SystemExit):
        sweep.main(["-c", str(path), "--dry-run"])
    assert f"{path}: must be a mapping of sweep keys" in capsys.readouterr().err


def test_the_command_line_gives_a_one_line_error_for_a_bad_sweep_file(tmp_path):
    config = write_spec(tmp_path, {"dense": {}}, base={**BASE, "lerning_rate": 0.1})
    result = subprocess.run([sys.executable, "-m", "experiments.sweep", "-c", str(config), "--dry-run"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "unknown key 'lerning_rate'" in result.stderr and str(config) in result.stderr


# --- 6. property tests of --dry-run ------------------------------------------------------------------------

def dry_run(text: str) -> tuple[int, str, str, str, int | None]:
    """(exit status, stdout, stderr, the file's path, the number of runs the file expands to or None) of
    ``sweep --dry-run`` on a sweep file holding ``text``."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sweep.yaml")
        with open(path, "w") as f:
            f.write(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = sweep.main(["-c", path, "--dry-run", "--output-dir", os.path.join(folder, "out")])
            except SystemExit as exc:
                code = exc.code
        assert not os.path.exists(os.path.join(folder, "out")), "a dry run wrote something"
        runs = None
        if code == 0:
            spec = sweep.load_spec(path)
            runs = len(sweep.expand(spec))
            train_takes(spec, Path(folder))
    return code, out.getvalue(), err.getvalue(), path, runs


def train_takes(spec: dict, folder: Path) -> None:
    """train.py takes the base.yaml of ``spec`` and each run's options as the sweep gives them, with every
    check of its own (types, spellings and ranges): a sweep that starts never has a run train.py refuses. The
    device is checked where the runs run."""
    base = folder / "base.yaml"
    base.write_text(yaml.safe_dump(spec["base"], sort_keys=False))
    for run in sweep.expand(spec):
        command = sweep.train_command(run, base, folder / "run")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                args = train_parse_args(command[3:], device_here=False)
            except SystemExit:
                raise AssertionError(f"train.py refuses {run.name}: {err.getvalue()}") from None
        assert (args.method, args.seed) == (run.method, run.seed)


def check_outcome(code, out, err, path, runs):
    """Success, or exit 2 with one line naming the file; never anything else (a traceback propagates)."""
    if code == 0:
        assert err == "" and "runs," in out
    else:
        assert code == 2, (code, err)
        assert err.count("\n") == 1 and err.endswith("\n") and path in err, err


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
TRAIN_ACTIONS = {a.dest: a for a in get_args_parser()._actions if a.dest != "help"}
train_keys = sorted(TRAIN_ACTIONS)
keys = st.one_of(st.sampled_from(train_keys), st.text(min_size=1, max_size=10), st.integers(0, 3))


def mostly(good, bad, tenths: int = 8):
    """``good`` in about ``tenths`` of ten draws, else ``bad``."""
    return st.integers(0, 9).flatmap(lambda i: good if i < tenths else bad)


def fitting(key: str):
    """Values of train.py option ``key``'s type (mostly ones a dry run accepts)."""
    action = TRAIN_ACTIONS[key]
    if key in ("data", "model"):
        return st.sampled_from({"data": ["digits", "fashion-mnist", "mnist"],
                                "model": ["sew_resnet18", "spiking_resnet18", "nope"]}[key])
    if key in ("layer_scale", "model_kwargs"):
        return st.sampled_from(["conv1=2", {"conv1": 2.0}] if key == "layer_scale" else [{}, "{}"])
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return st.booleans()
    if action.nargs == "*":
        return st.lists(st.sampled_from(["fc", "conv1"]), max_size=2)
    if action.type in (int, finite_float):  # mostly in range, sometimes a value train.py refuses
        edge = st.sampled_from([-1, 0, 10**9] if action.type is int else [0.0, -0.5, 1.5, 1e308, math.inf,
                                                                           math.nan])
        return mostly(st.integers(0, 5) if action.type is int else st.floats(0.01, 1.0), edge)
    return st.sampled_from(["cpu", "x"])


option = st.sampled_from(train_keys).flatmap(lambda k: st.tuples(st.just(k), mostly(fitting(k), values)))
junk = st.tuples(keys, values)
strength = st.sampled_from(["final_threshold", "pruning_ratio", "beta", "T", "ignored_layers", "trail"]) \
    .flatmap(lambda k: st.tuples(st.just(k), st.lists(fitting(k), max_size=3)))
base_st = st.tuples(st.lists(mostly(option, junk), max_size=3),
                    st.fixed_dictionaries({}, optional={"final_threshold": st.floats(0.01, 0.5)})) \
    .map(lambda parts: {**BASE, **parts[1], **dict(parts[0])})
options_st = mostly(st.one_of(st.none(), st.lists(st.one_of(option, strength), max_size=3).map(dict),
                              st.lists(strength, max_size=1).map(dict)),
                    st.one_of(values, st.lists(junk, min_size=1, max_size=2).map(dict)))



methods_st = mostly(st.dictionaries(st.sampled_from(list(METHODS)), options_st, min_size=1, max_size=3),
                    st.dictionaries(st.sampled_from([*METHODS, "slats", ""]), options_st, max_size=3))
seeds_st = mostly(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
                  st.one_of(scalars, st.lists(st.one_of(st.integers(-2, 5), st.booleans(),
                                                        st.text(max_size=2)), max_size=4)))
measure_st = mostly(st.just({"max_batches": 2, "batch_size": 32}),
                    st.one_of(st.dictionaries(keys, values, max_size=2),
                              st.fixed_dictionaries({}, optional={"batch_size": values,
                                                                  "data": fitting("data")})))
sweep_st = st.fixed_dictionaries({"base": base_st, "methods": methods_st},
                                 optional={"seeds": seeds_st, "measure": measure_st,
                                           "output_dir": mostly(st.just("runs/x"), scalars)})
specs = mostly(sweep_st, st.one_of(values, st.tuples(sweep_st, keys, values)
                                   .map(lambda t: {**t[0], t[1]: t[2]})))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_dry_run_succeeds_or_names_the_problem_in_one_line(spec):
    code, out, err, path, runs = dry_run(yaml.safe_dump(spec))
    check_outcome(code, out, err, path, runs)
    if code == 0:  # one line per run
        assert len([line for line in out.splitlines() if line.startswith("  ")]) == runs


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=60))
def test_dry_run_of_any_text_never_shows_a_traceback(text):
    check_outcome(*dry_run(text))


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
       .filter(lambda k: k not in TRAIN_ACTIONS and k.replace("_", "") != ""),
       st.sampled_from(["base", "method"]))
def test_an_unknown_key_is_named(key, where):
    base, methods = dict(BASE), {"dense": {}}
    if where == "base":
        base[key] = 1
    else:
        methods = {"dense": {key: 1}}
    code, _, err, path, _ = dry_run(yaml.safe_dump({"base": base, "methods": methods}))
    assert code == 2 and repr(key) in err and path in err, err


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["lr", "epochs", "batch_size", "T", "width_multiplier", "channels_last", "neuron",
                        "ignored_layers", "pruning_ratio"]),
       st.one_of(st.text(min_size=1, max_size=4), st.booleans(), st.integers(0, 50),
                 st.lists(st.integers(), min_size=1, max_size=2),
                 st.floats(allow_nan=False, allow_infinity=False)))
def test_a_value_of_the_wrong_type_is_named(key, value):
    action = TRAIN_ACTIONS[key]
    code, _, err, path, _ = dry_run(yaml.safe_dump({"base": {**BASE, key: value}, "methods": {"dense": {}}}))
    if config_type_problem(action, value) is None:  # of the right type: runs, or train.py's range check
        assert code == 0 or "experiments.train refuses run dense_seed=0: " in err, err
    else:
        assert code == 2 and f"base.{key} must be" in err and path in err, err


def test_the_property_tests_reach_the_checks():
    """A hand-made example of each kind the strategies draw: a change that passes them vacuously shows."""
    assert dry_run(yaml.safe_dump({"base": BASE, "methods": {"dense": {}}}))[0] == 0
    assert "unknown key 'lerning_rate'" in dry_run(yaml.safe_dump({"base": {**BASE, "lerning_rate": 1},
                                                                   "methods": {"dense": {}}}))[2]
    assert "must be a mapping of sweep keys" in dry_run("[1, 2]")[2]
    no_methods = yaml.safe_dump({"base": BASE, "methods": {}})
    assert "'methods' must be a non-empty mapping" in dry_run(no_methods)[2]
    assert "not valid YAML" in dry_run("base: [\n")[2]
