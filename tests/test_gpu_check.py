"""experiments/gpu_check.py (`make gpu-check`): the plan cannot rot, it never reaches a package index, the
offline install works, the step budget fits one device call, the no-CUDA exit, the report and what --out gets,
and the two benchmark scripts it adds to (bench_neuron, bench_amp_train) run on CPU with tiny sizes."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import bench_amp_train, bench_neuron, gpu_check
from snn_lats.snn import cuda_kernels
from tests.conftest import HANG
from tests.fake_wheels import make_wheel

ROOT = Path(__file__).resolve().parent.parent
STEP_NAMES = ["install-wheels", "check-imports", "pytest-gpu", "kernel-resources", "bench-neuron",
              "bench-overhead", "bench-metrics", "amp-train-sew18", "ddp-smoke"]
PLAN_TOTAL_S = 470  # the step timeouts' sum that the issue set; more needs the budget shown to allow it
DEVICE_CALL_S = 600  # one device `run` call


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "whl"
    return [make_wheel(folder, "snn-probe-a", "1.0"), make_wheel(folder, "snn_probe_b", "2.0")]


def test_dry_run_lists_every_step_with_its_command(capsys, wheels):
    assert gpu_check.main(["--dry-run", "--wheels", str(wheels[0].parent)]) == 0
    out = capsys.readouterr().out
    steps = gpu_check.plan(wheels=wheels, site=ROOT / gpu_check.SITE)
    for i, step in enumerate(steps, 1):
        assert f"{i}. {step.name}" in out and " ".join(step.argv) in out
    assert [s.name for s in steps] == STEP_NAMES
    assert [s.name for s in gpu_check.plan()] == STEP_NAMES[1:]  # no --wheels: nothing to install
    # the step timeouts fit the budget with the report's reserve, and the budget one device call with a margin
    assert sum(s.timeout_s for s in steps) <= gpu_check.BUDGET_S - gpu_check.REPORT_RESERVE_S - 30
    assert sum(s.timeout_s for s in steps) <= PLAN_TOTAL_S
    assert gpu_check.BUDGET_S <= DEVICE_CALL_S - 45
    assert f"PYTHONPATH={ROOT / gpu_check.SITE}:{ROOT}" in out


def test_steps_reruns_a_subset_after_the_install(capsys, wheels):
    argv = ["--dry-run", "--wheels", str(wheels[0].parent), "--steps", "ddp-smoke", "pytest-gpu"]
    assert gpu_check.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\d+\. ", line)]
    # in the plan's order
    assert [line.split(" ")[1] for line in lines] == ["install-wheels", "pytest-gpu", "ddp-smoke"]


def test_the_documented_device_command(wheels, capsys):
    """docs/gpu_check.md's `run` command fits the tool (2000 characters), parses, and carries .whl/, which git
    ignores and `make gpu-wheels` fills."""
    doc = (ROOT / "docs" / "gpu_check.md").read_text()
    command = next(line.strip() for line in doc.splitlines() if line.strip().startswith("set -o pipefail"))
    assert len(command) <= 2000 and '`carry`: `[".whl"]`' in doc and "`timeout_s`: `600`" in doc
    args = shlex.split(command.split("python3 -m experiments.gpu_check", 1)[1].split("2>&1")[0])
    assert args[:2] == ["--wheels", ".whl"] and "--out" in args
    assert gpu_check.main([str(wheels[0].parent) if a == ".whl" else a for a in args] + ["--dry-run"]) == 0
    assert "1. install-wheels" in capsys.readouterr().out
    assert "GPU_WHEELS := .whl" in (ROOT / "Makefile").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".whl/x.whl"], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, ".whl/ must be git-ignored"


def test_nothing_reaches_a_package_index(wheels, tmp_path):
    steps = {s.name: s for s in gpu_check.plan(python="PY", wheels=wheels, site=tmp_path / "site")}
    install = steps["install-wheels"].argv
    assert install[:4] == ["PY", "-m", "pip", "install"]
    assert {"--no-index", "--no-deps", "--only-binary=:all:"} <= set(install)
    assert install[install.index("--target") + 1] == str(tmp_path / "site")
    assert install[-2:] == [str(w) for w in wheels]  # exactly these files, nothing resolved by name
    assert not set(install) & set(gpu_check.INDEX_FLAGS)
    assert not any(a.startswith(("http", "--index", "--extra-index", "--find-links")) for a in install)
    for step in steps.values():  # pip runs in the install step alone
        assert step is steps["install-wheels"] or "pip" not in step.argv, step.name
        assert step.argv[0] == "PY"  # every step with the same interpreter


def test_offline_install_of_real_wheel_files(wheels, tmp_path):
    site = tmp_path / "site"
    step = gpu_check.plan(wheels=gpu_check.wheel_files(wheels[0].parent), site=site)[0]
    result = gpu_check.run_step(step, ROOT, gpu_check.step_env(site))
    assert result.status == "ok", result.output_tail
    assert {"snn_probe_a", "snn_probe_b"} <= {p.name for p in site.iterdir()}
    probe = subprocess.run([sys.executable, "-c", "import snn_probe_a, snn_probe_b, snn_lats; "
                            "print(snn_probe_a.VALUE, snn_probe_b.VALUE, snn_lats.__file__)"],
                           cwd=tmp_path, env=gpu_check.step_env(site), capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["1.0", "2.0", str(ROOT / "snn_lats" / "__init__.py")]


def test_wheel_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no .whl files.*make gpu-wheels"):
        gpu_check.wheel_files(tmp_path)
    make_wheel(tmp_path, "torch_pruning", "1.6.1")
    make_wheel(tmp_path, "torch-pruning", "1.6.0", tag="py3-none-any")
    with pytest.raises(ValueError, match="two wheels of torch-pruning"):
        gpu_check.wheel_files(tmp_path)


def test_bad_arguments_exit_2_before_anything(tmp_path, capsys):
    for argv, message in ((["--install-only"], "--install-only needs --wheels"),
                          (["--wheels", str(tmp_path)], "--wheels: .*no .whl files"),
                          (["--budget-s", "10"], "--budget-s must be at least 60"),
                          (["--steps", "pytest-gpu", "bench"],
                           "--steps: no step bench; the steps are check-imports")):
        with pytest.raises(SystemExit) as e:
            gpu_check.main(argv)
        assert e.value.code == 2 and re.search(message, capsys.readouterr().err), argv
    assert list(tmp_path.iterdir()) == []


def test_step_env_puts_site_then_repository_first(tmp_path):
    env = gpu_check.step_env(tmp_path, {"PYTHONPATH": "/elsewhere", "HOME": "/root"})
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), str(ROOT), "/elsewhere"] and env["HOME"] == "/root"
    assert gpu_check.step_env(None, {})["PYTHONPATH"] == str(ROOT)


def test_check_imports_names_what_is_missing_and_where_it_comes_from(capsys):
    assert gpu_check.check_imports(["json", "snn_lats"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok +snn_lats 0\.1\.0 .*from " + re.escape(str(ROOT / "snn_lats")), out, re.M)
    assert gpu_check.check_imports(["json", "snn_lats_no_such_module"]) == 1
    assert "MISSING  snn_lats_no_such_module: ModuleNotFoundError" in capsys.readouterr().out
    if importlib.util.find_spec("cupy") is None:  # the GPU image has it; this machine may not
        assert gpu_check.main(["--check-imports", "cupy"]) == 1
        assert "installs nothing from an index" in capsys.readouterr().out


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
    assert captured["ns"].out == Path(step.json_out) and Path(step.json_out).name in gpu_check.OUT_FILES


def test_kernel_resources_step_parses_its_planned_flags(monkeypatch):
    from experiments import kernel_resources

    step = next(s for s in gpu_check.plan() if s.name == "kernel-resources")
    module, args = _module_after(step.argv)
    assert module == "experiments.kernel_resources" and step.summary
    captured = {}

    class Stop(Exception):
        pass

    real = __import__("argparse").ArgumentParser.parse_args

    def fake_parse(self, a=None, ns=None):
        captured["ns"] = real(self, args, ns)
        raise Stop

    monkeypatch.setattr("argparse.ArgumentParser.parse_args", fake_parse)
    with pytest.raises(Stop):
        kernel_resources.main()
    ns = captured["ns"]
    assert ns.driver and ns.arch == "sm_90" and ns.markdown  # H100 and H200 are sm_90
    assert max(ns.steps) == cuda_kernels.RECOMPUTE_MAX_T and set(ns.neurons) == set(kernel_resources.NEURONS)
    assert ns.out == Path(step.json_out) and Path(step.json_out).name in gpu_check.OUT_FILES
    # what it compiles there: every neuron, both surrogates, all dtypes, the four kinds at five T
    chosen = kernel_resources.select(ns.neurons, ns.resets, ns.detach, ns.surrogates, ns.dtypes, ns.kinds,
                                     ns.steps)
    assert len(chosen) == 5 * 2 * 3 * (3 + 5)


def test_bench_neuron_step_times_lif_and_plif_up_to_the_largest_recompute_t():
    step = next(s for s in gpu_check.plan() if s.name == "bench-neuron")
    argv = step.argv
    assert argv[argv.index("--neuron") + 1:argv.index("--neuron") + 3] == ["lif", "plif"]
    shapes = [tuple(map(int, t.split(","))) for t in gpu_check.NEURON_SHAPES]
    assert argv[argv.index("--shapes") + 1:argv.index("--shapes") + 1 + len(shapes)] == list(
        gpu_check.NEURON_SHAPES)
    assert [s[0] for s in shapes] == [4, 4, 8, cuda_kernels.RECOMPUTE_MAX_T]
    per_step = [math.prod(s[1:]) * s[0] for s in shapes]
    assert per_step[3] == per_step[2]  # T = 32 with as many elements as T = 8: times compare directly


def test_ddp_smoke_planned_flags_parse():
    step = next(s for s in gpu_check.plan() if s.name == "ddp-smoke")
    assert step.argv[1:3] == ["-m", "torch.distributed.run"]
    assert importlib.util.find_spec("torch.distributed.run") is not None
    train_args = step.argv[step.argv.index("experiments.train") + 1:]
    assert (ROOT / train_args[train_args.index("-c") + 1]).exists()
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *train_args, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr


def test_pytest_step_imports_exactly_the_files_with_gpu_tests():
    step = next(s for s in gpu_check.plan() if s.name == "pytest-gpu")
    files = gpu_check.gpu_test_files()
    assert {"tests/test_custom_ops.py", "tests/test_fused_neurons.py"} <= set(files)
    assert step.argv[-len(files):] == files and step.argv[step.argv.index("-m", 3) + 1] == "gpu"
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text, listed = path.read_text(), str(path.relative_to(ROOT)) in files
        assert not listed or "pytest.mark.gpu" in text, path.name
        assert listed or re.search(r"^@pytest\.mark\.gpu", text, re.M) is None, path.name
    assert "gpu: needs CUDA" in (ROOT / "pyproject.toml").read_text()  # the marker -m gpu selects


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_exits_2_installing_and_writing_nothing(tmp_path, wheels):
    report, site, out = tmp_path / "gpu_report.md", tmp_path / "site", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "experiments.gpu_check", "--wheels", str(wheels[0].parent),
                           "--site", str(site), "--out", str(out), "--report", str(report)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr
    assert not report.exists() and not site.exists() and not out.exists()


def _fake_results():
    return [gpu_check.StepResult("bench-neuron", "python -m experiments.bench_neuron", "ok", 3.0, 0,
                                 "", [{"variant": "ours cupy", "ms": 1.25, "gb_per_s": 3000.0}]),
            gpu_check.StepResult("ddp-smoke", "torchrun ...", "timeout", 60.0, None, "stuck in NCCL init"),
            gpu_check.StepResult("install-wheels", "pip ...", "ok", 2.0, 0)]


def test_report_sections_from_fake_results():
    env = {"GPU": "NVIDIA H200", "driver": "580.00", "torch": "2.x", "cupy": "13.x", "spikingjelly": "2.x"}
    text = gpu_check.render_report(env, _fake_results())
    for section in ("# GPU check report", "## Environment", "## Summary", "## bench-neuron", "## ddp-smoke"):
        assert section in text
    assert "NVIDIA H200" in text and "580.00" in text
    assert "| ours cupy | 1.25 | 3000 |" in text
    assert "FAILED: ddp-smoke" in text and "stuck in NCCL init" in text
    incomplete = gpu_check.render_report(env, _fake_results(), 8)
    assert "**INCOMPLETE: 3 of 8 steps ran; FAILED: ddp-smoke**" in incomplete
    assert "**all steps passed**" in gpu_check.render_report(env, _fake_results()[:1], 1)


def test_a_summary_step_shows_its_printed_summary_and_tables_skip_lists():
    rows = [{"kernel": "k1", "registers": 20, "ptxas": ["Used 20 registers"]},
            {"kernel": "k2", "registers": 89, "ptxas": ["Used 89 registers"]}]
    summary = gpu_check.StepResult("kernel-resources", "python -m experiments.kernel_resources", "ok", 9.0, 0,
                                   "| kernel | lif |\n|---|---|\n| backward | 89 |", rows, summary=True)
    text = gpu_check.render_report({}, [summary])
    assert "| backward | 89 |" in text and "(2 rows in gpu_check.json" in text
    assert "| k1 |" not in text  # no table of the rows
    table = "\n".join(gpu_check._table(rows))
    assert "| kernel | registers |" in table and "| k2 | 89 |" in table
    assert "Used 20" not in table and "left out here, in the JSON: ptxas" in table
    failed = dataclasses.replace(summary, status="failed", returncode=1)
    assert "```" in gpu_check.render_report({}, [failed])  # a failed summary step shows its tail as output


def test_out_gets_flat_files_a_device_call_brings_back(tmp_path):
    results_dir, out, report = tmp_path / "runs", tmp_path / "out", tmp_path / "docs" / "gpu_report.md"
    results_dir.mkdir()
    (results_dir / "bench_neuron.json").write_text('[{"variant": "ours cupy"}]')
    (results_dir / "ddp_smoke").mkdir()  # a step's folder: never copied
    gpu_check.write_results(report, {"GPU": "H100"}, _fake_results(), 8, out, results_dir)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bench_neuron.json", "gpu_check.json", "gpu_report.md"]
    assert all(p.is_file() for p in out.iterdir())
    assert (out / "gpu_report.md").read_text() == report.read_text()
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["planned_steps"] == 8
    assert [s["status"] for s in summary["steps"]] == ["ok", "timeout", "ok"]
    assert summary["steps"][0]["rows"] == [{"variant": "ours cupy", "ms": 1.25, "gb_per_s": 3000.0}]
    # at most 8 files come back from a call: these, plus the command's own log
    assert len(gpu_check.OUT_FILES) <= 7
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in gpu_check.OUT_FILES)


def test_run_step_records_failure_and_timeout(tmp_path):
    py = sys.executable
    ok = gpu_check.run_step(gpu_check.Step("ok", [py, "-c", "print('hi')"], 30), tmp_path)
    bad = gpu_check.run_step(gpu_check.Step("bad", [py, "-c", "raise SystemExit(3)"], 30), tmp_path)
    slow = gpu_check.run_step(gpu_check.Step("slow", [py, "-c", "import time; time.sleep(30)"], 1), tmp_path)
    missing = gpu_check.run_step(gpu_check.Step("missing", [str(tmp_path / "no-python")], 30), tmp_path)
    assert (ok.status, bad.status, bad.returncode, slow.status) == ("ok", "failed", 3, "timeout")
    assert missing.status == "failed" and "could not start" in missing.output_tail


def test_a_summary_step_keeps_its_whole_summary(tmp_path):
    code = "print('a' * 2000); print('b' * 4000)"
    py = sys.executable
    summary = gpu_check.run_step(gpu_check.Step("s", [py, "-c", code], 30, summary=True), tmp_path)
    plain = gpu_check.run_step(gpu_check.Step("p", [py, "-c", code], 30), tmp_path)
    assert summary.summary and summary.output_tail.strip() == "a" * 2000 + "\n" + "b" * 4000
    assert not plain.summary and len(plain.output_tail) == 3000


def test_a_timed_out_step_takes_its_children_with_it(tmp_path):
    # the child lets go of the output pipe, as a daemonized worker would: only killing the group ends it
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(120)'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "open('child', 'w').write(str(c.pid)); print('started', flush=True); time.sleep(120)")
    result = gpu_check.run_step(gpu_check.Step("spawns", [sys.executable, "-c", code], 30), tmp_path,
                                timeout_s=5)
    assert result.status == "timeout" and "started" in result.output_tail
    pid = int((tmp_path / "child").read_text())
    stat = Path(f"/proc/{pid}/stat")
    try:
        for _ in range(100):  # killed: a zombie until reaped, then gone
            if not stat.exists() or stat.read_text().split(") ")[1].startswith(("Z", "X")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the step's child outlived its timeout")
    finally:
        if stat.exists():
            os.kill(pid, signal.SIGKILL)


def test_steps_stop_starting_when_the_budget_is_spent(tmp_path):
    ticks = iter(range(0, 10_000, 100))  # each look at the clock: 100 s later
    steps = [gpu_check.Step(n, [sys.executable, "-c", "pass"], 30) for n in ("a", "b", "c")]
    seen = []
    results = gpu_check.run_steps(steps, budget_s=230, cwd=tmp_path, clock=lambda: next(ticks),
                                  after_each=lambda r: seen.append(len(r)))
    # deadline 230 - 15 = 215: a starts at 100 (115 s left), b at 200 (15 s left), c at 300 (none)
    assert [r.status for r in results] == ["ok", "ok", "not run"] and seen == [1, 2, 3]
    assert "budget of 230 s was spent" in results[2].output_tail
    assert "FAILED: c" in gpu_check.render_report({}, results)


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
    for elem in (4, 2):
        shape = (t, b, c, h, w)
        # PLIF recompute: LIF's + k read by both kernels (8) + dL/dk shares written and summed (8 per neuron)
        assert bench_neuron.bytes_moved(shape, elem, True, "plif") == t * n * 5 * elem + 28 * n + 8
        # PLIF stored h, decay_input: its backward also reads x (elem per element) and v0 (4 per neuron)
        assert bench_neuron.bytes_moved(shape, elem, False, "plif") == t * n * (5 * elem + 8) + 28 * n + 8
        assert bench_neuron.bytes_moved(shape, elem, False, "plif", decay_input=False) == \
            t * n * (4 * elem + 8) + 28 * n + 8
        # the leak's extra traffic over LIF is per neuron, not per element: 8 bytes per neuron + 8
        plif, lif = (bench_neuron.bytes_moved(shape, elem, True, kind) for kind in ("plif", "lif"))
        assert plif - lif == 8 * n + 8
    assert bench_neuron.bytes_moved((2, 3), 4, False, "plif") == 2 * 3 * 28 + 3 * 28 + 8
    with pytest.raises(ValueError, match="neuron must be 'lif' or 'plif'"):
        bench_neuron.bytes_moved((2, 3), 4, neuron="if")
    assert bench_neuron.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert bench_neuron.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench_neuron.peak_bandwidth("NVIDIA GeForce RTX 4090") is None


def test_bench_neuron_runs_on_cpu(tmp_path):
    out = tmp_path / "n.json"
    rows = bench_neuron.main(["--device", "cpu", "--shapes", "2,2,4,8,8", "--repeats", "2",
                              "--dtypes", "float32", "--out", str(out)])
    shape = (2, 2, 4, 8, 8)
    assert [r["neuron"] for r in rows] == ["lif"] * 3 + ["plif"] * 3  # default: both, LIF first
    assert json.loads(out.read_text()) == rows
    for neuron in ("lif", "plif"):
        by_variant = {r["variant"]: r for r in rows if r["neuron"] == neuron}
        sj = [name for name in by_variant if name.startswith("spikingjelly")]
        assert set(by_variant) == {"ours torch", "ours torch recompute", *sj} and len(sj) == 1
        assert sj[0] == "spikingjelly 2.x (cpu op)" or sj[0].startswith("spikingjelly backend=")
        for name, recompute in (("ours torch", False), ("ours torch recompute", True), (sj[0], False)):
            row = by_variant[name]
            assert row["bytes_model"] == f"{neuron} {'recompute' if recompute else 'stored-h'}"
            assert row["bytes_moved"] == bench_neuron.bytes_moved(shape, 4, recompute, neuron)
            assert row["gb_per_s"] == pytest.approx(row["bytes_moved"] / row["ms"] / 1e6)
        # each neuron's ratios are against its own rows
        assert by_variant["ours torch"]["speedup_vs_ours_torch"] == 1.0
        assert by_variant[sj[0]]["speedup_vs_spikingjelly"] == 1.0
        assert by_variant[sj[0]]["speedup_vs_ours_torch"] == pytest.approx(
            by_variant["ours torch"]["ms"] / by_variant[sj[0]]["ms"])
    only = bench_neuron.main(["--device", "cpu", "--neuron", "plif", "--shapes", "1,3", "--repeats", "1",
                              "--dtypes", "float32"])
    assert {r["neuron"] for r in only} == {"plif"} and len(only) == 3


@pytest.mark.parametrize("neuron", ["if", "plif"])
def test_bench_amp_train_runs_on_cpu(tmp_path, neuron):
    rows = bench_amp_train.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--batch-size", "1",
                                 "--image-size", "32", "--width-multiplier", "0.125", "--neuron", neuron,
                                 "--out", str(tmp_path / "a.json")])
    assert [r["variant"] for r in rows] == ["fused", "spikingjelly", "dense"]
    assert {r["neuron"] for r in rows} == {neuron}
    assert all(r["img_per_s"] > 0 for r in rows) and (tmp_path / "a.json").exists()
