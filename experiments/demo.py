"""The `make demo` job: prune a small SEW ResNet-18 (T=4, multi-step LIF) on scikit-learn's digits with S-LATS.

    python -m experiments.demo                       # ~1-2 minutes on 2 CPU cores
    python -m experiments.demo --final-threshold 0.05 --epochs 40 --out runs/demo

The threshold d rises from 0 to D over the run with S-LATS, whose increments follow the per-step cosine LR,
so the implied L1 coefficient λ = Δd/lr stays flat. The run folder gets summary.json (and the per-layer
sparsity) and model.pth (the squashed model) at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch.utils.data import DataLoader

import models
import snn_lats
from experiments.data import digits


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
            functional.reset_net(model)
    model.train()
    return correct / total


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--final-threshold", type=float, default=0.08, help="D, the threshold S-LATS ends at")
    parser.add_argument("--T", type=int, default=4, help="time steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    args = parser.parse_args()
    if args.epochs <= 0 or args.batch_size <= 0:
        parser.error("--epochs and --batch-size must be > 0")

    torch.manual_seed(args.seed)
    out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    train_set, test_set = digits(seed=args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model_kwargs = dict(T=args.T, neuron_type="lif", stem="cifar", in_channels=1, num_classes=10,
                        width_multiplier=0.25)
    model = models.create_model("sew_resnet18", **model_kwargs)
    total_steps = args.epochs * len(train_loader)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    pruner = snn_lats.SoftThresholdPruner(
        model, final_threshold=args.final_threshold, schedule="s-lats", total_steps=total_steps,
        ignored_layers=["fc"], optimizer=optimizer,
    )
    print(f"sew_resnet18 x0.25, T={args.T}, LIF | {len(train_set)} train / {len(test_set)} test digits | "
          f"{len(pruner.layers)} pruned layers | S-LATS to D={args.final_threshold} over {total_steps} steps")

    start = time.time()
    lambdas = []
    for epoch in range(args.epochs):
        running = 0.0
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            functional.reset_net(model)
            pruner.step()
            lr_scheduler.step()
            running += loss.item()
            if pruner.l1_coefficient is not None:
                lambdas.append(pruner.l1_coefficient)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            acc = evaluate(model, test_loader)
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {running / len(train_loader):.4f}  "
                  f"test acc {acc:.4f}  sparsity {pruner.sparsity_report().sparsity:.4f}  "
                  f"d {pruner.threshold:.5f}  lambda {pruner.l1_coefficient:.3e}  [{time.time() - start:.0f}s]")

    report = pruner.sparsity_report()
    accuracy = evaluate(model, test_loader)
    pruner.squash()
    squashed_accuracy = evaluate(model, test_loader)
    mean_lambda = sum(lambdas) / len(lambdas)
    summary = {
        "model": "sew_resnet18", "width_multiplier": 0.25, "T": args.T, "neuron": "lif", "data": "sklearn digits",
        "schedule": "s-lats", "final_threshold": args.final_threshold, "epochs": args.epochs,
        "total_steps": total_steps, "test_accuracy": accuracy, "test_accuracy_squashed": squashed_accuracy,
        "sparsity": report.sparsity, "threshold": pruner.threshold, "l1_coefficient_mean": mean_lambda,
        "l1_coefficient_rel_std": (sum((v - mean_lambda) ** 2 for v in lambdas) / len(lambdas)) ** 0.5 / mean_lambda,
        "seconds": time.time() - start, "layers": report.to_dict()["layers"], "seed": args.seed,
        "versions": {"torch": torch.__version__, "snn_lats": snn_lats.__version__},
    }
    write_json_atomic(out / "summary.json", summary)
    tmp = out / "model.pth.tmp"
    torch.save({"model": model.state_dict(), "model_name": "sew_resnet18", "model_kwargs": model_kwargs}, tmp)
    os.replace(tmp, out / "model.pth")
    print(f"\ntest accuracy {accuracy:.4f} (squashed {squashed_accuracy:.4f}) | weight sparsity {report.sparsity:.4f} "
          f"| final d {pruner.threshold:.4f} | lambda {mean_lambda:.3e} (rel. std "
          f"{summary['l1_coefficient_rel_std']:.2%}) | {summary['seconds']:.0f}s")
    print(f"summary written to {out / 'summary.json'}; squashed model in {out / 'model.pth'}")
    print(f"spike-level sparsity: python -m experiments.benchmark_sparsity --checkpoint {out / 'model.pth'}")


if __name__ == "__main__":
    main()
