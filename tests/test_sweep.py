"""experiments.sweep (resumes after a kill without repeating finished runs) and experiments.plot_sweep."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from experiments import plot_sweep, sweep
from tests.conftest import HANG
from tests.test_train import ENV, ROOT

BASE = {"data": "digits", "model": "sew_resnet18", "T": 2, "neuron": "lif", "width_multiplier": 0.125,
        "batch_size": 32, "lr": 0.1, "epochs": 3, "max_steps_per_epoch": 6, "device": "cpu"}


def write_spec(tmp_path, methods, **extra):
    spec = {"output_dir": str(tmp_path / "sweep"), "base": BASE, "seeds": [0],
            "measure": {"max_batches": 2, "batch_size": 32}, "methods": methods, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(config, **kw):
    """The sweep's command line; its runs on one thread each (tiny models: faster, above all on a loaded
    machine; the sweep's default is cores / jobs)."""
    return subprocess.run([sys.executable, "-m", "experiments.sweep", "-c", str(config), "--threads", "1",
                           *kw.pop("args", [])],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG, **kw)


def test_a_killed_sweep_resumes_without_repeating_the_finished_run(tmp_path):
    config = write_spec(tmp_path, {"lr": {"final_threshold": [0.05]}, "gmp": {"pruning_ratio": [0.8]}})
    runs = tmp_path / "sweep" / "runs"
    first, second = runs / "lr_final_threshold=0.05_seed=0", runs / "gmp_pruning_ratio=0.8_seed=0"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", "-c", str(config), "--threads", "1"],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + HANG
    while not (first / "result.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run it had started
    proc.wait()
    assert (first / "result.json").exists() and not (second / "result.json").exists(), "killed too late"
    finished = (first / "result.json").read_bytes()
    mtime = (first / "log.csv").stat().st_mtime_ns

    result = run_sweep(config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 runs, 1 done, 1 to run" in result.stdout
    assert "start lr_" not in result.stdout and "start gmp_pruning_ratio=0.8_seed=0" in result.stdout
    assert (first / "result.json").read_bytes() == finished
    assert (first / "log.csv").stat().st_mtime_ns == mtime
    with open(tmp_path / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["strength"]) for r in rows] == [("lr", "0.05"), ("gmp", "0.8")]
    assert float(rows[0]["lambda_ratio"]) == pytest.approx(1.0, abs=1e-9)  # the lr schedule: λ constant
    assert rows[1]["lambda_ratio"] == ""  # GMP has no λ
    gmp = rows[1]
    assert float(gmp["sparsity"]) == pytest.approx(0.8, abs=0.01)  # GMP's exact target, over pruned layers
    summary = json.loads((second / "summary.json").read_text())
    assert float(gmp["acc1"]) == summary["acc1"] and int(gmp["macs"]) == summary["macs"]
    measured = json.loads((second / "sparsity" / "sparsity.json").read_text())["total"]
    assert float(gmp["energy_uj"]) == pytest.approx(measured["energy_pj"] / measured["samples"] / 1e6)
    with open(second / "log.csv", newline="") as f:  # the interrupted run's epochs each appear once
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    again = run_sweep(config)
    assert "2 runs, 2 done, 0 to run" in again.stdout
    before = (tmp_path / "sweep" / "results.csv").read_text()
    assert run_sweep(config, args=["--recollect"]).returncode == 0  # the same figures, from the run files
    assert (tmp_path / "sweep" / "results.csv").read_text() == before


def test_sweep_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'slats'"):
        sweep.load_spec(write_spec(tmp_path, {"slats": {}}))
    with pytest.raises(ValueError, match=r"several list-valued keys \['final_threshold', 'beta'\]"):
        sweep.load_spec(write_spec(tmp_path, {"pgh": {"final_threshold": [0.1], "beta": [0.1, 0.5]}}))
    with pytest.raises(ValueError, match=r"'base' must not set 'seed'"):
        sweep.load_spec(write_spec(tmp_path, {"dense": {}}, base={**BASE, "seed": 3}))
    with pytest.raises(ValueError, match=r"'base' must set 'data'"):
        sweep.load_spec(write_spec(tmp_path, {"dense": {}},
                                   base={k: v for k, v in BASE.items() if k != "data"}))
    with pytest.raises(ValueError, match=r"measure: unknown keys \['max_batch'\]"):
        sweep.load_spec(write_spec(tmp_path, {"dense": {}}, measure={"max_batch": 2}))
    methods = {"dense": {}, "pgh": {"final_threshold": [0.1, 0.2], "beta": 0.1}}
    runs = sweep.expand(sweep.load_spec(write_spec(tmp_path, methods, seeds=[0, 1])))
    assert [r.name for r in runs] == ["dense_seed=0", "dense_seed=1", "pgh_final_threshold=0.1_seed=0",
                                      "pgh_final_threshold=0.1_seed=1", "pgh_final_threshold=0.2_seed=0",
                                      "pgh_final_threshold=0.2_seed=1"]
    assert runs[2].options == {"beta": 0.1, "final_threshold": 0.1}


def test_runs_are_measured_on_the_data_they_trained_on_in_train_pys_words(tmp_path):
    """measure's data and data_path default to base's; the benchmark takes them as --data NAME --data-path
    DIR."""
    def flags(base=None, **measure):
        spec = sweep.load_spec(write_spec(tmp_path, {"dense": {}}, base={**BASE, **(base or {})},
                                          measure={"batch_size": 32, **measure}))
        cmd = sweep.measure_command(tmp_path / "run", spec)
        return cmd[cmd.index("--data"):cmd.index("--out")]

    assert flags() == ["--data", "digits"]
    assert flags({"data": "cifar100", "data_path": "/data/c100"}) == \
        ["--data", "cifar100", "--data-path", "/data/c100"]
    assert flags({"data": "imagenet", "data_path": "/data/in"}, data_path="/fast/in") == \
        ["--data", "imagenet", "--data-path", "/fast/in"]  # the same data set from another copy
    assert flags({"data": "cifar10", "data_path": "/data/c10"}, data="cifar10") == \
        ["--data", "cifar10", "--data-path", "/data/c10"]
    assert flags({"data": "fashion-mnist", "data_path": "/data/fm"}, data="digits") == \
        ["--data", "digits"]  # another data set: base's path is not its
    old = {"data": "cifar10:/data/c10"}
    new = (r"--data cifar10:/data/c10: NAME:DIR is the old spelling; now: --data cifar10 --data-path "
           r"/data/c10 \(in a sweep file: data: NAME, data_path: DIR\)")
    with pytest.raises(ValueError, match="base.data: " + new):  # the old spelling is named, with the new keys
        flags(old)
    with pytest.raises(ValueError, match="measure.data: " + new):
        flags(**old)
    with pytest.raises(ValueError, match=r"measure.data: --data must be one of digits, .*got 'mnist'"):
        flags(data="mnist")


HEADER = ("model,method,strength_key,strength,seed,acc1,best_acc1,sparsity,firing_rate,sops,ops,energy_uj,"
          "energy_ratio,macs,flops_reduction,prune_epoch,train_seconds,wall_seconds,run")
FIXED = HEADER + """
m,dense,,,0,90.0,90.0,0.0,0.1,1000,1100,0.9,0.1,100,0.0,,10,12,a
m,dense,,,1,92.0,92.0,0.0,0.1,1000,1100,0.9,0.1,100,0.0,,10,12,b
m,s-lats,final_threshold,0.1,0,88.0,88.0,0.80,0.1,300,350,0.3,0.03,100,0.0,,10,12,c
m,s-lats,final_threshold,0.1,1,89.0,89.0,0.82,0.1,320,370,0.3,0.03,100,0.0,,10,12,d
m,s-lats,final_threshold,0.2,0,85.0,85.0,0.90,0.1,200,250,0.2,0.02,100,0.0,,10,12,e
m,s-lats,final_threshold,0.2,1,87.0,87.0,0.92,0.1,220,270,0.2,0.02,100,0.0,,10,12,f
m,gmp,pruning_ratio,0.9,0,80.0,80.0,0.90,0.1,250,300,0.25,0.025,100,0.0,,10,12,g
m,gmp,pruning_ratio,0.9,1,81.0,81.0,0.90,0.1,250,300,0.25,0.025,100,0.0,,10,12,h
"""


def test_plot_sweep_writes_the_plots_and_interpolates_at_equal_sparsity(tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text(FIXED)
    assert plot_sweep.main([str(results), "--out", str(tmp_path / "out"), "--at", "0.85", "0.9", "0.95"]) == 0
    for name in ("accuracy_vs_sparsity.png", "accuracy_vs_ops.png", "accuracy_vs_energy.png", "table.md"):
        assert (tmp_path / "out" / name).stat().st_size > 1000 or name == "table.md"
    table = (tmp_path / "out" / "table.md").read_text()
    # s-lats: (0.81, 88.5 ± 0.5) and (0.91, 86.0 ± 1.0): at 0.85, t = 0.4 -> 87.5 ± 0.7;
    # at 0.9, t = 0.9 -> 86.25 ± 0.95
    assert "| s-lats | 87.50 ± 0.70 | 86.25 ± 0.95 | – |" in table
    assert "| gmp | – | 80.50 ± 0.50 | – |" in table  # one point: only its own sparsity
    assert "| s-lats | final_threshold = 0.2 | 2 | 86.00 (85.00–87.00) | 91.0 (90.0–92.0) |" in table
    assert "wrote" in capsys.readouterr().out
    # at equal SOPs, in log SOPs: s-lats (210, 86.0 ± 1.0) and (310, 88.5 ± 0.5);
    # at 250, t = ln(250/210) / ln(310/210)
    t = math.log(250 / 210) / math.log(310 / 210)
    assert plot_sweep.main([str(results), "--out", str(tmp_path / "ops"), "--at", "--at-ops", "250", "1e4",
                            "--ymin", "85"]) == 0  # gmp below the axis: marked on its edge
    table = (tmp_path / "ops" / "table.md").read_text()
    assert "equal SOPs per sample" in table and "equal weight sparsity" not in table
    assert f"| s-lats | {86 + 2.5 * t:.2f} ± {1 - 0.5 * t:.2f} | – |" in table
    assert "| gmp | 80.50 ± 0.50 | – |" in table
    t = math.log(0.25 / 0.2) / math.log(0.3 / 0.2)  # energies: s-lats 0.2 and 0.3 µJ, gmp 0.25 µJ
    assert plot_sweep.main([str(results), "--out", str(tmp_path / "energy"), "--at", "--at-energy",
                            "0.25"]) == 0
    table = (tmp_path / "energy" / "table.md").read_text()
    assert f"| s-lats | {86 + 2.5 * t:.2f} ± {1 - 0.5 * t:.2f} |" in table
    assert "| gmp | 80.50 ± 0.50 |" in table
    points = plot_sweep.read_points(results)
    assert [p.method for p in points] == ["dense", "s-lats", "s-lats", "gmp"]  # METHODS order, then sparsity
    extension = tmp_path / "more.csv"  # a second sweep's rows join the same methods' curves
    extension.write_text(HEADER + "\nm,gmp,pruning_ratio,0.95,0,70.0,70.0,0.95,0.1,100,150,0.1,0.01,100,"
                         "0.0,,10,12,i\n")
    both = plot_sweep.read_points([results, extension])
    assert [(p.method, p.strength) for p in both][-2:] == [("gmp", "0.9"), ("gmp", "0.95")]


def test_plot_sweep_rejects_a_file_that_is_not_a_sweep(tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        plot_sweep.main([str(bad), "--out", str(tmp_path)])
    assert "lacks the columns" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted((ROOT / "experiments" / "configs" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_sweep_file_loads_and_each_run_parses(config, tmp_path):
    from experiments import benchmark_sparsity, train

    spec = sweep.load_spec(config)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(spec["base"], sort_keys=False))
    runs = sweep.expand(spec)
    assert len({r.name for r in runs}) == len(runs)
    for run in runs:
        command = sweep.train_command(run, base, tmp_path / run.name)
        args = train.parse_args(command[command.index("-c"):])
        assert (args.method, args.seed) == (run.method, run.seed)
        measure = sweep.measure_command(tmp_path / run.name, spec)
        measured = benchmark_sparsity.get_args_parser().parse_args(measure[3:])
        assert (measured.data, measured.data_path) == (args.data, args.data_path), run.name  # trained on
        assert (measured.batch_size, measured.max_batches) == (250, 8)
        for key, value in run.options.items():
            if key == "layer_scale":  # "NAME=SCALE ..." -> {NAME: SCALE}
                value = {n: float(v) for n, v in (e.split("=") for e in value.split())}
            assert getattr(args, key) == value, (run.name, key)


def test_equal_operations_leave_out_a_collapsed_run_with_zero_operations():
    def point(ops, acc):
        values = {c: 0.0 for c in plot_sweep.NUMERIC} | {"ops": ops, "acc1": acc}
        return plot_sweep.Point("pai", "final_threshold", str(ops), 1, values, values, values)

    collapsed = [point(0.0, 10.0), point(100.0, 80.0), point(400.0, 90.0)]
    assert plot_sweep.at_level(collapsed, "ops", 200.0, log=True) == pytest.approx((85.0, 0.0))  # log halfway
    assert plot_sweep.at_level(collapsed, "ops", 50.0, log=True) is None
    assert plot_sweep.at_level(collapsed, "ops", 50.0) == pytest.approx((45.0, 0.0))  # linear keeps zero
