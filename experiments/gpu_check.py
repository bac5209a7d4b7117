"""`make gpu-check`: one command for a CUDA GPU machine (at most ~8 minutes), writing docs/gpu_report.md.

    python -m experiments.gpu_check              # needs CUDA; exit 2 (before doing anything) without it
    python -m experiments.gpu_check --dry-run    # print the plan (every step and its command), run nothing

Steps (each under its own timeout; a failed or timed-out step is recorded in the report, never hidden, and the
command exits 1 if any step failed): install the [cuda] extra if cupy is missing, `pytest -m gpu`, the fused
neuron benchmark, bench_overhead and bench_metrics on CUDA, a 60-step AMP training timing of SEW ResNet-18,
and a 1-GPU NCCL DDP smoke run of experiments/train.py under torchrun. The report is written atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from snn_lats.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("runs/gpu_check")
REPORT = Path("docs/gpu_report.md")


@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]
    timeout_s: int
    json_out: str | None = None  # where the step writes its rows, read back into the report
    skip_if: str | None = None  # "cupy" -> skipped when cupy imports already


@dataclasses.dataclass
class StepResult:
    name: str
    command: str
    status: str  # "ok", "failed", "timeout", "skipped"
    seconds: float
    returncode: int | None = None
    output_tail: str = ""
    rows: list | None = None


def plan(python: str = sys.executable) -> list[Step]:
    r = RESULTS
    neuron_json, overhead_json, metrics_json, amp_json = (
        str(r / f"{n}.json") for n in ("bench_neuron", "bench_overhead", "bench_metrics", "bench_amp_train"))
    return [
        Step("install-cuda-extra",
             [python, "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", ".[cuda]"],
             100, skip_if="cupy"),
        Step("pytest-gpu", [python, "-m", "pytest", "-q", "-m", "gpu"], 50),
        Step("bench-neuron",
             [python, "-m", "experiments.bench_neuron", "--device", "cuda", "--repeats", "10",
              "--dtypes", "float32", "float16", "bfloat16", "--out", neuron_json],
             50, json_out=neuron_json),
        Step("bench-overhead",
             [python, "-m", "experiments.bench_overhead", "--device", "cuda", "--repeats", "10",
              "--out", overhead_json], 50, json_out=overhead_json),
        Step("bench-metrics",
             [python, "-m", "experiments.bench_metrics", "--device", "cuda", "--repeats", "5",
              "--out", metrics_json], 40, json_out=metrics_json),
        Step("amp-train-sew18",
             [python, "-m", "experiments.bench_amp_train", "--device", "cuda", "--steps", "60",
              "--batch-size", "32", "--image-size", "224", "--T", "4", "--out", amp_json],
             120, json_out=amp_json),
        Step("ddp-smoke",
             [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
              "-m", "experiments.train", "-c", "experiments/configs/demo_digits.yaml",
              "--device", "cuda", "--epochs", "1", "--output-dir", str(r / "ddp_smoke")], 60),
    ]


def run_step(step: Step, cwd: Path = ROOT) -> StepResult:
    command = " ".join(step.argv)
    if step.skip_if and importlib.util.find_spec(step.skip_if) is not None:
        return StepResult(step.name, command, "skipped", 0.0, output_tail=f"{step.skip_if} already installed")
    start = time.perf_counter()
    try:
        proc = subprocess.run(step.argv, cwd=cwd, capture_output=True, text=True, timeout=step.timeout_s)
    except subprocess.TimeoutExpired as e:
        out = "".join(v.decode(errors="replace") if isinstance(v, bytes) else (v or "")
                      for v in (e.stdout, e.stderr))
        return StepResult(step.name, command, "timeout", time.perf_counter() - start,
                          output_tail=f"timed out after {step.timeout_s} s\n{out[-3000:]}")
    result = StepResult(step.name, command, "ok" if proc.returncode == 0 else "failed",
                        time.perf_counter() - start, proc.returncode, (proc.stdout + proc.stderr)[-3000:])
    if step.json_out and proc.returncode == 0:
        try:
            result.rows = json.loads((cwd / step.json_out).read_text())
        except (OSError, ValueError) as e:
            result.output_tail += f"\n(could not read {step.json_out}: {e})"
    return result


def environment() -> dict:
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch CUDA": torch.version.cuda}
    if torch.cuda.is_available():
        env["GPU"] = torch.cuda.get_device_name(0)
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        env["driver"] = "unknown (no nvidia-smi)"
    for mod in ("cupy", "spikingjelly", "snn_lats"):
        try:
            env[mod] = getattr(__import__(mod), "__version__", "installed (no __version__)")
        except Exception as e:  # noqa: BLE001 - a broken install is a result to report
            env[mod] = f"not importable ({type(e).__name__})"
    return env


def _table(rows: list[dict]) -> list[str]:
    if not rows or not isinstance(rows, list) or not isinstance(rows[0], dict):
        return [f"```\n{json.dumps(rows, indent=1)[:4000]}\n```"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] + [
        "| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows]


def render_report(env: dict, results: list[StepResult]) -> str:
    failed = [r.name for r in results if r.status in ("failed", "timeout")]
    lines = ["# GPU check report", "",
             "Written by `make gpu-check` (experiments/gpu_check.py); see docs/gpu_check.md.",
             "", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", "## Summary", "", "| step | status | seconds | exit |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {'' if r.returncode is None else r.returncode} |"
              for r in results]
    lines += ["", f"**{'FAILED: ' + ', '.join(failed) if failed else 'all steps passed'}**", ""]
    for r in results:
        lines += [f"## {r.name}", "", f"`{r.command}`", "", f"status: {r.status}", ""]
        if r.rows is not None:
            lines += _table(r.rows) + [""]
        if r.status != "ok" or r.rows is None:
            lines += ["```", r.output_tail.strip()[-3000:], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit 0, running nothing")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    steps = plan()
    if args.dry_run:
        total = sum(s.timeout_s for s in steps)
        for i, s in enumerate(steps, 1):
            print(f"{i}. {s.name} (timeout {s.timeout_s} s): {' '.join(s.argv)}")
        print(f"total budget {total} s")
        return 0
    import torch
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine",
              file=sys.stderr)
        return 2
    (ROOT / RESULTS).mkdir(parents=True, exist_ok=True)
    results = []
    for s in steps:
        print(f"== {s.name}: {' '.join(s.argv)}", flush=True)
        results.append(run_step(s))
        print(f"   {results[-1].status} in {results[-1].seconds:.1f} s", flush=True)
    report = args.report if args.report.is_absolute() else ROOT / args.report
    atomic_write(report, render_report(environment(), results))
    print(f"wrote {report}")
    return 1 if any(r.status in ("failed", "timeout") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
