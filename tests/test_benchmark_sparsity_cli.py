import json

import pytest
import torch

import models
import snn_lats
from experiments import benchmark_sparsity

KWARGS = dict(T=2, neuron_type="lif", stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.125)


def _save(path, state, **extra):
    torch.save({"model": state, **extra}, path)


def test_cli_reads_a_prepared_checkpoint_and_writes_table_json_csv_and_plots(tmp_path, capsys):
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", **KWARGS)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    snn_lats.SoftThresholdPruner(model, final_threshold=0.1, schedule="constant", compensate=False,
                                 ignored_layers=["fc"])
    _save(tmp_path / "pruned.pth", model.state_dict(), model_name="sew_resnet18", model_kwargs=KWARGS)
    _save(tmp_path / "dense.pth", dense_state, model_name="sew_resnet18", model_kwargs=KWARGS)
    out = tmp_path / "out"
    report = benchmark_sparsity.main(["--checkpoint", str(tmp_path / "pruned.pth"), "--dense-checkpoint",
                                      str(tmp_path / "dense.pth"), "--max-batches", "2", "--batch-size", "16",
                                      "--out", str(out)])
    printed = capsys.readouterr().out
    assert "layer1.0.conv1" in printed and "energy" in printed
    for name in ("sparsity.json", "sparsity.csv", "sparsity_dense.json", "weight_density.png", "operations.png",
                 "firing_rate.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "sparsity.json").read_text())
    assert saved["total"]["samples"] == 32
    assert saved["total"]["weight_sparsity"] == pytest.approx(report.total["weight_sparsity"])
    dense = json.loads((out / "sparsity_dense.json").read_text())
    assert dense["total"]["weight_sparsity"] < 1e-3 < saved["total"]["weight_sparsity"]


def test_cli_errors_name_the_problem(tmp_path):
    model = models.create_model("sew_resnet18", **KWARGS)
    _save(tmp_path / "anonymous.pth", model.state_dict())
    with pytest.raises(ValueError, match="--model"):
        benchmark_sparsity.main(["--checkpoint", str(tmp_path / "anonymous.pth"), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\): bn1.bias: checkpoint \(8,\) vs model \(16,\).*more"):
        benchmark_sparsity.main(["--checkpoint", str(tmp_path / "anonymous.pth"), "--model", "sew_resnet18",
                                 "--model-kwargs", json.dumps({**KWARGS, "width_multiplier": 0.25}),
                                 "--out", str(tmp_path)])
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "anonymous.pth").read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        benchmark_sparsity.main(["--checkpoint", str(tmp_path / "truncated.pth"), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        benchmark_sparsity.main(["--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--data"):
        benchmark_sparsity.main(["--checkpoint", str(tmp_path / "anonymous.pth"), "--data", "mnist",
                                 "--out", str(tmp_path)])


def test_cli_reads_the_training_pipelines_checkpoint(tmp_path, capsys):
    from experiments import train

    run = tmp_path / "run"
    train.main(["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "if", "--width-multiplier",
                "0.125", "--method", "pai", "--final-threshold", "0.08", "--epochs", "1", "--batch-size", "64",
                "--max-steps-per-epoch", "3", "--device", "cpu", "--output-dir", str(run)])
    report = benchmark_sparsity.main(["--checkpoint", str(run / "checkpoint_best.pth"), "--max-batches", "1",
                                      "--out", str(tmp_path / "sparsity")])
    # No --model flags were needed: the checkpoint names its model and kwargs, and its prepared weights are squashed
    # offline. Pruning at initialization with D=0.08 leaves every conv sparse and the SNN classifier dense.
    checkpoint = torch.load(run / "checkpoint_best.pth", weights_only=True)
    assert checkpoint["model_name"] == "sew_resnet18" and checkpoint["model_kwargs"]["width_multiplier"] == 0.125
    convs = [n for n, r in report.layers.items() if r["type"] == "conv"]
    assert len(convs) == 20 and all(report.layers[n]["weight_sparsity"] > 0.1 for n in convs)
    assert report.layers["fc"]["weight_sparsity"] == 0.0
    assert report.total["samples"] == 128 and "layer1.0.conv1" in capsys.readouterr().out
