"""experiments/gpu_check.py (`make gpu-check`): the plan cannot rot, the no-CUDA exit, the report writer, and
the two benchmark scripts it adds to (bench_neuron, bench_amp_train) run on CPU with tiny sizes."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import bench_amp_train, bench_neuron, gpu_check
from tests.conftest import HANG

ROOT = Path(__file__).resolve().parent.parent
STEP_NAMES = ["install-cuda-extra", "pytest-gpu", "bench-neuron", "bench-overhead", "bench-metrics",
              "amp-train-sew18", "ddp-smoke"]


def test_dry_run_lists_every_step_with_its_command(capsys):
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for i, step in enumerate(gpu_check.plan(), 1):
        assert f"{i}. {step.name}" in out and " ".join(step.argv) in out
    assert [s.name for s in gpu_check.plan()] == STEP_NAMES
    assert sum(s.timeout_s for s in gpu_check.plan()) <= 480  # the 8-minute budget


def _module_after(argv: list[str], flag: str = "-m") -> tuple[str, list[str]]:
    i = argv.index(flag)
    return argv[i + 1], argv[i + 2:]


@pytest.mark.parametrize("name", ["bench-neuron", "bench-overhead", "bench-metrics", "amp-train-sew18"])
def test_bench_steps_parse_their_planned_flags(name, monkeypatch):
    step = next(s for s in gpu_check.plan() if s.name == name)
    module, args = _module_after(step.argv)
    mod = importlib.import_module(module)
    captured = {}

    class Stop(Exception):
        pass

    real = __import__("argparse").ArgumentParser.parse_args

    def fake_parse(self, a=None, ns=None):
        captured["ns"] = real(self, args, ns)  # exits (SystemExit 2) on an unknown flag
        raise Stop

    monkeypatch.setattr("argparse.ArgumentParser.parse_args", fake_parse)
    with pytest.raises(Stop):
        mod.main()
    assert captured["ns"].device == "cuda"


def test_ddp_smoke_planned_flags_parse():
    step = next(s for s in gpu_check.plan() if s.name == "ddp-smoke")
    assert step.argv[1:3] == ["-m", "torch.distributed.run"]
    assert importlib.util.find_spec("torch.distributed.run") is not None
    train_args = step.argv[step.argv.index("experiments.train") + 1:]
    assert (ROOT / train_args[train_args.index("-c") + 1]).exists()
    from experiments import args as train_argparse  # noqa: F401 - the module exists
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *train_args, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr


def test_other_steps_point_at_real_things():
    steps = {s.name: s for s in gpu_check.plan()}
    assert (ROOT / "constraints.txt").exists() and "[cuda]" in steps["install-cuda-extra"].argv[-1]
    assert 'gpu: needs CUDA' in (ROOT / "pyproject.toml").read_text()  # the marker pytest -m gpu selects


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_exits_2_and_writes_no_report(tmp_path):
    report = tmp_path / "gpu_report.md"
    proc = subprocess.run([sys.executable, "-m", "experiments.gpu_check", "--report", str(report)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr
    assert not report.exists()


def test_report_sections_from_fake_results():
    env = {"GPU": "NVIDIA H200", "driver": "580.00", "torch": "2.x", "cupy": "13.x", "spikingjelly": "2.x"}
    results = [gpu_check.StepResult("bench-neuron", "python -m experiments.bench_neuron", "ok", 3.0, 0,
                                    "", [{"variant": "ours cupy", "ms": 1.25, "gb_per_s": 3000.0}]),
               gpu_check.StepResult("ddp-smoke", "torchrun ...", "timeout", 60.0, None, "stuck in NCCL init"),
               gpu_check.StepResult("install-cuda-extra", "pip ...", "skipped", 0.0)]
    text = gpu_check.render_report(env, results)
    for section in ("# GPU check report", "## Environment", "## Summary", "## bench-neuron", "## ddp-smoke"):
        assert section in text
    assert "NVIDIA H200" in text and "580.00" in text
    assert "| ours cupy | 1.25 | 3000 |" in text
    assert "FAILED: ddp-smoke" in text and "stuck in NCCL init" in text


def test_run_step_records_failure_and_timeout(tmp_path):
    py = sys.executable
    ok = gpu_check.run_step(gpu_check.Step("ok", [py, "-c", "print('hi')"], 30), tmp_path)
    bad = gpu_check.run_step(gpu_check.Step("bad", [py, "-c", "raise SystemExit(3)"], 30), tmp_path)
    slow = gpu_check.run_step(gpu_check.Step("slow", [py, "-c", "import time; time.sleep(30)"], 1), tmp_path)
    assert (ok.status, bad.status, bad.returncode, slow.status) == ("ok", "failed", 3, "timeout")


def test_bytes_model_closed_form():
    t, b, c, h, w = 4, 32, 64, 56, 56
    n = b * c * h * w
    for elem in (4, 2):
        # forward: x (elem) + spikes (elem) + h (4); backward: grad_spikes (elem) + h (4) + grad_x (elem);
        # per-neuron state v and its gradient (fp32) read and written once: 16 bytes
        assert bench_neuron.bytes_moved((t, b, c, h, w), elem) == t * n * (4 * elem + 8) + 16 * n
        # recompute: forward x + spikes (2·elem); backward grad_spikes + x + grad_x (3·elem); per neuron
        # v0 (read by both kernels), v_last, grad_v_last, grad_v0: 20 bytes
        assert bench_neuron.bytes_moved((t, b, c, h, w), elem, recompute=True) == t * n * 5 * elem + 20 * n
        assert bench_neuron.bytes_moved((t, b, c, h, w), elem, recompute=True) < \
            bench_neuron.bytes_moved((t, b, c, h, w), elem)
    assert bench_neuron.bytes_moved((2, 3), 4) == 2 * 3 * 24 + 48
    assert bench_neuron.bytes_moved((2, 3), 2, recompute=True) == 2 * 3 * 10 + 60
    assert bench_neuron.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert bench_neuron.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench_neuron.peak_bandwidth("NVIDIA GeForce RTX 4090") is None


def test_bench_neuron_runs_on_cpu(tmp_path):
    rows = bench_neuron.main(["--device", "cpu", "--shapes", "2,2,4,8,8", "--repeats", "2",
                              "--dtypes", "float32", "--out", str(tmp_path / "n.json")])
    assert {r["variant"] for r in rows} >= {"ours torch", "ours torch recompute"}
    assert all(r["ms"] > 0 for r in rows)
    by_variant = {r["variant"]: r for r in rows}
    shape = (2, 2, 4, 8, 8)
    assert by_variant["ours torch"]["bytes_model"] == "stored-h"
    assert by_variant["ours torch"]["bytes_moved"] == bench_neuron.bytes_moved(shape, 4)
    assert by_variant["ours torch recompute"]["bytes_model"] == "recompute"
    assert by_variant["ours torch recompute"]["bytes_moved"] == bench_neuron.bytes_moved(shape, 4, True)
    assert all(r["gb_per_s"] > 0 for r in rows) and (tmp_path / "n.json").exists()


@pytest.mark.parametrize("neuron", ["if", "plif"])
def test_bench_amp_train_runs_on_cpu(tmp_path, neuron):
    rows = bench_amp_train.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--batch-size", "1",
                                 "--image-size", "32", "--width-multiplier", "0.125", "--neuron", neuron,
                                 "--out", str(tmp_path / "a.json")])
    assert [r["variant"] for r in rows] == ["fused", "spikingjelly", "dense"]
    assert {r["neuron"] for r in rows} == {neuron}
    assert all(r["img_per_s"] > 0 for r in rows) and (tmp_path / "a.json").exists()
