"""The training pipeline: exact resume after a real kill, atomic checkpoints, DDP on gloo, bad input."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import methods, train
from tests.conftest import HANG

ROOT = Path(__file__).parents[1]
TINY = ["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "lif",
        "--width-multiplier", "0.125", "--method", "s-lats", "--final-threshold", "0.05",
        "--batch-size", "32", "--lr", "0.1", "--device", "cpu", "--max-steps-per-epoch", "6", "--seed", "3"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=HANG, **kw)


def _model_state(path):
    return torch.load(path, weights_only=True)["model"]


STOP_IN_EPOCH_2 = """
import sys
from experiments import train, utils
update = utils.Progress.update
def stop(self, step, *args):
    update(self, step, *args)
    if self.epoch == 1 and step == 3:
        print("stopped in epoch 2", flush=True)
        sys.stdin.read()  # until killed
utils.Progress.update = stop
sys.exit(train.cli(sys.argv[1:]))
"""


def test_resume_after_a_real_kill_is_bit_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = _run([*TINY, "--epochs", "4", "--output-dir", str(straight)])
    assert result.returncode == 0, result.stderr[-2000:]

    # the run stops in the middle of epoch 2 (after its step 3, the optimizer stepped, the epoch unfinished)
    # until it is killed: the kill point is the same however slow the machine is
    proc = subprocess.Popen([sys.executable, "-c", STOP_IN_EPOCH_2, *TINY, "--epochs", "4",
                             "--output-dir", str(killed)], cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert any(line.startswith("stopped in epoch 2") for line in proc.stdout), "the run ended before epoch 2"
    proc.send_signal(signal.SIGKILL)  # a real kill
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = torch.load(killed / "checkpoint_last.pth", weights_only=True)["epoch"]
    assert stopped_at == 0  # epoch 1's checkpoint: epoch 2 had begun

    result = _run([*TINY, "--epochs", "4", "--output-dir", str(killed), "--resume", "auto"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from {killed / 'checkpoint_last.pth'} at epoch {stopped_at + 1}" in result.stdout
    expected = _model_state(straight / "checkpoint_last.pth")
    got = _model_state(killed / "checkpoint_last.pth")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    a = torch.load(straight / "checkpoint_last.pth", weights_only=True)
    b = torch.load(killed / "checkpoint_last.pth", weights_only=True)
    assert a["pruner"] == b["pruner"] and a["step"] == b["step"] == 24
    log = (killed / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss")
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4"]


KILL_DURING_SAVE = """
import sys, torch
from snn_lats.checkpoint import save_checkpoint
path = sys.argv[1]
save_checkpoint({"i": 0, "w": torch.zeros(4_000_000)}, path)
print("ready", flush=True)
i = 0
while True:  # keep rewriting the checkpoint until killed
    i += 1
    save_checkpoint({"i": i, "w": torch.full((4_000_000,), float(i))}, path)
"""


def test_killing_during_a_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_last.pth"
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_SAVE, str(path)], cwd=ROOT, env=ENV,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(path, weights_only=True)  # whole: the previous or the new one, never a torn file
        assert torch.equal(ckpt["w"], torch.full((4_000_000,), float(ckpt["i"])))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# reaches ~93% on digits in 5 epochs, so accuracies are comparable
LEARNS = ["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "if",
          "--width-multiplier", "0.25", "--method", "s-lats", "--final-threshold", "0.02", "--lr", "0.1",
          "--device", "cpu", "--seed", "3", "--epochs", "5", "--dump-rank-state"]


@pytest.mark.slow
def test_ddp_two_processes_on_gloo_agree_with_each_other_and_with_one_process(tmp_path):
    import json

    two = tmp_path / "two"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             "-m", "experiments.train", *LEARNS, "--batch-size", "32",
                             "--output-dir", str(two)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(two / f"rank{r}_state.pth", weights_only=True) for r in (0, 1))
    assert rank0["threshold"] == rank1["threshold"] > 0
    compared = 0
    for key, value in rank0["model"].items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            # BN running stats are per rank after the last step (DDP broadcasts them before a forward)
            continue
        assert torch.equal(value, rank1["model"][key]), key  # weights θ and thresholds (so masks) identical
        compared += 1
    assert compared > 40
    one = tmp_path / "one"
    result = _run([*LEARNS, "--batch-size", "64", "--output-dir", str(one)])  # the same global batch of 64
    assert result.returncode == 0, result.stderr[-2000:]
    two_summary, one_summary = (json.loads((d / "summary.json").read_text()) for d in (two, one))
    assert two_summary["world_size"] == 2
    acc_two, acc_one = two_summary["acc1"], one_summary["acc1"]
    assert acc_two > 80 and acc_one > 80, (acc_two, acc_one)  # both learned: the comparison means something
    assert abs(acc_two - acc_one) < 5.0, (acc_two, acc_one)  # BN sees half batches per rank, so not identical


NO_THRESHOLD = [a for i, a in enumerate(TINY)
                if a != "--final-threshold" and TINY[i - 1] != "--final-threshold"]


@pytest.mark.parametrize(
    "argv, pattern",
    [
        ([*TINY, "--model", "resnet5"], r"--model must be one of"),
        ([*TINY, "--method", "stdS"], r"--method must be one of"),
        ([*TINY, "--batch-size", "0"], r"--batch-size must be > 0"),
        ([*TINY, "--batch-size", "-4"], r"--batch-size must be > 0"),
        ([*TINY, "--data", "mnist"], r"--data must be one of"),
        (NO_THRESHOLD, r"--method s-lats needs --final-threshold"),
        ([*TINY, "--method", "ltp", "--temperature", "0"], r"--temperature must be > 0"),
        ([*TINY, "--method", "ltp", "--l0-weight", "-1"], r"--l0-weight must be >= 0"),
        ([*TINY, "--method", "gmp", "--epochs", "4", "--pruning-end-epoch", "5"],
         r"--pruning-end-epoch must be in \(--pruning-start-epoch, --epochs\], got 5"),
        ([*TINY, "--pretrained", "/nonexistent.pth"], r"--pretrained /nonexistent.pth: file not found"),
    ],
)
def test_bad_arguments_fail_before_training(argv, pattern, capsys, tmp_path):
    import re

    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_and_missing_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: sew_resnet18\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit):
        train.main(["-c", str(config)])
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["-c", str(tmp_path / "nope.yaml")])
    assert "file not found" in capsys.readouterr().err


def test_missing_or_empty_datasets_fail_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        train.main([*TINY, "--data", "imagenet", "--data-path", str(tmp_path / "nowhere"), "--output-dir",
                    str(tmp_path / "out")])
    (tmp_path / "imagenet" / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="(?i)found no valid file"):
        train.main([*TINY, "--data", "imagenet", "--data-path", str(tmp_path / "imagenet"), "--output-dir",
                    str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_stops_the_resume_with_a_clear_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint_last.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        train.main([*TINY, "--epochs", "1", "--output-dir", str(out), "--resume", "auto"])
    assert (out / "checkpoint_last.pth").read_bytes() == b"PK\x03\x04 truncated"  # not overwritten


def test_ltp_from_a_pretrained_run_leaves_a_trail_that_loads_into_a_plain_model(tmp_path):
    import csv

    import models
    from snn_lats.trail import read_trail

    dense = tmp_path / "dense"
    train.main([*TINY, "--method", "dense", "--epochs", "2", "--output-dir", str(dense)])
    ltp = tmp_path / "ltp"
    args = [*NO_THRESHOLD, "--method", "ltp", "--l0-weight", "4", "--threshold-lr", "0.2", "--epochs", "3",
            "--pretrained", str(dense / "checkpoint_last.pth"), "--output-dir", str(ltp)]
    train.main(args)
    entries = read_trail(ltp / "trail")
    with open(ltp / "log.csv") as f:
        log = list(csv.DictReader(f))
    assert [e.epoch for e in entries] == [1, 2, 3]
    for entry, row in zip(entries, log, strict=True):  # the trail holds what the epoch's evaluation measured
        assert entry.acc1 == pytest.approx(float(row["acc1"]))
        assert entry.sparsity == pytest.approx(float(row["sparsity"]))
        assert float(row["band_fraction"]) > 0
    assert entries[-1].sparsity > entries[0].sparsity > 0

    ckpt = torch.load(ltp / "trail" / entries[-1].path, weights_only=True)
    model = models.create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"], strict=True)  # plain keys, hard masks baked in
    weights = [m.weight for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
               and n != "fc"]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(entries[-1].sparsity)
    assert digits_accuracy(model) == pytest.approx(entries[-1].acc1)


def digits_accuracy(model) -> float:
    """Acc@1 (%) of ``model`` on the pipeline's digits validation split, evaluated as the pipeline does."""
    from spikingjelly.activation_based import functional

    from experiments.data import build_datasets

    _, val, _, _ = build_datasets("digits", None)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val), 32):
            x, y = val[i:i + 32]
            correct += (model(x).argmax(1) == y).sum().item()
            functional.reset_net(model)
    return 100 * correct / len(val)


@pytest.mark.parametrize("config", sorted((ROOT / "experiments" / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_config_parses_and_builds_its_model(config):
    import models

    args = train.parse_args(["-c", str(config)])
    num_classes = {"imagenet": 1000, "cifar100": 100}.get(args.data, 10)
    in_channels = 1 if args.data in ("digits", "fashion-mnist") else 3
    model = models.create_model(args.model, **train.model_kwargs(args, num_classes, in_channels))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_gmp_ramp_ends_at_the_pruning_end_epoch(tiny_cnn):
    args = train.parse_args([*TINY, "--method", "gmp", "--pruning-ratio", "0.8", "--epochs", "4",
                             "--pruning-end-epoch", "3"])
    optimizer = train.build_optimizer(args, tiny_cnn)
    ctx = train.run_context(args, tiny_cnn, optimizer, steps_per_epoch=10)
    pruner = methods.build_pruners(ctx).get("pruner")
    assert pruner.target_sparsity(29) < 0.8
    assert pruner.target_sparsity(30) == pruner.target_sparsity(40) == 0.8


def test_a_threshold_schedule_run_under_the_wrong_lr_schedule_is_flagged():
    flagged = {(method, interval, warmup): methods.get_method(method).lr_note(train.parse_args(
        [*TINY, "--method", method, "--sched-interval", interval, "--warmup-epochs", str(warmup)]))
        for method in ("s-lats", "lats", "lr") for interval in ("step", "epoch") for warmup in (0, 1)}
    assert {k for k, v in flagged.items() if v is None} == {("s-lats", "step", 0), ("lats", "epoch", 0),
                                                            ("lr", "step", 0), ("lr", "epoch", 0),
                                                            ("lr", "step", 1), ("lr", "epoch", 1)}
    assert "per-epoch cosine LR" in flagged[("lats", "step", 0)]
    assert "warm-up" in flagged[("s-lats", "step", 1)]


def test_layer_scale_reaches_the_pruner_and_bad_entries_are_named(tiny_cnn, capsys):
    args = train.parse_args([*TINY, "--method", "s-lats", "--final-threshold", "0.1",
                             "--layer-scale", "conv1=4"])
    assert args.layer_scale == {"conv1": 4.0}
    # one string, as a sweep gives
    assert train.parse_args([*TINY, "--method", "lr", "--final-threshold", "0.1", "--layer-scale",
                             "conv1=4 fc=0"]).layer_scale == {"conv1": 4.0, "fc": 0.0}
    optimizer = train.build_optimizer(args, tiny_cnn)
    ctx = train.run_context(args, tiny_cnn, optimizer, steps_per_epoch=10)
    pruner = methods.build_pruners(ctx).get("pruner")
    assert pruner.scales["conv1"] == 4.0 and set(pruner.scales.values()) == {1.0, 4.0}
    for bad, message in ((["conv1=x"], "NAME=SCALE"), (["conv1=-1"], "NAME=SCALE"), (["=2"], "NAME=SCALE"),
                         (["conv1=nan"], "NAME=SCALE")):
        with pytest.raises(SystemExit):
            train.parse_args([*TINY, "--method", "s-lats", "--final-threshold", "0.1", "--layer-scale", *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args([*TINY, "--method", "gmp", "--layer-scale", "conv1=2"])
    assert "soft-threshold methods" in capsys.readouterr().err
