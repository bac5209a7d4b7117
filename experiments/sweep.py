"""Run a grid of (method x strength x seed) through the training pipeline and collect every run's figures.

    python -m experiments.sweep -c experiments/configs/sweeps/sweep_fmnist_sew18.yaml --jobs 2
    python -m experiments.sweep -c experiments/configs/sweeps/sweep_fmnist_sew18.yaml --jobs 2  # resumes
    python -m experiments.sweep -c ... --dry-run                                                # lists runs

The sweep file (YAML) has:

    output_dir: runs/sweep_fmnist_sew18
    base: {data: fashion-mnist, model: sew_resnet18, T: 4, epochs: 6, ...}   # experiments.train options
    seeds: [0, 1]
    measure: {max_batches: 8, batch_size: 250}       # spike-level metrics of the final model (test data)
    methods:
      dense: {}
      s-lats: {final_threshold: [0.1, 0.2, 0.3]}     # the one list-valued key is the strength
      pgh: {final_threshold: [0.1, 0.2, 0.3], beta: 0.1}
      gmp: {pruning_ratio: [0.8, 0.9, 0.95], pruning_end_epoch: 4}

The data follow experiments.train's names: ``base`` must set ``data`` (digits, fashion-mnist, cifar10,
cifar100 or imagenet) and sets ``data_path`` where the data set needs one. ``measure`` (benchmark_sparsity's
max_batches, batch_size, data, data_path) measures on base's data and data_path, on the validation split
training evaluates on, unless it names its own; an old ``NAME:DIR`` value is an error naming the new keys.

Every run trains in its own process (``python -m experiments.train``) into OUTPUT_DIR/runs/NAME, then
``experiments.benchmark_sparsity`` measures its final checkpoint, and the run's figures go to NAME/result.json
(written last, atomically: a run is finished exactly when that file exists). OUTPUT_DIR/results.csv is
rewritten from all result.json files after every run. Run the same command again after a crash or a kill:
finished runs are skipped, an interrupted run continues from its checkpoint_last.pth (``--resume auto``) and
ends exactly as it would have; a truncated result.json or summary.json is a run to finish again, said in one
line. ``--jobs N`` runs N at a time with cores/N threads each (single-threaded small models scale better than
threaded ones on few cores). To stop a sweep, stop its process group (Ctrl-C does); its runs also die with the
sweep's process alone, even by SIGKILL (Linux). A run whose folder another trainer holds (train.py locks
OUTPUT_DIR/.lock) is skipped, said so. The sweep file is checked whole before anything runs: every key of
``base`` and of the methods is an experiments.train option, of its type; each problem is a one-line error.

``--executor slurm --partition P [--gpus-per-run N] [--time-limit MIN]`` submits each run as a SLURM job
through submitit (``pip install submitit``), ``--executor submitit-local`` as a submitit job here; jobs run
the same command lines, so skipping and resuming are the same; a job's timeout or preemption requeues it (its
``checkpoint()``) and its training continues from checkpoint_last.pth. docs/training.md has the details.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import difflib
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import models
from experiments.args import config_type_problem, get_args_parser, parse_args
from experiments.data import check_name, data_flags
from experiments.methods import METHODS
from experiments.utils import remove_stale_temp_files
from snn_lats.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "method", "strength_key", "strength", "seed", "acc1", "best_acc1", "sparsity",
           "firing_rate", "sops", "ops", "energy_uj", "energy_ratio", "macs", "flops_reduction",
           "prune_epoch", "lambda_ratio", "train_seconds", "wall_seconds", "run"]
SPEC_KEYS = {"output_dir", "base", "seeds", "measure", "methods"}
MEASURE_KEYS = {"data", "data_path", "batch_size", "max_batches"}  # benchmark_sparsity options
# train.py options the sweep sets itself: the config is its base.yaml, the rest are per run
RESERVED = ("method", "seed", "output_dir", "resume", "config")
SLURM_THREADS = 4  # --threads of a SLURM run (its --cpus-per-task) unless given
IN_USE = "is in use by another training process"  # train.py's words when OUTPUT_DIR/.lock is held


@dataclass
class Run:
    name: str
    method: str
    seed: int
    options: dict = field(default_factory=dict)  # train.py options of this run, beyond the base
    strength_key: str | None = None
    strength: float | None = None


def option_flag(key: str) -> str:
    return "--" + str(key).replace("_", "-")


@functools.cache
def train_actions() -> dict[str, argparse.Action]:
    """experiments.train's options by their ``dest``: the keys a sweep's base and methods may set."""
    return {a.dest: a for a in get_args_parser()._actions if a.dest != "help"}


def show(value, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def unknown_keys(keys: list) -> str:
    """'unknown key 'x' (did you mean 'y'?)', each with train.py's options closest to it."""
    shown = []
    for key in keys:
        close = difflib.get_close_matches(str(key).replace("-", "_"), list(train_actions()), n=3)
        shown.append(show(key) + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return (f"unknown key{'s' if len(keys) > 1 else ''} {', '.join(shown)}: not an option of "
            "experiments.train (python -m experiments.train --help)")


def value_problem(action: argparse.Action, value, strength: bool) -> str | None:
    """What a base value (as train.py's config takes it) or a method's value (on train.py's command line: one
    value, or a list of them for a list option) of ``action`` must be; None when ``value`` is that."""
    if strength and action.nargs == "*" and action.dest not in ("layer_scale", "model_kwargs"):
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        return None if ok else "a name or a list of names"
    return config_type_problem(action, value)


def check_options(path, where: str, options: dict, strength: bool) -> None:
    """Every key of ``options`` (a sweep's base, or a method's) is a train.py option, of its type."""
    unknown = []
    for key in options:
        dest = str(key).replace("-", "_")
        if dest in RESERVED:
            what = "it is the base.yaml the sweep writes" if dest == "config" else "the sweep sets it per run"
            shown = repr(where) if where == "base" else where
            raise ValueError(f"{path}: {shown} must not set {dest!r}: {what}")
        if dest not in train_actions():
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path}: {where}: {unknown_keys(unknown)}")
    for key, value in options.items():
        action = train_actions()[str(key).replace("-", "_")]
        if strength and isinstance(value, list):
            if not value:
                raise ValueError(f"{path}: {where}.{key} is an empty list (a strength of no values: no runs)")
            for i, element in enumerate(value):
                if (problem := value_problem(action, element, strength)) is not None:
                    raise ValueError(f"{path}: {where}.{key}[{i}] must be {problem}, got {show(element)}")
                name = str(element)
                if "/" in name or "\\" in name or not name.isprintable():
                    raise ValueError(f"{path}: {where}.{key}[{i}] = {show(element)} cannot be part of a "
                                     "run's folder name (no '/', '\\' or control characters)")
        elif (problem := value_problem(action, value, strength)) is not None:
            raise ValueError(f"{path}: {where}.{key} must be {problem}, got {show(value)}")


def read_yaml(path) -> object:
    try:
        return yaml.safe_load(Path(path).read_bytes())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ValueError(f"{path}: not valid YAML{line}: {problem}") from None
    except (OSError, RecursionError) as exc:
        raise ValueError(f"{path}: cannot read it: {exc}") from None


def load_spec(path: str | os.PathLike) -> dict:
    """Read and check a sweep file; errors are one line that names the file, the key and what is allowed.
    Every key of base and of the methods is a train.py option, its value of that option's type (as train.py
    checks a config), so that no run fails for what the file says."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {os.fspath(path)!r} not found")
    spec = read_yaml(path)
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: must be a mapping of sweep keys {sorted(SPEC_KEYS)}, "
                         f"got a {type(spec).__name__}")
    unknown = sorted(set(spec) - SPEC_KEYS, key=str)
    if unknown:
        raise ValueError(f"{path}: unknown keys {show(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    for key in ("base", "methods"):
        if not isinstance(spec.get(key), dict) or not spec[key]:
            raise ValueError(f"{path}: '{key}' must be a non-empty mapping, got {show(spec.get(key))}")
    seeds = spec.setdefault("seeds", [0])
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) < len(seeds) \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of distinct integers >= 0, "
                         f"got {show(seeds)}")
    if spec.get("output_dir") is None:
        spec["output_dir"] = f"runs/{Path(path).stem}"
    output_dir = spec["output_dir"]
    if not isinstance(output_dir, str) or not output_dir or "\0" in output_dir:
        raise ValueError(f"{path}: 'output_dir' must be a path (a string), got {show(output_dir)}")
    base = spec["base"]
    check_options(path, "base", base, strength=False)
    if "data" not in base:
        raise ValueError(f"{path}: 'base' must set 'data' (one of the data set names of experiments.train), "
                         "which the runs train and are measured on")
    measure = spec.setdefault("measure", {})
    if not isinstance(measure, dict):
        raise ValueError(f"{path}: 'measure' must be a mapping, got {show(measure)}")
    unknown = sorted(set(measure) - MEASURE_KEYS, key=str)
    if unknown:
        raise ValueError(f"{path}: measure: unknown keys {show(unknown)}; allowed: {sorted(MEASURE_KEYS)}")
    for key, value in measure.items():
        if key in ("batch_size", "max_batches"):
            ok = (value is None and key == "max_batches") or \
                (isinstance(value, int) and not isinstance(value, bool) and value > 0)
            problem = "an integer > 0" + (" or null" if key == "max_batches" else "")
        else:
            ok, problem = isinstance(value, str) or (value is None and key == "data_path"), "a string"
        if not ok:
            raise ValueError(f"{path}: measure.{key} must be {problem}, got {show(value)}")
    for section in ("base", "measure"):
        if "data" in spec[section]:
            try:
                check_name(str(spec[section]["data"]))
            except ValueError as exc:
                raise ValueError(f"{path}: {section}.data: {exc} "
                                 "(in a sweep file: data: NAME, data_path: DIR)") from None
    for method in list(spec["methods"]):
        options = spec["methods"][method]
        if method not in METHODS:
            raise ValueError(f"{path}: unknown method {show(method)}; methods are {list(METHODS)}")
        if options is None:  # "dense:" with nothing after it: no options
            options = spec["methods"][method] = {}
        if not isinstance(options, dict):
            raise ValueError(f"{path}: methods.{method} must be a mapping of options, got {show(options)}")
        lists = [k for k, v in options.items() if isinstance(v, list)]
        if len(lists) > 1:
            raise ValueError(f"{path}: methods.{method} has several list-valued keys {lists}; "
                             "one is the strength")
        check_options(path, f"methods.{method}", options, strength=True)
    check_runs(path, spec)
    return spec


def check_runs(path, spec: dict) -> None:
    """What train.py would refuse of every run of the sweep, whatever its data: a method's required option,
    --layer-scale of a method without soft thresholds, an unknown model, a flag a method cannot undo; and two
    runs in one folder."""
    base = {str(k).replace("-", "_"): v for k, v in spec["base"].items()}
    actions, names = train_actions(), set()
    soft = tuple(name for name, m in METHODS.items() if m.soft_threshold)
    for run in expand(spec):
        options = {str(k).replace("-", "_"): v for k, v in run.options.items()}
        where = f"methods.{run.method}"
        for key, value in options.items():  # a store_true flag has no --no-FLAG
            if value is False and base.get(key) is True and type(actions[key]) is argparse._StoreTrueAction:
                raise ValueError(f"{path}: {where}.{key}: false cannot undo base's true "
                                 f"(experiments.train has no --no-{key.replace('_', '-')})")
        merged = {**base, **{k: v for k, v in options.items() if v is not None}}  # None: not passed
        for needed in METHODS[run.method].needs:
            if merged.get(needed) is None:
                raise ValueError(f"{path}: {where} needs {needed} (in the method or in base): "
                                 f"experiments.train refuses --method {run.method} without "
                                 f"--{needed.replace('_', '-')}")
        if merged.get("layer_scale") is not None and run.method not in soft:
            raise ValueError(f"{path}: {where}: layer_scale applies to the soft-threshold methods {soft}, "
                             f"not {run.method!r}")
        model = merged.get("model", actions["model"].default)
        if model not in models.list_models():
            key = f"{where}.model" if "model" in options else "base.model"
            raise ValueError(f"{path}: {key} must be one of {models.list_models()}, got {show(model)}")
        if run.name in names:
            raise ValueError(f"{path}: run {run.name!r} twice ({where} repeats a strength, "
                             "or two values have the same name): both would train in one folder")
        if len(run.name.encode()) > 200:
            raise ValueError(f"{path}: run name {show(run.name)} is too long for a folder")
        names.add(run.name)
        if (problem := train_refuses(run, spec["base"])) is not None:
            raise ValueError(f"{path}: {where}: experiments.train refuses run {run.name}: {problem}")


def train_refuses(run: Run, base: dict) -> str | None:
    """experiments.train's own one-line error for the run's command line (its every check, ranges included:
    a sweep never starts a run it would refuse), or None; nothing is written."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            # the runs' device is checked where they run (a SLURM job's GPU is not on the login node)
            parse_args(train_options(run, Path(os.devnull) / "sweep-check"), config=base, device_here=False)
    except SystemExit:
        lines = err.getvalue().strip().splitlines() or ["refused"]
        return lines[-1].split(": error: ", 1)[-1]
    return None


def expand(spec: dict) -> list[Run]:
    """Every (method, strength, seed) run of the sweep, in file order."""
    runs = []
    for method, options in spec["methods"].items():
        key = next((k for k, v in options.items() if isinstance(v, list)), None)
        strengths = options[key] if key else [None]
        fixed = {k: v for k, v in options.items() if k != key}
        for value in strengths:
            for seed in spec["seeds"]:
                name = method + (f"_{key}={value}" if key else "") + f"_seed={seed}"
                opts = {**fixed, **({key: value} if key else {})}
                runs.append(Run(name, method, seed, opts, key, value))
    return runs


def train_command(run: Run, base_config: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.train", "-c", str(base_config), *train_options(run, out)]
    if (out / "checkpoint_last.pth").exists():
        cmd += ["--resume", "auto"]  # an interrupted run continues where its last checkpoint is
    return cmd


def train_options(run: Run, out: Path) -> list[str]:
    """The run's experiments.train options after its base configuration (``-c base.yaml``)."""
    cmd = ["--method", run.method, "--seed", str(run.seed), "--output-dir", str(out)]
    for key, value in run.options.items():
        action = train_actions().get(str(key).replace("-", "_"))
        if isinstance(value, bool):
            if isinstance(action, argparse.BooleanOptionalAction) or action is None:
                cmd.append(option_flag(key) if value else "--no-" + key.replace("_", "-"))
            elif value:  # a store_true flag: false is its default (load_spec refuses undoing base's true)
                cmd.append(option_flag(key))
        elif isinstance(value, list):
            cmd += [option_flag(key), *map(str, value)]
        elif isinstance(value, dict) and key == "layer_scale":  # {NAME: SCALE} -> NAME=SCALE ...
            cmd += [option_flag(key), *(f"{name}={scale}" for name, scale in value.items())]
        elif isinstance(value, dict):  # e.g. model_kwargs: train.py takes a JSON object
            cmd += [option_flag(key), json.dumps(value)]
        elif value is not None:
            cmd += [option_flag(key), str(value)]
    return cmd


def measure_data(spec: dict) -> tuple[str, str | None]:
    """(NAME, DIR) the runs are measured on: measure's data and data_path, else base's (base's data_path only
    with base's data)."""
    base, m = spec["base"], spec["measure"]
    if "data" in m and m["data"] != base["data"]:
        name, path = m["data"], m.get("data_path")
    else:
        name, path = base["data"], m.get("data_path", base.get("data_path"))
    return str(name), None if path is None else str(path)


def measure_command(run_dir: Path, spec: dict) -> list[str]:
    m = spec["measure"]
    cmd = [sys.executable, "-m", "experiments.benchmark_sparsity", "--checkpoint",
           str(run_dir / "checkpoint_last.pth"), *data_flags(*measure_data(spec)),
           "--out", str(run_dir / "sparsity"), "--batch-size", str(m.get("batch_size", 250)),
           "--device", "cpu"]
    if m.get("max_batches"):
        cmd += ["--max-batches", str(m["max_batches"])]
    return cmd


def collect(run: Run, run_dir: Path, model: str, wall_seconds: float) -> dict:
    """The run's final figures: training summary, per-sample spike-level metrics of the final model, time."""
    summary = json.loads((run_dir / "summary.json").read_text())
    total = json.loads((run_dir / "sparsity" / "sparsity.json").read_text())["total"]
    reference = total.get("reference") or {}  # a channel-pruned model: against the unpruned architecture
    with open(run_dir / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    train_seconds = sum(float(r["seconds"]) for r in log)
    lambdas = [float(r["l1_coefficient"]) for r in log if r["l1_coefficient"] not in ("", "None")]
    lambdas = [v for v in lambdas if v > 0]
    samples = total["samples"]
    return {
        "model": model, "method": run.method, "strength_key": run.strength_key, "strength": run.strength,
        "seed": run.seed, "acc1": summary["acc1"], "best_acc1": summary["best_acc1"],
        "sparsity": summary["sparsity"], "firing_rate": total["firing_rate"],
        "sops": total["sops"] / samples, "ops": (total["sops"] + total["macs"]) / samples,
        "energy_uj": total["energy_pj"] / samples / 1e6,
        "energy_ratio": reference.get("energy_ratio", total["energy_ratio"]),
        "macs": summary["macs"], "flops_reduction": summary["flops_reduction"],
        "prune_epoch": summary.get("prune_epoch"),
        # implied L1 coefficient λ = Δd/lr at the end of each epoch: max/min (1 for a constant λ; None
        # without one)
        "lambda_ratio": max(lambdas) / min(lambdas) if lambdas else None,
        "train_seconds": train_seconds, "wall_seconds": wall_seconds,
        "run": run.name,
    }


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(the mapping a run's JSON file holds, None) or (None, what is wrong with it); (None, None) when it does
    not exist. A file cut short (an old non-atomic write, a full disk) is wrong, never an exception."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    if not data.strip():
        return None, "is empty"
    try:
        value = json.loads(data)
    except ValueError as exc:  # also a UnicodeDecodeError
        return None, f"is not valid JSON ({getattr(exc, 'msg', exc)}; truncated?)"
    if not isinstance(value, dict):
        return None, f"holds a {type(value).__name__}, not a mapping"
    return value, None


def run_state(run_dir: Path) -> tuple[str, str | None]:
    """done, partial (a checkpoint to resume) or todo, and a one-line note when a run file is unreadable
    (the run is then not finished: it is measured, or trained from its checkpoint, again)."""
    result, problem = read_json(run_dir / "result.json")
    if result is not None:
        return "done", None
    resumable = (run_dir / "checkpoint_last.pth").exists()
    note = None
    if problem:
        note = f"{run_dir / 'result.json'} {problem}: the run is not finished; it is measured again"
    _, bad_summary = read_json(run_dir / "summary.json")
    if bad_summary:
        again = "from its checkpoint_last.pth" if resumable else "from the start"
        note = f"{run_dir / 'summary.json'} {bad_summary}: the run is not finished; it trains again {again}"
    return ("partial" if resumable else "todo"), note


def run_model(spec: dict, run: Run) -> str:
    """The model a run trains: its method's option, else base's, else train.py's default."""
    return str(run.options.get("model", spec["base"].get("model", train_actions()["model"].default)))


def write_results(out: Path, runs: list[Run]) -> Path:
    """results.csv from every finished run's result.json (atomic; runs in sweep order; an unreadable one is a
    run not finished)."""
    rows = []
    for run in runs:
        result, _ = read_json(out / "runs" / run.name / "result.json")
        if result is not None:
            rows.append(result)
    target = out / "results.csv"
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(target, text.getvalue())
    return target


# --- running the runs ---------------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up here, not in the forked child


def _die_with(parent: int):
    """The child's preexec_fn: SIGKILL once its parent thread ends, which no handler of the sweep has to do
    (it also comes after the sweep's SIGKILL); a sweep already gone by then is checked for after the call."""
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        _PRCTL(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sigkill)
    return preexec


def run_child(cmd: list[str], ignore: tuple = (), **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)`` in a child that dies with the sweep (Linux: PR_SET_PDEATHSIG to
    SIGKILL), in the sweep's process group (Ctrl-C and a signal to the group reach it).

    Linux sends that signal when the *thread* that forked the child ends, not the process: the child is forked
    from the calling thread, which then waits for it (subprocess.run), so the thread lives as long as the
    child; a child must never be started here and waited for in another thread. ``ignore``: signals the child
    starts ignoring (a submitit job's SIGUSR2, which SLURM also sends the job's children before a timeout or a
    preemption, is its own to handle: it requeues the job, whose end then takes the child with it)."""
    die = _die_with(os.getpid()) if _PRCTL is not None else None

    def preexec() -> None:
        for signum in ignore:
            signal.signal(signum, signal.SIG_IGN)
        if die is not None:
            die()
    return subprocess.run(cmd, preexec_fn=preexec if (die or ignore) else None, **kwargs)


class RunFailed(Exception):
    """A run that did not finish, with the reason (one line); ``busy``: another trainer holds its folder."""

    def __init__(self, reason: str, busy: bool = False):
        super().__init__(reason)
        self.busy = busy


def new_output(log: Path, offset: int) -> list[str]:
    """The non-empty lines ``log`` got after ``offset``."""
    with open(log, "rb") as f:
        f.seek(offset)
        return [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]


def run_step(what: str, cmd: list[str], log: Path, run_dir: Path, env: dict, ignore: tuple = ()) -> None:
    """One step of a run (training, measuring), its output appended to ``log``; a failure is a RunFailed."""
    with open(log, "a") as f:
        offset = os.fstat(f.fileno()).st_size
        code = run_child(cmd, ignore=ignore, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code == 0:
        return
    lines = new_output(log, offset)
    if what == "training" and code == 2 and any(IN_USE in line for line in lines):
        raise RunFailed(f"{run_dir} {IN_USE} (it holds {run_dir / '.lock'}): another sweep or train.py is "
                        "training it; run the sweep again once that one has ended", busy=True)
    last = lines[-1] if lines else "no output"
    raise RunFailed(f"{what} exited with {code}: {last[:300]}")


@dataclass
class RunJob:
    """One run as an executor runs it: its command lines, built by the sweep (the same for every executor)."""
    run: Run
    run_dir: Path
    model: str
    train: list[str]
    measure: list[str]
    threads: int


def run_job(run: Run, spec: dict, out: Path, base_config: Path, threads: int) -> RunJob:
    run_dir = out / "runs" / run.name
    return RunJob(run, run_dir, run_model(spec, run), train_command(run, base_config, run_dir),
                  measure_command(run_dir, spec), threads)


def execute_job(job: RunJob, ignore: tuple = ()) -> dict:
    """Train (unless its summary.json is there; from checkpoint_last.pth when there is one now), measure and
    collect one run; its result.json is written last. A failure is a RunFailed."""
    run, run_dir, threads = job.run, job.run_dir, job.threads
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    start = time.time()
    log = run_dir.parent / f"{run.name}.log"
    summary, _ = read_json(run_dir / "summary.json")
    if summary is None:  # not trained, or its summary unreadable: train (from the last checkpoint if any)
        cmd = job.train
        if "--resume" not in cmd and (run_dir / "checkpoint_last.pth").exists():  # written since it was built
            cmd = [*cmd, "--resume", "auto"]
        run_step("training", cmd, log, run_dir, env, ignore)
    run_step("measuring", job.measure, log, run_dir, env, ignore)
    try:
        result = collect(run, run_dir, job.model, time.time() - start)
    except Exception as exc:  # noqa: BLE001 (a run's files: any failure is that run's)
        raise RunFailed(f"cannot collect its figures: {type(exc).__name__}: {exc}") from None
    write_json_atomic(run_dir / "result.json", result)
    return result


def job_result(job: RunJob, ignore: tuple = ()) -> tuple[str, object]:
    """execute_job's end as every executor reports it: ("done", the run's result), ("busy", why) (another
    trainer holds its folder) or ("failed", why)."""
    try:
        return "done", execute_job(job, ignore)
    except RunFailed as exc:
        return ("busy" if exc.busy else "failed"), str(exc)
    except Exception as exc:  # noqa: BLE001 (one run's failure is not the sweep's)
        return "failed", f"{type(exc).__name__}: {exc}"


# --- submitit executors (SLURM, or submitit's LocalExecutor) ------------------------------------------------

EXECUTORS = ("local", "submitit-local", "slurm")
DEFAULT_TIME_LIMIT = 24 * 60  # minutes
NO_SUBMITIT = ("needs submitit (FAIR's SLURM toolbox): pip install submitit, or pip install -e '.[cluster]' "
               "in a checkout of snn_lats")


class SubmittedRun:
    """What a submitit job calls: the run's commands, run as the local executor runs them (execute_job).

    submitit's checkpointing (submitit.helpers.Checkpointable's protocol, duck-typed so that the module
    imports without submitit): on SLURM's timeout or preemption signal (SIGUSR2) submitit calls
    ``checkpoint`` and requeues the job with what it returns, this same callable; the requeued job's training
    continues from the run's own checkpoint_last.pth (``--resume auto`` is added when that file exists then),
    as a rerun of a killed local sweep does. Training's checkpoint is train.py's: the job saves nothing."""

    def __init__(self, job: RunJob):
        self.job = job

    def __call__(self) -> tuple[str, object]:
        return job_result(self.job, ignore=(signal.SIGUSR2,))

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def slurm_problem(args) -> str | None:
    """The one-line error of the executor's flags, None when they are fine."""
    submitit_flags = {"--partition": args.partition, "--gpus-per-run": args.gpus_per_run,
                      "--time-limit": args.time_limit, "--slurm-log-dir": args.slurm_log_dir}
    if args.executor == "local":
        given = [flag for flag, value in submitit_flags.items() if value is not None]
        if given:
            return f"{', '.join(given)}: only with --executor slurm or submitit-local (got --executor local)"
        return None
    if args.executor == "slurm" and (args.partition is None or not args.partition.strip()):
        return "--executor slurm needs --partition NAME (the SLURM partition every run is submitted to)"
    if args.executor != "slurm" and args.partition is not None:
        return f"--partition: only with --executor slurm (got --executor {args.executor})"
    if args.partition is not None and (any(c.isspace() for c in args.partition) or "," in args.partition
                                       and not all(args.partition.split(","))):
        return f"--partition must be a SLURM partition name (no spaces), got {args.partition!r}"
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        return f"--gpus-per-run must be an integer >= 0 (GPUs per run), got {args.gpus_per_run}"
    if args.time_limit is not None and args.time_limit < 1:
        return f"--time-limit must be an integer >= 1 (minutes per run), got {args.time_limit}"
    return None


def submitit_settings(args, out: Path, threads: int) -> dict:
    """What every job asks for: partition (SLURM), GPUs, minutes, CPUs, and the folder of submitit's logs."""
    return {"partition": args.partition,
            "gpus": args.gpus_per_run if args.gpus_per_run is not None else int(args.executor == "slurm"),
            "time": args.time_limit or DEFAULT_TIME_LIMIT, "cpus": threads,
            "logs": Path(args.slurm_log_dir or out / "submitit").absolute()}



def describe(executor: str, s: dict) -> str:
    where = f"partition={s['partition']} " if executor == "slurm" else ""
    return f"{executor}: {where}gpus={s['gpus']} time={s['time']} min cpus={s['cpus']}"


def make_executor(executor: str, s: dict):
    import submitit
    folder = s["logs"] / "%j"
    if executor == "slurm":
        ex = submitit.SlurmExecutor(folder=folder)
        ex.update_parameters(partition=s["partition"], time=s["time"], cpus_per_task=s["cpus"], nodes=1,
                             ntasks_per_node=1, **({"gpus_per_node": s["gpus"]} if s["gpus"] else {}))
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=s["time"], gpus_per_node=s["gpus"])
    return ex


def job_outcome(job) -> tuple[str, object]:
    """A finished job's (status, value) as SubmittedRun returns it; a job that died is a one-line failure."""
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001 (a job killed, cancelled, timed out for good: that run's)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[-1] if lines else type(exc).__name__
        return "failed", (f"job {job.job_id}: {type(exc).__name__}: {why[:300]} "
                          f"(submitit logs: {job.paths.folder})")


def clean_temp_files(out: Path, runs: list[Run]) -> None:
    """The NAME.tmp.PID files a killed sweep (or its killed runs) left, those whose process is gone."""
    folders = [out, *(d for r in runs for d in (out / "runs" / r.name, out / "runs" / r.name / "sparsity"))]
    for folder in folders:
        if folder.is_dir():
            remove_stale_temp_files(folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="the sweep file (YAML)")
    p.add_argument("--output-dir", default=None, help="default: the sweep file's output_dir")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (default: 1; with --executor slurm: every run submitted at once)")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    p.add_argument("--only", nargs="*", default=None, help="run only these methods")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--recollect", action="store_true",
                   help="rebuild every finished run's result.json and results.csv from its files, "
                        "training nothing")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: runs in subprocesses here (default); slurm: each run a SLURM job (submitit); "
                        "submitit-local: each run a submitit job on this machine")
    p.add_argument("--partition", default=None, help="--executor slurm: the SLURM partition (required)")
    p.add_argument("--gpus-per-run", type=int, default=None,
                   help="submitit executors: GPUs per run (default: 1 on slurm, 0 with submitit-local)")
    p.add_argument("--time-limit", type=int, default=None,
                   help=f"submitit executors: minutes per job (default: {DEFAULT_TIME_LIMIT}); a job that "
                        "reaches it is requeued and continues from its checkpoint (up to 3 times)")
    p.add_argument("--slurm-log-dir", default=None,
                   help="submitit executors: folder of submitit's job files and logs "
                        "(default: OUTPUT_DIR/submitit)")
    args = p.parse_args(argv)
    if (problem := slurm_problem(args)) is not None:  # before anything is read or submitted
        p.exit(2, f"{p.prog}: error: {problem}\n")
    if args.executor != "local" and not args.dry_run and not args.recollect:
        try:
            import submitit  # noqa: F401
        except ImportError:
            p.exit(2, f"{p.prog}: error: --executor {args.executor} {NO_SUBMITIT}\n")
        missing = [c for c in ("sbatch", "srun") if args.executor == "slurm" and shutil.which(c) is None]
        if missing:
            p.exit(2, f"{p.prog}: error: --executor slurm: {' and '.join(missing)} not found on PATH (run "
                      "the sweep where SLURM's commands are, e.g. a login node)\n")
    slurm_all = args.jobs is None and args.executor == "slurm"
    args.jobs = 1 if args.jobs is None else args.jobs
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    try:
        spec = load_spec(args.config)
    except (FileNotFoundError, ValueError) as exc:  # one line, no usage: the file is wrong, not the command
        p.exit(2, f"{p.prog}: error: {' '.join(str(exc).split())}\n")
    out = Path(args.output_dir or spec["output_dir"]).absolute()  # the runs work in ROOT
    runs = expand(spec)
    if args.only:
        unknown = sorted(set(args.only) - set(spec["methods"]))
        if unknown:
            p.error(f"--only {unknown}: not in the sweep; its methods are {list(spec['methods'])}")
        runs = [r for r in runs if r.method in args.only]
    if args.executor == "slurm":
        threads = args.threads or SLURM_THREADS
    else:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    settings = submitit_settings(args, out, threads) if args.executor != "local" else None
    states = {r.name: run_state(out / "runs" / r.name) for r in runs}

    todo = [r for r in runs if states[r.name][0] != "done"]
    at_a_time = "all at once" if slurm_all else f"{args.jobs} at a time"
    print(f"sweep {args.config}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run "
          f"({at_a_time}, {threads} thread(s) each) -> {out}", flush=True)
    if settings is not None:
        print(f"executor {describe(args.executor, settings)} per run; submitit logs in {settings['logs']}",
              flush=True)
    for _, note in states.values():
        if note:
            print(f"note: {note}", flush=True)
    if args.dry_run:
        for run in runs:
            state = states[run.name][0]
            job = "" if settings is None else "  (finished: not submitted)" if state == "done" else \
                f"  -> {describe(args.executor, settings)}"
            print(f"  {state:<8} {run.name}{job}")
        return 0
    clean_temp_files(out, runs)
    if args.recollect:
        failed = 0
        for run in runs:
            if states[run.name][0] == "done":
                d = out / "runs" / run.name
                wall = read_json(d / "result.json")[0].get("wall_seconds")
                try:
                    result = collect(run, d, run_model(spec, run), wall)
                except Exception as exc:  # noqa: BLE001 (that run's files)
                    failed += 1
                    print(f"FAILED {run.name}: cannot collect its figures: {type(exc).__name__}: {exc}")
                    continue
                write_json_atomic(d / "result.json", result)
        print(f"recollected: {write_results(out, runs)}")
        return 1 if failed else 0
    (out / "runs").mkdir(parents=True, exist_ok=True)
    base_config = out / "base.yaml"
    atomic_write(base_config, yaml.safe_dump(spec["base"], sort_keys=False))
    lock, failed = threading.Lock(), []

    def report(run: Run, status: str, value) -> None:
        """A run's end: ``done`` (value: its result), ``busy`` or ``failed`` (value: why, one line)."""
        if status == "done":
            with lock:
                write_results(out, runs)
            r = value
            print(f"done  {run.name}: Acc@1 {r['acc1']:.2f}  sparsity {r['sparsity']:.4f}  "
                  f"SOPs {r['sops']:.3g}  {r['train_seconds']:.0f} s", flush=True)
            return
        with lock:
            failed.append(run.name)
        if status == "busy":
            print(f"SKIPPED {run.name}: {value}", flush=True)
        else:
            print(f"FAILED {run.name}: {value}; see {out / 'runs' / (run.name + '.log')}", flush=True)

    def start(run: Run) -> None:
        resumed = " (resuming)" if states[run.name][0] == "partial" else ""
        print(f"start {run.name}{resumed}", flush=True)

    def work(run: Run) -> None:
        start(run)
        report(run, *job_result(run_job(run, spec, out, base_config, threads)))

    if settings is None:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(work, todo))
    else:
        # the jobs import experiments.sweep (SubmittedRun) from this checkout
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        executor = make_executor(args.executor, settings)
        limit = len(todo) if slurm_all else args.jobs
        pending, running = list(todo), []
        poll = 10.0 if args.executor == "slurm" else 0.2
        while pending or running:
            while pending and len(running) < limit:
                run = pending.pop(0)
                start(run)
                try:
                    job = executor.submit(SubmittedRun(run_job(run, spec, out, base_config, threads)))
                except Exception as exc:  # noqa: BLE001 (sbatch refused it: that run's)
                    lines = str(exc).strip().splitlines() or [type(exc).__name__]
                    report(run, "failed", f"cannot submit it: {lines[-1][:300]}")
                    continue
                print(f"submitted {run.name}: job {job.job_id}", flush=True)
                running.append((run, job))
            ended = [(run, job) for run, job in running if job.done()]
            if not ended:
                time.sleep(poll)
                continue
            for run, job in ended:
                running.remove((run, job))
                report(run, *job_outcome(job))
    path = write_results(out, runs)
    print(f"{len(runs) - len(failed)} of {len(runs)} runs finished; results: {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    # run as experiments.sweep, not __main__: what a submitit job unpickles (SubmittedRun) is then importable
    from experiments.sweep import main as sweep_main
    sys.exit(sweep_main())
