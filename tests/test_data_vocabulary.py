"""One data vocabulary, ``--data NAME [--data-path DIR]``, for experiments.train, benchmark_sparsity, sweep.

For every data set train.py trains on, the benchmark command train.py prints after a run (built with
experiments.data.data_flags, as train.py builds it) parses and measures on the validation split train.py
evaluated on, with the same transforms. CIFAR-10/100, ImageNet and Fashion-MNIST are tiny fakes in their real
file layouts (CIFAR's python pickles, ImageFolder PNGs, gzipped IDX), read by the real loaders; digits ships
with scikit-learn and runs end to end: a real training run, then the command it printed.
"""
import gzip
import json
import os
import pickle
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import models
from experiments import benchmark_sparsity
from experiments.data import DATASETS, build_datasets, data_flags, eval_split
from tests.conftest import HANG
from tests.test_train import ENV, ROOT

BENCHMARK = ["python", "-m", "experiments.benchmark_sparsity"]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def printed_command(checkpoint, name: str, path) -> str:
    """The follow-up line experiments.train prints after a run, built the way it builds it."""
    return shlex.join([*BENCHMARK, "--checkpoint", str(checkpoint), *data_flags(name, path)])


def benchmark_argv(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[:3] == BENCHMARK, line
    return words[3:]


# --- tiny data sets in the real layouts ---------------------------------------------------------------------

def _pixels(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def fake_cifar10(root, per_batch=2, test=6):
    """cifar-10-batches-py/: data_batch_1..5 (per_batch images each), test_batch, batches.meta."""
    rng = np.random.default_rng(10)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": _pixels(rng, per_batch), "labels": [i % 10] * per_batch})
    test_data = _pixels(rng, test)
    _pickle(folder / "test_batch", {"data": test_data, "labels": list(range(test))})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return test_data


def fake_cifar100(root, train=8, test=5):
    """cifar-100-python/: train, test, meta."""
    rng = np.random.default_rng(100)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    _pickle(folder / "train", {"data": _pixels(rng, train), "fine_labels": list(range(train)),
                               "coarse_labels": [0] * train})
    test_data = _pixels(rng, test)
    _pickle(folder / "test", {"data": test_data, "fine_labels": [99 - i for i in range(test)],
                              "coarse_labels": [0] * test})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return test_data


def fake_imagenet(root, classes=("n01", "n02", "n03"), train=1, val=2):
    """ImageFolder layout: train/CLASS/*.png and val/CLASS/*.png, small odd-sized RGB images."""
    rng = np.random.default_rng(1)
    for split, count in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(30 + 7 * i, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def fake_fashion_mnist(root, train=12, test=7):
    """The four gzipped IDX files (16-byte image header, 8-byte label header)."""
    rng = np.random.default_rng(28)
    root.mkdir(parents=True)
    for prefix, n in (("train", train), ("t10k", test)):
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            pixels = rng.integers(0, 256, n * 784, np.uint8)
            f.write(np.array([2051, n, 28, 28], ">i4").tobytes() + pixels.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(np.array([2049, n], ">i4").tobytes() + (np.arange(n) % 10).astype(np.uint8).tobytes())


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision checks the real archives' md5 sums; the fakes pass on existence (the rest is real)."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# name -> (n_train, n_val, num_classes, in_channels, sample shape, stem)
EXPECTED = {"digits": (1437, 360, 10, 1, (1, 8, 8), "cifar"),
            "fashion-mnist": (12, 7, 10, 1, (1, 28, 28), "cifar"),
            "cifar10": (10, 6, 10, 3, (3, 32, 32), "cifar"),
            "cifar100": (8, 5, 100, 3, (3, 32, 32), "cifar"),
            "imagenet": (3, 6, 3, 3, (3, 224, 224), "imagenet")}


def make_data(name: str, tmp_path):
    """(--data-path, the raw val pixels where the check needs them) for a fake of ``name``."""
    root = tmp_path / name
    if name == "digits":
        return None, None
    if name == "fashion-mnist":
        fake_fashion_mnist(root)
        return root, None
    root.mkdir()
    if name == "cifar10":
        return root, fake_cifar10(root)
    if name == "cifar100":
        return root, fake_cifar100(root)
    fake_imagenet(root)
    return root, None


def save_checkpoint(path, num_classes: int, in_channels: int, stem: str) -> dict:
    """A training-style checkpoint (model_name, model_kwargs) of a tiny SEW ResNet-18 for the data set."""
    kwargs = dict(T=2, neuron_type="lif", stem=stem, in_channels=in_channels, num_classes=num_classes,
                  width_multiplier=0.125)
    torch.manual_seed(0)
    torch.save({"model": models.create_model("sew_resnet18", **kwargs).state_dict(),
                "model_name": "sew_resnet18", "model_kwargs": kwargs}, path)
    return kwargs


def test_the_names_are_train_pys():
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "cifar100", "imagenet")
    assert set(EXPECTED) == set(DATASETS)
    assert data_flags("digits", None) == ["--data", "digits"]
    assert data_flags("digits", "/ignored") == ["--data", "digits"]  # digits takes no path
    assert data_flags("fashion-mnist", None) == ["--data", "fashion-mnist"]  # Debian's package by default
    assert data_flags("imagenet", "/data/imagenet") == ["--data", "imagenet", "--data-path", "/data/imagenet"]
    with pytest.raises(ValueError, match=r"now: --data cifar10 --data-path /data/c10"):
        data_flags("cifar10:/data/c10", None)


@pytest.mark.parametrize("name", DATASETS)
def test_the_printed_benchmark_command_measures_the_validation_split(name, tmp_path, skip_cifar_md5):
    from experiments import train

    n_train, n_val, num_classes, in_channels, shape, stem = EXPECTED[name]
    path, raw_val = make_data(name, tmp_path)
    directory = None if path is None else str(path)
    checkpoint = tmp_path / "run" / "checkpoint_best.pth"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, num_classes, in_channels, stem)
    line = printed_command(checkpoint, name, path)
    argv = benchmark_argv(line)
    assert argv[argv.index("--data") + 1] == name
    assert (argv[argv.index("--data-path") + 1] == directory) if path else "--data-path" not in argv
    # train.py takes the same flags (its parser), so the pair means the same data to both
    trained = train.parse_args([*argv[2:], "--method", "dense", "--device", "cpu"])
    measured = benchmark_sparsity.get_args_parser().parse_args(argv)
    assert (trained.data, trained.data_path) == (measured.data, measured.data_path) == (name, directory)

    # the split benchmark_sparsity measures is the one train.py evaluates on, with the same transforms
    train_set, val_set, classes, channels = build_datasets(name, directory)
    split = eval_split(name, directory)
    assert (len(train_set), len(val_set), len(split)) == (n_train, n_val, n_val)
    assert (classes, channels) == (num_classes, in_channels)
    assert repr(getattr(split, "transform", None)) == repr(getattr(val_set, "transform", None))
    for i in (0, n_val - 1):
        (x, y), (x_val, y_val) = split[i], val_set[i]
        assert x.shape == shape and torch.equal(x, x_val) and int(y) == int(y_val)
    if raw_val is not None:  # CIFAR: ToTensor + Normalize, no crop or flip
        pixels = torch.from_numpy(raw_val[-1].reshape(3, 32, 32)).float() / 255
        mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
        expected = (pixels - mean) / std
        torch.testing.assert_close(split[n_val - 1][0], expected)
        assert split[n_val - 1][1] == (n_val - 1 if name == "cifar10" else 99 - (n_val - 1))
    if name == "imagenet":
        assert split.classes == ["n01", "n02", "n03"] and [t for _, t in split.samples] == [0, 0, 1, 1, 2, 2]

    # one batch of 128: each fake's whole validation split (the digits run below measures all of its 360)
    out = tmp_path / "sparsity"
    report = benchmark_sparsity.main([*argv, "--out", str(out), "--batch-size", "128", "--max-batches", "1",
                                      "--device", "cpu"])
    assert report.total["samples"] == min(n_val, 128)  # validation samples, none of the training ones
    assert json.loads((out / "sparsity.json").read_text())["total"]["samples"] == min(n_val, 128)


def test_imagenet_measures_with_only_val_present(tmp_path):
    fake_imagenet(tmp_path / "imagenet")
    for image in (tmp_path / "imagenet" / "train").rglob("*.png"):
        image.unlink()
    for folder in sorted((tmp_path / "imagenet" / "train").iterdir()):
        folder.rmdir()
    (tmp_path / "imagenet" / "train").rmdir()
    split = eval_split("imagenet", str(tmp_path / "imagenet"))
    assert len(split) == 6 and split[0][0].shape == (3, 224, 224)
    with pytest.raises(FileNotFoundError, match=r"train'? does not exist"):
        build_datasets("imagenet", str(tmp_path / "imagenet"))


def test_a_digits_run_then_the_command_it_printed(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--data", "digits", "--model", "sew_resnet18", "--T", "2",
         "--neuron", "lif", "--width-multiplier", "0.125", "--method", "dense", "--batch-size", "32", "--lr",
         "0.1", "--device", "cpu", "--epochs", "1", "--max-steps-per-epoch", "2", "--seed", "3",
         "--output-dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr[-2000:]
    line = printed_command(out / "checkpoint_best.pth", "digits", None)
    assert line in result.stdout, result.stdout[-2000:]  # train.py printed exactly this command
    argv = [*benchmark_argv(line), "--out", str(tmp_path / "sparsity"), "--device", "cpu"]
    measured = subprocess.run([sys.executable, "-m", "experiments.benchmark_sparsity", *argv], cwd=ROOT,
                              env=ENV, capture_output=True, text=True, timeout=HANG)
    assert measured.returncode == 0, measured.stderr[-2000:]
    total = json.loads((tmp_path / "sparsity" / "sparsity.json").read_text())["total"]
    assert total["samples"] == 360  # the digits validation split train.py evaluated on
    assert total["time_steps"] == 2 and total["macs"] > 0  # the run's T=2 model, its stem's MACs counted
    assert f"wrote {tmp_path / 'sparsity' / 'sparsity.json'}" in measured.stdout
