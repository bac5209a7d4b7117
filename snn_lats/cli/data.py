"""The data sets of the experiments and of ``snn-lats-measure``, in one vocabulary:
``--data NAME [--data-path DIR]``.

NAME is one of ``DATASETS``; DIR is what the data set needs (none for digits, which ships with scikit-learn):

    digits                                   scikit-learn's 8x8 digits, a stratified 80/20 split
    fashion-mnist [--data-path DIR]          the IDX files (default: Debian's dataset-fashion-mnist)
    cifar10 --data-path DIR                  torchvision's layout, DIR/cifar-10-batches-py
    cifar100 --data-path DIR                 torchvision's layout, DIR/cifar-100-python
    imagenet --data-path DIR                 ImageFolder layout, DIR/train and DIR/val

``build_datasets`` gives training (experiments.train) both splits; ``eval_split`` gives measuring
(snn_lats.cli.measure, experiments.benchmark_sparsity) the same validation split, from the same code and
transforms; ``data_flags`` spells a (NAME, DIR) pair back as command-line flags, for the commands one script
prints for another. experiments.data re-exports all of it.

scikit-learn (digits) and torchvision (cifar10, cifar100, imagenet) are the ``[experiments]`` extra, imported
only when a data set needs them; a missing one is a ``MissingExtraError`` that names the extra.
"""
from __future__ import annotations

import os

import torch
from torch.utils.data import TensorDataset

EXTRA = "pip install snn_lats[experiments]"


class MissingExtraError(ImportError):
    """An optional dependency a data set (or the plots) needs is missing; the message names the extra."""


def require(module: str, distribution: str, needed_for: str):
    """``importlib.import_module(module)``, else a one-line MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{needed_for} needs {distribution}, which is not installed ({exc.msg}): "
                                f"{EXTRA}") from None


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's bundled 1,797 real 8×8 handwritten digits as ``[N, 1, 8, 8]`` in [0, 1], split per seed.

    The split is stratified, so both parts hold every class in proportion.
    """
    load_digits = require("sklearn.datasets", "scikit-learn", "--data digits").load_digits
    train_test_split = require("sklearn.model_selection", "scikit-learn", "--data digits").train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed, stratify=y.numpy()
    )
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def fashion_mnist(root: str = FASHION_MNIST_DIR, train: bool = False) -> TensorDataset:
    """Fashion-MNIST from its original IDX files (Debian's package, or torchvision's raw folder) as
    ``[N, 1, 28, 28]`` in [0, 1]."""
    import gzip

    np = require("numpy", "numpy", "--data fashion-mnist")

    prefix = "train" if train else "t10k"
    images = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
    labels = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
    for path in (images, labels):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Fashion-MNIST file {path} not found "
                                    "(apt-get install dataset-fashion-mnist)")
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).copy()
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return TensorDataset(torch.from_numpy(x).view(-1, 1, 28, 28).float() / 255, torch.from_numpy(y))


DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagenet")
PATHLESS = ("digits",)  # data sets that take no --data-path
# (channels, height, width) of one input, as training sees it (imagenet: after the evaluation crop)
INPUT_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}


def _new_spelling(spec: str) -> str | None:
    """For the old ``NAME:DIR`` form of --data (``fashion-mnist:DIR``, ``cifar10:DIR``, ``imagefolder:DIR``
    which named ImageNet's val/ folder itself; or any data set's name with a DIR), the same data in the one
    vocabulary; else None."""
    name, colon, path = spec.partition(":")
    takes_a_dir = name == "imagefolder" or (name in DATASETS and name not in PATHLESS)
    if not colon or not takes_a_dir:
        return None
    if name != "imagefolder":
        return f"--data {name} --data-path {path}"
    parent, leaf = os.path.split(path.rstrip("/\\"))
    if leaf == "val":  # --data-path names the root that holds val/ (and train/), as experiments.train does
        return f"--data imagenet --data-path {parent or '.'}"
    return f"--data imagenet --data-path ROOT, where ROOT/val is the ImageFolder {path}"


def check_name(name: str) -> None:
    """A one-line ValueError unless ``name`` is one of DATASETS; for an old ``NAME:DIR`` form it names the new
    spelling."""
    if name in DATASETS:
        return
    new = _new_spelling(name)
    if new is not None:
        raise ValueError(f"--data {name}: NAME:DIR is the old spelling; now: {new}")
    raise ValueError(f"--data must be one of {', '.join(DATASETS)} (with --data-path DIR where needed), "
                     f"got {name!r}")


def data_flags(name: str, path: str | os.PathLike | None) -> list[str]:
    """``--data NAME [--data-path DIR]``, the argv both experiments.train and experiments.benchmark_sparsity
    take (digits has no path, so none is passed)."""
    check_name(name)
    flags = ["--data", name]
    if path is not None and name not in PATHLESS:
        flags += ["--data-path", os.fspath(path)]
    return flags


def _load(name: str, path: str | None, train: bool):
    """(train set or None, val set, num_classes, in_channels): the one place that knows each data set's files
    and transforms; ``train=False`` loads (and requires) only the validation split."""
    check_name(name)
    if name == "digits":
        train_set, val = digits()
        return (train_set if train else None), val, 10, 1
    if name == "fashion-mnist":
        root = path or FASHION_MNIST_DIR
        return (fashion_mnist(root, train=True) if train else None), fashion_mnist(root, train=False), 10, 1
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"--data {name}: --data-path {path!r} is not a directory")
    T = require("torchvision.transforms", "torchvision", f"--data {name}")
    datasets = require("torchvision.datasets", "torchvision", f"--data {name}")

    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        val_tf = T.Compose([T.ToTensor(), norm])
        try:
            train_set = cls(path, train=True, download=False, transform=train_tf) if train else None
            val = cls(path, train=False, download=False, transform=val_tf)
        except RuntimeError as exc:
            raise FileNotFoundError(f"--data {name}: no {name} files under {path!r} ({exc})") from exc
        return train_set, val, 10 if name == "cifar10" else 100, 3
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    folders = {split: os.path.join(path, split) for split in (("train", "val") if train else ("val",))}
    for folder in folders.values():
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--data imagenet: {folder!r} does not exist "
                                    "(ImageFolder layout: train/ and val/)")
    try:
        train_set = datasets.ImageFolder(folders["train"], train_tf) if train else None
        val = datasets.ImageFolder(folders["val"], val_tf)
    except FileNotFoundError as exc:  # torchvision's message for a folder without images
        raise FileNotFoundError(f"--data imagenet: {exc}") from exc
    return train_set, val, len((train_set or val).classes), 3


def build_datasets(name: str, path: str | None = None):
    """(train, val, num_classes, in_channels) for ``name``; a missing path or empty folder fails before
    training."""
    return _load(name, path, train=True)


def eval_split(name: str, path: str | None = None):
    """The validation split that ``build_datasets(name, path)`` trains against, with its transforms (only that
    split's files are read, and needed)."""
    return _load(name, path, train=False)[1]
