"""`make gpu-check`: every GPU check in one command on the GPU machine, writing docs/gpu_report.md.

    python3 -m experiments.gpu_check --wheels .whl --out "$OUT"   # on the GPU machine (docs/gpu_check.md)
    python -m experiments.gpu_check --dry-run --wheels .whl        # print the plan, run nothing
    python -m experiments.gpu_check --wheels .whl --install-only   # the offline install and its import check
    python3 -m experiments.gpu_check --wheels .whl --steps pytest-gpu --out "$OUT"   # rerun what failed

It never reaches a package index. The GPU machine has no network and its python3 lacks SpikingJelly and
torch-pruning, so `make gpu-wheels` downloads those here into .whl/, and the first step installs them there
with `pip install --no-index --no-deps --target SITE`; SITE and the repository go on PYTHONPATH for every
later step, run with the same interpreter (no virtual environment, no editable install). CuPy must already
import (the GPU image has cupy-cuda13x): the check-imports step fails, saying so, where it does not. Without
--wheels the interpreter must hold everything itself (a venv with `pip install -e ".[cuda]"`).

Steps: install-wheels, check-imports, `pytest -m gpu` over the test files holding GPU tests, the fused
kernels' registers, spills and occupancy (ptxas and the driver: experiments/kernel_resources.py), the fused
LIF and PLIF benchmark, bench_overhead and bench_metrics on CUDA, a 60-step AMP training timing of SEW
ResNet-18, and a 1-GPU NCCL DDP smoke run of experiments/train.py under torchrun. Each runs as a subprocess
under its own timeout, and all of them within --budget-s (a step that the budget no longer allows is recorded
as not run), so the whole check ends inside one 10-minute device call. A failed, timed-out or not-run step is
in the report, never hidden, and the command then exits 1. Without CUDA it exits 2 before doing anything
(--dry-run and --install-only need none). The report is rewritten after every step; --out DIR gets it,
gpu_check.json (every step's result) and the benchmarks' JSON rows, flat, each time, so a call cut off still
brings back what ran.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from snn_lats.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("runs/gpu_check")
SITE = RESULTS / "site"  # where --wheels are installed (--target)
REPORT = Path("docs/gpu_report.md")
BUDGET_S = 540  # the whole check; a device call may run 600 s
REPORT_RESERVE_S = 15  # kept back from the budget for the final report
BENCH_JSON = ("kernel_resources", "bench_neuron", "bench_overhead", "bench_metrics", "bench_amp_train")
OUT_FILES = ("gpu_report.md", "gpu_check.json", *(f"{n}.json" for n in BENCH_JSON))
# bench_neuron's shapes and a T = RECOMPUTE_MAX_T one of as many elements as its T = 8 one: the recompute
# backward at the T where it holds the most registers (docs/benchmarks.md: 25 % occupancy), timed
NEURON_SHAPES = ("4,32,64,56,56", "4,32,128,28,28", "8,16,256,14,14", "32,4,256,14,14")

# module -> what provides it, for check-imports' message when it does not import
GPU_IMPORTS = {
    "cupy": "cupy-cuda13x: in the GPU image; elsewhere `pip install -e \".[cuda]\"` (gpu-check installs "
            "nothing from an index)",
    "spikingjelly.activation_based.neuron": "spikingjelly: a carried wheel (make gpu-wheels, --wheels .whl)",
    "torch_pruning": "torch-pruning: a carried wheel (make gpu-wheels, --wheels .whl)",
    "loguru": "loguru: a carried wheel (SpikingJelly 2.0 imports it)",
    "torchvision": "torchvision: in the GPU image",
    "yaml": "pyyaml: in the GPU image",
    "pytest": "pytest: in the GPU image",
    "snn_lats": "this repository, on PYTHONPATH",
}
CARRIED_IMPORTS = ("spikingjelly.activation_based.neuron", "torch_pruning", "loguru", "snn_lats")
# never in an install command: they would reach an index or install this repository
INDEX_FLAGS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-e", "--editable", "-c",
               "--constraint", "-r", "--requirement")


@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]
    timeout_s: int
    json_out: str | None = None  # where the step writes its rows, read back into the report
    summary: bool = False  # the report shows the step's printed summary, not a table of its rows


@dataclasses.dataclass
class StepResult:
    name: str
    command: str
    status: str  # "ok", "failed", "timeout", "not run"
    seconds: float
    returncode: int | None = None
    output_tail: str = ""
    rows: list | None = None
    summary: bool = False


def install_argv(python: str, wheels: list[Path], site: Path) -> list[str]:
    """pip install of exactly these wheel files into ``site``, offline: no index, no dependencies resolved."""
    return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--only-binary=:all:", "--no-compile",
            "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--quiet", "--target", str(site),
            *(str(w) for w in wheels)]


def wheel_files(folder: Path) -> list[Path]:
    """The wheels to install, sorted; ValueError (naming the folder and the fix) if there are none or two of
    one distribution (pip would refuse the whole install)."""
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        raise ValueError(f"{folder} holds no .whl files: run `make gpu-wheels` here (it needs PyPI) and "
                         "carry that folder")
    names = [re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower() for w in wheels]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"{folder} holds two wheels of {', '.join(twice)}: keep one version of each")
    return wheels


def gpu_test_files(root: Path = ROOT) -> list[str]:
    """The test files that hold `gpu`-marked tests: pytest then imports only these."""
    marked = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\b.*\bpytest\.mark\.gpu\b)", re.M)
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if marked.search(p.read_text()))


def plan(python: str = sys.executable, wheels: list[Path] | None = None, site: Path = SITE) -> list[Step]:
    r = RESULTS
    resources_json, neuron_json, overhead_json, metrics_json, amp_json = (str(r / f"{n}.json")
                                                                          for n in BENCH_JSON)
    steps = [Step("install-wheels", install_argv(python, wheels, site), 15)] if wheels else []
    return steps + [
        Step("check-imports", [python, "-m", "experiments.gpu_check", "--check-imports"], 20),
        Step("pytest-gpu", [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "gpu",
                            *gpu_test_files()], 90),
        # every neuron kind, both surrogates, T up to RECOMPUTE_MAX_T: ptxas' figures on the image's NVRTC
        # and the driver's for the same cubins and for the cupy backend's own build (docs/benchmarks.md
        # has the full table, compiled without a GPU)
        Step("kernel-resources",
             [python, "-m", "experiments.kernel_resources", "--driver", "--arch", "sm_90", "--resets", "hard",
              "--detach", "detach", "--steps", "1", "4", "8", "16", "32", "--markdown", "--out",
              resources_json], 20, json_out=resources_json, summary=True),
        Step("bench-neuron",
             [python, "-m", "experiments.bench_neuron", "--device", "cuda", "--neuron", "lif", "plif",
              "--shapes", *NEURON_SHAPES, "--repeats", "10", "--dtypes", "float32", "float16", "bfloat16",
              "--out", neuron_json],
             80, json_out=neuron_json),
        Step("bench-overhead",
             [python, "-m", "experiments.bench_overhead", "--device", "cuda", "--repeats", "10",
              "--out", overhead_json], 40, json_out=overhead_json),
        Step("bench-metrics",
             [python, "-m", "experiments.bench_metrics", "--device", "cuda", "--repeats", "5",
              "--out", metrics_json], 35, json_out=metrics_json),
        Step("amp-train-sew18",
             [python, "-m", "experiments.bench_amp_train", "--device", "cuda", "--steps", "60",
              "--batch-size", "32", "--image-size", "224", "--T", "4", "--out", amp_json],
             120, json_out=amp_json),
        Step("ddp-smoke",
             [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
              "-m", "experiments.train", "-c", "experiments/configs/demo_digits.yaml",
              "--device", "cuda", "--epochs", "1", "--output-dir", str(r / "ddp_smoke")], 50),
    ]


def step_env(site: Path | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every step: ``site`` (the installed wheels), then the repository, first on
    PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    paths = ([str(site)] if site is not None else []) + [str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_step(step: Step, cwd: Path = ROOT, env: dict[str, str] | None = None,
             timeout_s: float | None = None) -> StepResult:
    """Run one step under ``timeout_s`` (default: its own), recording its end, never raising for it. The step
    gets its own process group, all of which is killed at the timeout (torchrun's workers too)."""
    command = " ".join(step.argv)
    timeout_s = step.timeout_s if timeout_s is None else timeout_s
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(step.argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", process_group=0)
    except OSError as e:  # e.g. the interpreter is missing
        return StepResult(step.name, command, "failed", time.perf_counter() - start,
                          output_tail=f"could not start: {e}")
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return StepResult(step.name, command, "timeout", time.perf_counter() - start,
                          output_tail=f"timed out after {timeout_s:.0f} s\n{out[-3000:]}")
    tail = out[-(8000 if step.summary else 3000):]  # a summary is the report's section: keep all of it
    result = StepResult(step.name, command, "ok" if proc.returncode == 0 else "failed",
                        time.perf_counter() - start, proc.returncode, tail, summary=step.summary)
    if step.json_out and proc.returncode == 0:
        try:
            result.rows = json.loads((cwd / step.json_out).read_text())
        except (OSError, ValueError) as e:
            result.output_tail += f"\n(could not read {step.json_out}: {e})"
    return result


def run_steps(steps: list[Step], budget_s: float, env: dict[str, str] | None = None, cwd: Path = ROOT,
              after_each=None, clock=time.monotonic) -> list[StepResult]:
    """Each step under min(its timeout, what is left of ``budget_s`` less the report's reserve); a step with
    under 5 s left is not started and recorded as "not run". ``after_each(results)`` follows every step."""
    deadline = clock() + budget_s - REPORT_RESERVE_S
    results = []
    for s in steps:
        left = deadline - clock()
        print(f"== {s.name}: {' '.join(s.argv)}", flush=True)
        if left < 5:
            results.append(StepResult(s.name, " ".join(s.argv), "not run", 0.0, output_tail=(
                f"not started: the check's budget of {budget_s:.0f} s was spent (raise --budget-s)")))
        else:
            results.append(run_step(s, cwd, env, min(s.timeout_s, left)))
        print(f"   {results[-1].status} in {results[-1].seconds:.1f} s", flush=True)
        if after_each is not None:
            after_each(results)
    return results


def _version(module: str) -> str:
    """The installed distribution's version of a top-level module (SpikingJelly has no __version__, and
    torch_pruning 1.6.1's says 1.6.0), else its __version__."""
    from importlib import metadata
    try:
        return metadata.version(metadata.packages_distributions()[module][0])
    except (KeyError, IndexError, metadata.PackageNotFoundError):
        return getattr(sys.modules.get(module), "__version__", "(no version)")


def check_imports(modules) -> int:
    """Import each module; one line each: its version and file, or MISSING with what provides it. CuPy must
    also see a CUDA device. 0 when all import, else 1."""
    missing = 0
    for name in modules:
        try:
            mod = importlib.import_module(name)
            detail = ""
            if name == "cupy":
                detail = (f" CUDA runtime {mod.cuda.runtime.runtimeGetVersion()},"
                          f" {mod.cuda.runtime.getDeviceCount()} device(s)")
            print(f"ok       {name} {_version(name.split('.')[0])}{detail} "
                  f"from {getattr(mod, '__file__', '?')}")
        except Exception as e:  # noqa: BLE001 - any failure to import is the finding
            missing += 1
            print(f"MISSING  {name}: {type(e).__name__}: {e} -> {GPU_IMPORTS.get(name, 'not provided')}")
    return 1 if missing else 0


def environment() -> dict:
    import torch
    env = {"python": f"{platform.python_version()} ({sys.executable})", "torch": torch.__version__,
           "torch CUDA": torch.version.cuda}
    if torch.cuda.is_available():
        env["GPU"] = torch.cuda.get_device_name(0)
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        env["driver"] = "unknown (no nvidia-smi)"
    for mod in ("cupy", "spikingjelly", "torch_pruning", "snn_lats"):
        try:
            env[mod] = f"{_version(mod)} ({Path(importlib.import_module(mod).__file__).parent})"
        except Exception as e:  # noqa: BLE001 - a broken install is a result to report
            env[mod] = f"not importable ({type(e).__name__}: {e})"
    return env


def _table(rows: list[dict]) -> list[str]:
    if not rows or not isinstance(rows, list) or not isinstance(rows[0], dict):
        return [f"```\n{json.dumps(rows, indent=1)[:4000]}\n```"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    nested = [k for k in keys if any(isinstance(row.get(k), (list, dict)) for row in rows)]
    keys = [k for k in keys if k not in nested]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] + [
        "| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows] + (
        [f"\n(left out here, in the JSON: {', '.join(nested)})"] if nested else [])


def render_report(env: dict, results: list[StepResult], planned: int | None = None) -> str:
    failed = [r.name for r in results if r.status in ("failed", "timeout", "not run")]
    lines = ["# GPU check report", "",
             "Written by `make gpu-check` (experiments/gpu_check.py); see docs/gpu_check.md.",
             "", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", "## Summary", "", "| step | status | seconds | exit |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {'' if r.returncode is None else r.returncode} |"
              for r in results]
    verdict = "FAILED: " + ", ".join(failed) if failed else "all steps passed"
    if planned is not None and len(results) < planned:
        verdict = f"INCOMPLETE: {len(results)} of {planned} steps ran" + (f"; {verdict}" if failed else "")
    lines += ["", f"**{verdict}**", ""]
    for r in results:
        lines += [f"## {r.name}", "", f"`{r.command}`", "", f"status: {r.status}", ""]
        if r.rows is not None and r.summary and r.status == "ok":
            lines += [r.output_tail.strip(), "",
                      f"({len(r.rows)} rows in gpu_check.json and the step's JSON)", ""]
            continue
        if r.rows is not None:
            lines += _table(r.rows) + [""]
        if r.status != "ok" or r.rows is None:
            lines += ["```", r.output_tail.strip()[-3000:], "```", ""]
    return "\n".join(lines)


def write_results(report: Path, env: dict, results: list[StepResult], planned: int, out: Path | None,
                  results_dir: Path = ROOT / RESULTS) -> None:
    """The report, and with ``out`` a flat copy of it, gpu_check.json and the benchmarks' rows there."""
    text = render_report(env, results, planned)
    report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(report, text)
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "gpu_report.md", text)
    summary = {"environment": env, "planned_steps": planned,
               "steps": [dataclasses.asdict(r) for r in results]}
    atomic_write(out / "gpu_check.json", json.dumps(summary, indent=1))
    for name in BENCH_JSON:
        rows = results_dir / f"{name}.json"
        if rows.is_file():
            atomic_write(out / rows.name, rows.read_text())


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else ROOT / path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit 0, running nothing")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="install these wheels (made by `make gpu-wheels`) offline first")
    parser.add_argument("--site", type=Path, default=SITE, help=f"where --wheels go (default {SITE})")
    parser.add_argument("--install-only", action="store_true",
                        help="only install --wheels and check that the carried packages import (no GPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also copy the report, gpu_check.json and the JSON rows here, flat (e.g. $OUT)")
    parser.add_argument("--steps", nargs="+", metavar="STEP", default=None,
                        help="run only these steps (install-wheels still comes first with --wheels): a "
                             "rerun of what failed")
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"the whole check's time (default {BUDGET_S}: one 600 s device call)")
    parser.add_argument("--check-imports", nargs="*", metavar="MODULE", default=None,
                        help="(a step) import these modules, default every one the GPU steps need; exit 1 "
                             "if any fails")
    args = parser.parse_args(argv)
    if args.check_imports is not None:
        return check_imports(args.check_imports or list(GPU_IMPORTS))
    if args.budget_s < 60:
        parser.error(f"--budget-s must be at least 60, got {args.budget_s:g}")
    if args.install_only and not args.wheels:
        parser.error("--install-only needs --wheels DIR")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    wheels, site = None, _resolve(args.site)
    if args.wheels is not None:
        try:
            wheels = wheel_files(_resolve(args.wheels))
        except ValueError as e:
            parser.error(f"--wheels: {e}")
    steps = plan(wheels=wheels, site=site)
    if args.steps is not None:
        names = [s.name for s in steps]
        if unknown := [n for n in args.steps if n not in names]:
            parser.error(f"--steps: no step {', '.join(unknown)}; the steps are {', '.join(names)}")
        steps = [s for s in steps if s.name in args.steps or s.name == "install-wheels"]
    if args.dry_run:
        for i, s in enumerate(steps, 1):
            print(f"{i}. {s.name} (timeout {s.timeout_s} s): {' '.join(s.argv)}")
        pythonpath = step_env(site if wheels else None)["PYTHONPATH"]
        print(f"total of the step timeouts {sum(s.timeout_s for s in steps)} s, within --budget-s "
              f"{args.budget_s:g} s; steps run with PYTHONPATH={pythonpath}")
        return 0
    env = step_env(site if wheels else None)
    if args.install_only:  # the plan's own install step, then the carried imports
        check = Step("check-imports", [sys.executable, "-m", "experiments.gpu_check", "--check-imports",
                                       *CARRIED_IMPORTS], 60)
        results = run_steps([steps[0], check], args.budget_s, env)
        for r in results:
            print(f"-- {r.name}: {r.status}\n{r.output_tail.strip()}")
        return 0 if all(r.status == "ok" for r in results) else 1
    import torch
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine",
              file=sys.stderr)
        return 2
    (ROOT / RESULTS).mkdir(parents=True, exist_ok=True)
    report, out = _resolve(args.report), args.out
    env_info: dict = {}

    def after_each(results: list[StepResult]) -> None:
        if not env_info:  # once the wheels are installed, so that their versions show
            if wheels:
                sys.path.insert(0, str(site))
                importlib.invalidate_caches()
            env_info.update(environment())
        write_results(report, env_info, results, len(steps), out)

    results = run_steps(steps, args.budget_s, env, after_each=after_each)
    print(f"wrote {report}" + (f" and {out}" if out else ""))
    return 1 if any(r.status != "ok" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
