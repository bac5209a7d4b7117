"""A SpikingJelly Fashion-MNIST classifier, with LATS pruning behind one flag.

    python examples/sj_fashion_mnist.py                 # dense
    python examples/sj_fashion_mnist.py --prune         # + snn_lats soft-threshold pruning (S-LATS)
    python examples/sj_fashion_mnist.py --prune --data digits --epochs 3 --batch-size 32 --final-threshold 0.1

The last is a quick check: on scikit-learn's digits it reached 99.2 % held-out accuracy at 69 % weight
sparsity, in 35 s on one CPU core (10 s of them training: 3 epochs of 44 steps). With the default batch of
128, digits has only 11 steps an epoch, and one such epoch stays at chance.

A small convolutional SNN with multi-step LIF neurons, direct encoding over T time steps, trained with
surrogate gradients, in the style of SpikingJelly's own examples. Every line that pruning adds is marked
`# snn_lats`. Fashion-MNIST is read from Debian's dataset-fashion-mnist (apt-get install
dataset-fashion-mnist) or --data-dir; when it is missing the script falls back to scikit-learn's digits.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch.utils.data import DataLoader, TensorDataset

import snn_lats  # snn_lats


class CSNN(nn.Module):
    def __init__(self, T: int, channels: int = 32, side: int = 28):
        super().__init__()
        self.T = T
        self.net = nn.Sequential(
            layer.Conv2d(1, channels, 3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.LIFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
            layer.MaxPool2d(2),
            layer.Conv2d(channels, channels, 3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.LIFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
            layer.MaxPool2d(2),
            layer.Flatten(),
            layer.Linear(channels * (side // 4) ** 2, 10, bias=False),
        )
        functional.set_step_mode(self, "m")

    def forward(self, x):  # x: [B, 1, H, W] -> logits averaged over T
        return self.net(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(0)


def load_data(name: str, data_dir: str):
    if name == "fashion-mnist":
        def read(prefix):
            with gzip.open(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")) as f:
                x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
            with gzip.open(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")) as f:
                y = np.frombuffer(f.read(), np.uint8, offset=8)
            return TensorDataset(torch.tensor(x, dtype=torch.float32) / 255,
                                 torch.tensor(y, dtype=torch.long))

        return read("train"), read("t10k"), 28
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    split = int(0.8 * len(y))
    train, test = order[:split], order[split:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test]), 8


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prune", action="store_true", help="prune with snn_lats (S-LATS soft threshold)")
    parser.add_argument("--final-threshold", type=float, default=0.05, help="D, with --prune")
    parser.add_argument("--data", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None,
                        help="cut epochs short (quick checks)")
    parser.add_argument("--out", default=None, help="save the final (squashed) state_dict here")
    args = parser.parse_args(argv)

    data = args.data
    test_images = os.path.join(args.data_dir, "t10k-images-idx3-ubyte.gz")
    if data == "fashion-mnist" and not os.path.isfile(test_images):
        print(f"Fashion-MNIST not found in {args.data_dir}: falling back to scikit-learn's digits")
        data = "digits"
    torch.manual_seed(0)
    train_set, test_set, side = load_data(data, args.data_dir)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=512)
    steps_per_epoch = min(len(train_loader), args.max_steps_per_epoch or len(train_loader))

    model = CSNN(args.T, side=side)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    pruner = None
    if args.prune:  # snn_lats
        pruner = snn_lats.SoftThresholdPruner(  # snn_lats
            model, final_threshold=args.final_threshold, schedule="s-lats",  # snn_lats
            total_steps=args.epochs * steps_per_epoch, optimizer=optimizer)  # snn_lats

    for epoch in range(args.epochs):
        model.train()
        start, total_loss = time.time(), 0.0
        for step, (x, y) in enumerate(train_loader):
            if step == steps_per_epoch:
                break
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            functional.reset_net(model)
            if pruner is not None:  # snn_lats
                pruner.step()  # snn_lats: after optimizer.step(), before lr_scheduler.step()
            lr_scheduler.step()
            total_loss += loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x).argmax(1) == y).sum().item()
                functional.reset_net(model)
        line = (f"epoch {epoch + 1}/{args.epochs}  loss {total_loss / steps_per_epoch:.4f}  "
                f"test acc {correct / len(test_set):.4f}  {time.time() - start:.0f}s")
        if pruner is not None:  # snn_lats
            sparsity = pruner.sparsity_report().sparsity  # snn_lats
            line += f"  sparsity {sparsity:.4f}  d {pruner.threshold:.4f}"  # snn_lats
        print(line, flush=True)

    if pruner is not None:  # snn_lats
        pruner.squash()  # snn_lats: plain layers with exact zeros
        report = snn_lats.metrics.measure(model, test_loader, max_batches=4)  # snn_lats: spike-level sparsity
        print(f"SOPs {report.total['sops']:.4g}  firing rate {report.total['firing_rate']:.4f}  "  # snn_lats
              f"energy vs dense ANN {report.total['energy_ratio']:.4f}")  # snn_lats
    if args.out:
        torch.save(model.state_dict(), args.out)
    return model, correct / len(test_set)


if __name__ == "__main__":
    main()
