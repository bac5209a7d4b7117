"""Small real data sets that ship with installed packages (no download)."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's bundled 1,797 real 8×8 handwritten digits as ``[N, 1, 8, 8]`` in [0, 1], split per seed.

    The split is stratified, so both parts hold every class in proportion.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed, stratify=y.numpy()
    )
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def fashion_mnist(root: str = FASHION_MNIST_DIR, train: bool = False) -> TensorDataset:
    """Fashion-MNIST from its original IDX files (Debian's package, or torchvision's raw folder) as [N, 1, 28, 28]."""
    import gzip
    import os

    import numpy as np

    prefix = "train" if train else "t10k"
    images = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
    labels = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
    for path in (images, labels):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Fashion-MNIST file {path} not found (apt-get install dataset-fashion-mnist)")
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).copy()
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return TensorDataset(torch.from_numpy(x).view(-1, 1, 28, 28).float() / 255, torch.from_numpy(y))


def eval_dataset(spec: str):
    """``digits`` | ``fashion-mnist[:DIR]`` | ``cifar10:DIR`` | ``imagefolder:DIR`` (ImageNet-style val transforms)."""
    name, _, path = spec.partition(":")
    if name == "digits":
        return digits()[1]
    if name == "fashion-mnist":
        return fashion_mnist(path or FASHION_MNIST_DIR, train=False)
    if name in ("cifar10", "imagefolder"):
        import os

        import torchvision.transforms as T
        from torchvision import datasets

        if not path or not os.path.isdir(path):
            raise FileNotFoundError(f"--data {spec}: directory {path!r} does not exist")
        if name == "cifar10":
            norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
            return datasets.CIFAR10(path, train=False, download=False, transform=T.Compose([T.ToTensor(), norm]))
        norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return datasets.ImageFolder(path, T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]))
    raise ValueError(f"--data must be digits, fashion-mnist[:DIR], cifar10:DIR or imagefolder:DIR, got {spec!r}")


DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagenet")


def build_datasets(name: str, path: str | None = None):
    """(train, val, num_classes, in_channels) for ``name``; a missing path or empty folder fails before training."""
    import os

    if name not in DATASETS:
        raise ValueError(f"--data must be one of {DATASETS}, got {name!r}")
    if name == "digits":
        train, val = digits()
        return train, val, 10, 1
    if name == "fashion-mnist":
        root = path or FASHION_MNIST_DIR
        return fashion_mnist(root, train=True), fashion_mnist(root, train=False), 10, 1
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"--data {name}: --data-path {path!r} is not a directory")
    import torchvision.transforms as T
    from torchvision import datasets

    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        val_tf = T.Compose([T.ToTensor(), norm])
        try:
            train = cls(path, train=True, download=False, transform=train_tf)
            val = cls(path, train=False, download=False, transform=val_tf)
        except RuntimeError as exc:
            raise FileNotFoundError(f"--data {name}: no {name} files under {path!r} ({exc})") from exc
        return train, val, 10 if name == "cifar10" else 100, 3
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    folders = {split: os.path.join(path, split) for split in ("train", "val")}
    for split, folder in folders.items():
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--data imagenet: {folder!r} does not exist (ImageFolder layout: train/ and val/)")
    try:
        train = datasets.ImageFolder(folders["train"], train_tf)
        val = datasets.ImageFolder(folders["val"], val_tf)
    except FileNotFoundError as exc:  # torchvision's message for a folder without images
        raise FileNotFoundError(f"--data imagenet: {exc}") from exc
    return train, val, len(train.classes), 3
