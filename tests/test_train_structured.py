"""The training pipeline's structured methods: ocs and ocs-lats (channels removed mid-run), exact resume
across the removal, the LR schedule continuing, DDP re-wrapped, checkpoints that rebuild the thin model."""
import csv
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import models
from experiments import benchmark_sparsity, train
from experiments.data import build_datasets
from snn_lats.structured import count_macs, structure_spec
from tests.conftest import HANG
from tests.test_train import ENV, ROOT, TINY, _free_port, digits_accuracy

BASE = [a for i, a in enumerate(TINY) if a != "--final-threshold" and TINY[i - 1] != "--final-threshold"]
# ~85% on digits in 4 epochs
LEARNS = ["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "lif",
          "--width-multiplier", "0.25", "--batch-size", "32", "--lr", "0.1", "--device", "cpu", "--seed", "1"]
OCS_SETTINGS = ["--target-flops-reduction", "0.5", "--ocs-monitor-start-epoch", "0",
                "--ocs-prune-epoch-cap", "1", "--epochs", "4"]
OCS = [*BASE, "--method", "ocs", "--target-flops-reduction", "0.5", "--ocs-monitor-start-epoch", "0",
       "--ocs-prune-epoch-cap", "1", "--epochs", "4"]
OCS_LATS = [*OCS[:-8], "--method", "ocs-lats", "--final-threshold", "0.05",
            "--ocs-regularizer", "group_lasso", "--ocs-reg-start-epoch", "0", "--ocs-reg-init", "0.01",
            *OCS[-8:]]


def read_log(path):
    with open(path / "log.csv") as f:
        return list(csv.DictReader(f))


def load(path):
    return torch.load(path, weights_only=True)


class Crash(Exception):
    pass


def crash_after_epoch(monkeypatch, epoch):
    """A crash right after checkpoint_last.pth of ``epoch`` (0-based) is written."""
    real = train.save_checkpoint

    def save(obj, path):
        real(obj, path)
        if obj["epoch"] == epoch and path.name == "checkpoint_last.pth":
            raise Crash

    monkeypatch.setattr(train, "save_checkpoint", save)


@pytest.fixture(scope="module")
def ocs_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ocs")
    train.main([*LEARNS, "--method", "ocs", *OCS_SETTINGS, "--output-dir", str(out)])
    return out


def unbroken_lr_schedule(argv: list[str], epochs: int) -> list[float]:
    """The LR each epoch of a run with ``argv`` starts at when nothing replaces its optimizer: the run's own
    scheduler, stepped as train.py steps it, on a stand-in parameter (what a dense run of the same settings
    logs, without training it)."""
    args = train.parse_args(argv)
    steps_per_epoch = min(len(build_datasets(args.data, None)[0]) // args.batch_size,
                          args.max_steps_per_epoch or 10**9)
    optimizer = train.build_optimizer(args, nn.Linear(1, 1))
    scheduler = train.build_lr_scheduler(args, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps_per_epoch if args.sched_interval == "step" else 1):
            optimizer.step()
            scheduler.step()
    return lrs


def test_ocs_prunes_at_the_cap_and_logs_psi_lambda_and_candidate_macs(ocs_run):
    out = ocs_run
    rows, ckpt = read_log(out), load(out / "checkpoint_last.pth")
    history = ckpt["ocs"]["history"]
    assert [h["epoch"] for h in history] == [0, 1]  # nothing is searched after the removal
    for row, h in zip(rows[:2], history, strict=True):  # the log holds the pruner's own per-epoch figures
        assert float(row["stability"]) == pytest.approx(h["stability"])
        assert float(row["reg_strength"]) == pytest.approx(h["regularization_strength"])
        assert int(row["candidate_macs"]) == h["candidate_flops"]
        assert abs(h["candidate_flops_reduction"] - 0.5) <= 0.005
    assert [r["stability"] for r in rows[2:]] == ["", ""]
    assert ckpt["ocs"]["prune_epoch"] == 1
    assert json.loads((out / "summary.json").read_text())["prune_epoch"] == 2
    assert int(rows[0]["macs"]) == ckpt["ocs"]["dense_flops"]  # dense until the end of epoch 2
    assert all(int(r["macs"]) == ckpt["ocs"]["pruned_flops"] for r in rows[1:])
    assert abs(float(rows[-1]["flops_reduction"]) - 0.5) <= 0.005
    # one LR schedule across the removal: the LRs of the run's schedule never broken by a new optimizer (what
    # a dense run with the same settings logs, exactly)
    expected = unbroken_lr_schedule([*LEARNS, "--method", "dense", "--epochs", "4"], epochs=4)
    assert [float(r["lr"]) for r in rows] == expected and len(set(expected)) == 4


def test_ocs_checkpoint_rebuilds_the_thin_model_and_reproduces_its_accuracy(ocs_run):
    out = ocs_run
    ckpt = load(out / "checkpoint_last.pth")
    assert ckpt["structure"] == ckpt["ocs"]["spec"]
    model = models.create_model(ckpt["model_name"], structure=ckpt["structure"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"], strict=True)
    _, val, _, _ = build_datasets("digits", None)
    sample = val[0][0].unsqueeze(0)
    assert count_macs(model, sample) == ckpt["ocs"]["pruned_flops"]
    row = read_log(out)[-1]
    assert float(row["acc1"]) > 30  # 3x chance: it learned after the removal, so matching it means something
    assert digits_accuracy(model) == pytest.approx(float(row["acc1"]))
    # weight sparsity against the dense model, over the layers LATS would prune (all but fc)
    dense = models.create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    layers = [n for n, m in dense.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "fc"]
    thin = dict(model.named_modules())
    dense_modules = dict(dense.named_modules())
    kept = sum(int((thin[n].weight != 0).sum()) for n in layers)
    dense_weights = sum(dense_modules[n].weight.numel() for n in layers)
    assert float(row["sparsity"]) == pytest.approx(1 - kept / dense_weights)


def test_the_sparsity_cli_measures_the_thin_model_against_the_unpruned_architecture(ocs_run, tmp_path):
    out = ocs_run
    report = benchmark_sparsity.main(["--checkpoint", str(out / "checkpoint_last.pth"), "--data", "digits",
                                      "--max-batches", "2", "--batch-size", "16", "--out", str(tmp_path)])
    ckpt = load(out / "checkpoint_last.pth")
    dense = models.create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    ref = report.total["reference"]
    weights = sum(m.weight.numel() for m in dense.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert ref["weights"] == weights and report.total["weights"] < weights
    # one pass, as an ANN
    per_sample = count_macs(dense, torch.zeros(1, 1, 8, 8)) // ckpt["model_kwargs"]["T"]
    assert ref["dense_macs"] == per_sample * 32
    assert ref["energy_ratio"] == pytest.approx(
        report.total["energy_ratio"] * report.total["dense_macs"] / (per_sample * 32))
    assert ref["weight_sparsity"] > report.total["weight_sparsity"]


def test_pretrained_thin_checkpoint_is_fine_tuned_with_lats(ocs_run, tmp_path):
    out = ocs_run
    row = train.main([*LEARNS, "--method", "s-lats", "--final-threshold", "0.05", "--epochs", "1",
                      "--pretrained", str(out / "checkpoint_last.pth"), "--output-dir", str(tmp_path)])
    ckpt = load(tmp_path / "checkpoint_last.pth")
    assert ckpt["structure"] == load(out / "checkpoint_last.pth")["structure"]
    structural = float(read_log(out)[-1]["sparsity"])
    assert row["sparsity"] > structural and row["flops_reduction"] == pytest.approx(
        float(read_log(out)[-1]["flops_reduction"]))


@pytest.fixture(scope="module")
def ocs_lats_run(tmp_path_factory):
    """One uninterrupted ocs-lats run: what the resumed runs are compared with, and the λ test's run."""
    straight = tmp_path_factory.mktemp("ocs_lats")
    train.main([*OCS_LATS, "--output-dir", str(straight)])
    return straight


@pytest.mark.parametrize("crash_epoch", [0, 2], ids=["before-the-removal", "after-the-removal"])
def test_ocs_lats_resume_is_bit_identical_across_the_channel_removal(ocs_lats_run, tmp_path, monkeypatch,
                                                                     crash_epoch):
    straight, crashed = ocs_lats_run, tmp_path / "crashed"
    crash_after_epoch(monkeypatch, crash_epoch)
    with pytest.raises(Crash):
        train.main([*OCS_LATS, "--output-dir", str(crashed)])
    monkeypatch.undo()
    train.main([*OCS_LATS, "--output-dir", str(crashed), "--resume", "auto"])
    a, b = load(straight / "checkpoint_last.pth"), load(crashed / "checkpoint_last.pth")
    assert a["structure"] == b["structure"] is not None
    assert a["model"].keys() == b["model"].keys()
    assert any(".parametrizations.weight." in k for k in a["model"])  # LATS prepared the thin model
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["pruner"] == b["pruner"] and a["ocs"] == b["ocs"] and a["step"] == b["step"]
    # d ends at D over the steps left after the removal
    assert a["pruner"]["threshold"] == pytest.approx(0.05)
    timing = ("img_per_s", "seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_log(straight)) == strip(read_log(crashed))


def test_lats_after_ocs_keeps_lambda_constant(ocs_lats_run):
    rows = read_log(ocs_lats_run)
    lams = [float(r["l1_coefficient"]) for r in rows[2:]]  # the epochs after the removal
    assert max(lams) == pytest.approx(min(lams), rel=1e-9) and lams[0] > 0
    # reg_init + reg_delta at epoch 0 (interval 2)
    assert float(rows[0]["reg_strength"]) == pytest.approx(0.0101)


@pytest.mark.parametrize("interval", ["step", "epoch"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_rebuilt_optimizer_continues_the_lr_schedule_exactly(interval, warmup):
    args = train.parse_args([*OCS, "--sched-interval", interval, "--warmup-epochs", str(warmup),
                             "--epochs", "6"])
    steps_per_epoch, switch = 5, 13 if interval == "step" else 3
    model = nn.Linear(4, 2)
    optimizer = train.build_optimizer(args, model)
    scheduler = train.build_lr_scheduler(args, optimizer, steps_per_epoch)
    reference_model = nn.Linear(4, 2)
    ref_optimizer = train.build_optimizer(args, reference_model)
    ref_scheduler = train.build_lr_scheduler(args, ref_optimizer, steps_per_epoch)
    got, expected = [], []
    for k in range(30 if interval == "step" else 6):
        if k == switch:  # as after OCS: new parameters, a fresh optimizer and scheduler
            model = nn.Linear(4, 3)
            optimizer, scheduler = train.rebuild_optimization(args, model, optimizer, scheduler,
                                                              steps_per_epoch)
        for opt, sched, out in ((optimizer, scheduler, got), (ref_optimizer, ref_scheduler, expected)):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert got == expected  # exactly equal floats
    assert len(set(expected)) > 3


@pytest.mark.parametrize("argv, pattern", [
    ([*OCS, "--target-flops-reduction", "1.5"],
     r"--target-flops-reduction must be in the open interval \(0, 1\)"),
    ([*OCS, "--target-flops-reduction", "0"],
     r"--target-flops-reduction must be in the open interval \(0, 1\)"),
    ([*OCS, "--ocs-prune-epoch-cap", "4"], r"--ocs-prune-epoch-cap must be in .* = \[0, 4\), got 4"),
    ([*OCS, "--ocs-regularizer", "l1"], r"--ocs-regularizer must be one of \('shrink', 'group_lasso'\)"),
    ([*OCS, "--ocs-monitor-start-epoch", "4"], r"--ocs-monitor-start-epoch must be in \[0, --epochs\)"),
    ([*OCS[:-8], "--method", "ocs-lats", *OCS[-8:]], r"--method ocs-lats needs --final-threshold"),
])
def test_bad_structured_arguments_fail_before_training(argv, pattern, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert pytest.importorskip("re").search(pattern, capsys.readouterr().err)


def test_default_cap_is_forty_percent_of_the_run():
    assert train.parse_args([*OCS[:-4], "--epochs", "130"]).ocs_prune_epoch_cap == 52
    assert train.parse_args([*OCS[:-4], "--epochs", "3"]).ocs_prune_epoch_cap == 1


def test_resuming_a_checkpoint_without_ocs_state_is_a_clear_error(tmp_path):
    train.main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"changes the run: .*method \(checkpoint 's-lats', now 'ocs'\)"):
        train.main([*OCS, "--output-dir", str(tmp_path), "--resume", "auto"])


@pytest.mark.slow
def test_ddp_replicas_stay_identical_after_the_channel_removal(tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             "-m", "experiments.train", *OCS, "--epochs", "3", "--dump-rank-state",
                             "--output-dir", str(tmp_path)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pruned channels after epoch 2" in result.stdout
    rank0, rank1 = (load(tmp_path / f"rank{r}_state.pth") for r in (0, 1))
    assert rank0["structure"] == rank1["structure"] == load(tmp_path / "checkpoint_last.pth")["structure"]
    compared = 0
    for key, value in rank0["model"].items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # per rank (DDP broadcasts buffers before each forward, not after the last step)
        # gradients of the new parameters were all-reduced
        assert torch.equal(value, rank1["model"][key]), key
        compared += 1
    assert compared > 40
    rebuilt = models.create_model("sew_resnet18", structure=rank0["structure"],
                                  **load(tmp_path / "checkpoint_last.pth")["model_kwargs"])
    rebuilt.load_state_dict(rank0["model"], strict=True)
    assert structure_spec(rebuilt) == rank0["structure"]


@pytest.mark.parametrize("neuron", ["lif", "plif"])
def test_fused_neurons_in_the_pipeline_match_spikingjelly(tmp_path, neuron):
    """Regression: --fused-neurons used to raise AttributeError. Our torch backend matches SpikingJelly's
    neurons (spikes exactly, gradients to 1e-6), so two epochs train to the same weights within float
    noise; with --neuron plif (the SEW papers' neuron) the learned leaks w train alike too."""
    sj, fused = tmp_path / "sj", tmp_path / "fused"
    train.main([*TINY, "--neuron", neuron, "--epochs", "2", "--output-dir", str(sj)])
    train.main([*TINY, "--neuron", neuron, "--epochs", "2", "--fused-neurons", "--output-dir", str(fused)])
    a, b = load(sj / "checkpoint_last.pth")["model"], load(fused / "checkpoint_last.pth")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    leaks = [key for key in a if key.endswith(".w")]
    assert len(leaks) == (20 if neuron == "plif" else 0)
    assert all(float(a[key]) != -math.log(2.0 - 1.0) for key in leaks)  # they moved from their init


def test_the_stability_indicator_triggers_the_removal(tmp_path, capsys):
    """With a reachable threshold the removal follows the first epoch whose Ψ reaches it, not the cap."""
    args = [*LEARNS, "--method", "ocs", "--target-flops-reduction", "0.5", "--ocs-monitor-start-epoch", "0",
            "--ocs-stability-threshold", "0.3", "--ocs-prune-epoch-cap", "5", "--epochs", "6",
            "--max-steps-per-epoch", "10", "--output-dir", str(tmp_path)]
    train.main(args)
    rows = read_log(tmp_path)
    psi = [float(r["stability"]) for r in rows if r["stability"]]
    first = next(i for i, v in enumerate(psi) if v >= 0.3)
    assert first < 5 and len(psi) == first + 1  # pruned after that epoch, nothing scored after
    assert load(tmp_path / "checkpoint_last.pth")["ocs"]["prune_epoch"] == first
    assert f"pruned channels after epoch {first + 1} (psi {psi[first]:.4f})" in capsys.readouterr().out
