import json
import re

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
    for name in ("sparsity.json", "sparsity.csv", "sparsity_dense.json", "weight_density.png",
                 "operations.png", "firing_rate.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "sparsity.json").read_text())
    assert saved["total"]["samples"] == 32
    assert saved["total"]["weight_sparsity"] == pytest.approx(report.total["weight_sparsity"])
    dense = json.loads((out / "sparsity_dense.json").read_text())
    assert dense["total"]["weight_sparsity"] < 1e-3 < saved["total"]["weight_sparsity"]


def _fails(argv, capsys):
    """main(argv) exits with code 2 and a one-line message on stderr (after argparse's usage for its own
    errors); returns the message."""
    with pytest.raises(SystemExit) as exit_info:
        benchmark_sparsity.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = err.splitlines()[-1]
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert message.startswith("python -m experiments.benchmark_sparsity: error: "), err
    return message


def test_cli_errors_name_the_problem(tmp_path, capsys):
    model = models.create_model("sew_resnet18", **KWARGS)
    _save(tmp_path / "anonymous.pth", model.state_dict())
    anonymous = ["--checkpoint", str(tmp_path / "anonymous.pth"), "--out", str(tmp_path)]
    assert "the checkpoint does not name its model: pass --model" in _fails(anonymous, capsys)
    err = _fails([*anonymous, "--model", "sew_resnet18", "--model-kwargs",
                  json.dumps({**KWARGS, "width_multiplier": 0.25})], capsys)
    assert re.search(r"shape mismatches \(\d+\): bn1.bias: checkpoint \(8,\) vs model \(16,\).*more", err)
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "anonymous.pth").read_bytes()[:100])
    assert "corrupt or truncated" in _fails(["--checkpoint", str(tmp_path / "truncated.pth")], capsys)
    assert "FileNotFoundError: checkpoint" in _fails(["--checkpoint", str(tmp_path / "nope.pth")], capsys)
    assert "--data" in _fails([*anonymous, "--data", "mnist"], capsys)


def test_cli_data_errors_are_one_line_and_name_the_new_spelling(tmp_path, capsys):
    base = ["--checkpoint", str(tmp_path / "never_read.pth"), "--out", str(tmp_path)]  # data is checked first
    old = {  # the old NAME:DIR forms -> train.py's --data NAME --data-path DIR
        "cifar10:/data/cifar10": "now: --data cifar10 --data-path /data/cifar10",
        "imagefolder:/data/imagenet/val": "now: --data imagenet --data-path /data/imagenet",
        "imagefolder:/data/imagenet/val/": "now: --data imagenet --data-path /data/imagenet",
        "imagefolder:/data/in1k_val":
            "now: --data imagenet --data-path ROOT, where ROOT/val is the ImageFolder /data/in1k_val",
        "fashion-mnist:/data/fmnist": "now: --data fashion-mnist --data-path /data/fmnist",
        "cifar100:/data/c100": "now: --data cifar100 --data-path /data/c100",
    }
    for spec, new in old.items():
        err = _fails([*base, "--data", spec], capsys)
        assert err.endswith(f"error: --data {spec}: NAME:DIR is the old spelling; {new}"), err
    err = _fails([*base, "--data", "mnist"], capsys)
    assert "--data must be one of digits, fashion-mnist, cifar10, cifar100, imagenet" in err
    assert err.endswith("got 'mnist'"), err
    for name in ("cifar10", "cifar100", "imagenet"):
        err = _fails([*base, "--data", name], capsys)
        assert f"FileNotFoundError: --data {name}: --data-path None is not a directory" in err
    (tmp_path / "empty").mkdir()
    err = _fails([*base, "--data", "cifar10", "--data-path", str(tmp_path / "empty")], capsys)
    assert "FileNotFoundError: --data cifar10: no cifar10 files under" in err
    err = _fails([*base, "--data", "imagenet", "--data-path", str(tmp_path / "empty")], capsys)
    assert f"{str(tmp_path / 'empty' / 'val')!r} does not exist (ImageFolder layout" in err
    err = _fails([*base, "--data", "fashion-mnist", "--data-path", str(tmp_path / "empty")], capsys)
    assert "FileNotFoundError: Fashion-MNIST file" in err


def test_cli_measures_a_users_own_model_from_an_import_path(tmp_path):
    from tests.user_models import build_csnn

    torch.manual_seed(0)
    model = build_csnn(channels=6)
    pruner = snn_lats.SoftThresholdPruner(model, 0.1, "constant", compensate=False, ignored_layers=["net.5"])
    torch.save({"model": model.state_dict()}, tmp_path / "user.pth")
    report = benchmark_sparsity.main(["--checkpoint", str(tmp_path / "user.pth"), "--model",
                                      "tests.user_models:build_csnn", "--model-kwargs", '{"channels": 6}',
                                      "--max-batches", "1", "--batch-size", "8",
                                      "--out", str(tmp_path / "out")])
    expected = pruner.sparsity_report().layers["net.0"].fraction
    assert 0.1 < expected < 1 and report.layers["net.0"]["weight_sparsity"] == pytest.approx(expected)
    assert report.layers["net.5"]["weight_sparsity"] == 0.0 and report.total["samples"] == 8


def test_cli_user_model_errors_are_one_line(tmp_path, capsys):
    from tests.user_models import build_csnn

    torch.save({"model": build_csnn(channels=6).state_dict()}, tmp_path / "user.pth")
    base = ["--checkpoint", str(tmp_path / "user.pth"), "--out", str(tmp_path / "out")]
    cases = {
        "no_such_pkg.nets:build": r"cannot import 'no_such_pkg.nets': No module named 'no_such_pkg'",
        "tests.user_models:build_cnn": r"module 'tests.user_models' has no attribute 'build_cnn'",
        "tests.user_models:NOT_A_FACTORY": r"'NOT_A_FACTORY' is a int, not a callable",
        "tests.user_models:not_a_module": r"returned a str, not a torch.nn.Module",
        "tests.user_models": r"'tests.user_models' is not a registry model \(.*sew_resnet18.*\) nor PACKAGE",
        "tests.user_models:": r"expected PACKAGE.MODULE:FACTORY",
    }
    for model, pattern in cases.items():
        assert re.search(pattern, _fails([*base, "--model", model], capsys)), model
    err = _fails([*base, "--model", "tests.user_models:build_csnn", "--model-kwargs", '{"width": 6}'], capsys)
    assert re.search(r"with --model-kwargs \{\"width\": 6\}: .*unexpected keyword argument 'width'", err)
    # the default channels=4, the checkpoint's 6
    err = _fails([*base, "--model", "tests.user_models:build_csnn"], capsys)
    assert "checkpoint does not match the model: shape mismatches" in err
    err = _fails([*base, "--model", "tests.user_models:build_csnn", "--model-kwargs", "{channels: 6}"],
                 capsys)
    assert "argument --model-kwargs: not valid JSON" in err
    assert "must be a JSON object" in _fails([*base, "--model-kwargs", "[6]"], capsys)


def test_cli_reads_the_training_pipelines_checkpoint(tmp_path, capsys):
    from experiments import train

    run = tmp_path / "run"
    train.main(["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "if",
                "--width-multiplier", "0.125", "--method", "pai", "--final-threshold", "0.08",
                "--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "3", "--device", "cpu",
                "--output-dir", str(run)])
    report = benchmark_sparsity.main(["--checkpoint", str(run / "checkpoint_best.pth"), "--max-batches", "1",
                                      "--out", str(tmp_path / "sparsity")])
    # No --model flags were needed: the checkpoint names its model and kwargs, and its prepared weights are
    # squashed offline. Pruning at initialization with D=0.08 leaves every conv sparse and the SNN
    # classifier dense.
    checkpoint = torch.load(run / "checkpoint_best.pth", weights_only=True)
    assert checkpoint["model_name"] == "sew_resnet18"
    assert checkpoint["model_kwargs"]["width_multiplier"] == 0.125
    convs = [n for n, r in report.layers.items() if r["type"] == "conv"]
    assert len(convs) == 20 and all(report.layers[n]["weight_sparsity"] > 0.1 for n in convs)
    assert report.layers["fc"]["weight_sparsity"] == 0.0
    assert report.total["samples"] == 128 and "layer1.0.conv1" in capsys.readouterr().out


def test_cli_measures_a_users_spiking_transformer_with_its_matmuls(tmp_path, capsys):
    from tests.user_models import build_spikformer

    torch.manual_seed(0)
    model = build_spikformer()
    snn_lats.SoftThresholdPruner(model, final_threshold=0.01, schedule="constant", compensate=False)
    _save(tmp_path / "pruned.pth", model.state_dict())
    out = tmp_path / "out"
    report = benchmark_sparsity.main(["--checkpoint", str(tmp_path / "pruned.pth"), "--model",
                                      "tests.user_models:build_spikformer", "--max-batches", "1",
                                      "--batch-size", "8", "--out", str(out)])
    conv1d = [n for n, r in report.layers.items() if r.get("module_type") == "Conv1d"]
    assert len(conv1d) == 4  # qkv, proj and the MLP's two: all counted
    assert [n for n, r in report.layers.items() if r["type"] == "matmul"]  # attention's products, own rows
    assert report.total["coverage"]["weights"] == 1.0
    assert "/matmul." in capsys.readouterr().out
    for name in ("weight_density.png", "operations.png", "firing_rate.png"):
        assert (out / name).stat().st_size > 0, name


def test_cli_memory_aware_energy_with_neurobench_writes_everything(tmp_path, capsys):
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", **KWARGS)
    snn_lats.SoftThresholdPruner(model, final_threshold=0.1, schedule="constant", compensate=False,
                                 ignored_layers=["fc"])
    _save(tmp_path / "pruned.pth", model.state_dict(), model_name="sew_resnet18", model_kwargs=KWARGS)
    out = tmp_path / "out"
    report = benchmark_sparsity.main(["--checkpoint", str(tmp_path / "pruned.pth"), "--max-batches", "2",
                                      "--batch-size", "16", "--energy", "lemaire", "--weight-format", "csr",
                                      "--weight-bits", "8", "--neurobench", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "energy (lemaire, csr 8-bit weights)" in printed and "per sample" in printed
    assert "NeuroBench 2.3 (its definitions, per sample)" in printed and "energy not modeled" in printed
    for name in ("sparsity.json", "sparsity.csv", "neurobench.json", "energy.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "sparsity.json").read_text())
    energy = saved["total"]["energy"]
    assert (energy["model"], energy["weight_format"], energy["weight_bits"]) == ("lemaire", "csr", 8)
    assert energy["per_sample_pj"] == pytest.approx(energy["total_pj"] / 32)
    assert saved["total"]["footprint"]["bytes"] == saved["total"]["footprint"]["table"]["csr8"]
    assert json.loads((out / "neurobench.json").read_text()) == json.loads(json.dumps(report.to_neurobench()))
    rows = (out / "sparsity.csv").read_text().splitlines()
    header = rows[0].split(",")
    for column in ("model_energy_pj", "params_pj", "potential_pj", "energy_per_sample_pj", "sops_per_sample",
                   "footprint_bytes"):
        assert column in header, column
    total = dict(zip(header, rows[-1].split(","), strict=True))
    assert float(total["model_energy_pj"]) == pytest.approx(energy["total_pj"])


def test_cli_energy_errors_come_before_anything_is_measured(tmp_path, capsys):
    model = models.create_model("sew_resnet18", **KWARGS)
    _save(tmp_path / "snn.pth", model.state_dict(), model_name="sew_resnet18", model_kwargs=KWARGS)
    ann_kwargs = dict(stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.125)
    _save(tmp_path / "ann.pth", models.create_model("resnet18", **ann_kwargs).state_dict(),
          model_name="resnet18", model_kwargs=ann_kwargs)
    out = tmp_path / "out"
    base = ["--checkpoint", str(tmp_path / "snn.pth"), "--max-batches", "1", "--out", str(out)]
    assert "--weight-format: invalid choice: 'coo'" in _fails([*base, "--weight-format", "coo"], capsys)
    assert "--weight-bits: invalid choice: 0" in _fails([*base, "--weight-bits", "0"], capsys)
    assert "reads dense 32-bit weights" in _fails([*base, "--energy", "lemaire-spikingjelly",
                                                   "--weight-format", "csr"], capsys)
    ann = ["--checkpoint", str(tmp_path / "ann.pth"), "--max-batches", "1", "--out", str(out), "--neurobench"]
    assert "--neurobench: the model has no SpikingJelly neuron" in _fails(ann, capsys)
    assert not out.exists()
