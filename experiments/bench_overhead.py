"""Training-step time with SoftThresholdPruner against the same model dense, interleaved in one process.

    python -m experiments.bench_overhead                              # all configs on the CPU
    python -m experiments.bench_overhead --configs sew18-cifar --device cuda --repeats 50

Three copies start from the same weights: dense, pruned, and a second dense copy as an A/A control whose ratio
to the first shows the measurement noise. Each repeat times one step of each, rotating the order, so drift in
machine speed hits all equally. A step is forward + backward + optimizer.step (+ the pruner's step,
+ reset_net for SNNs). Reports median ms, the ratio pruned / dense and the control ratio.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import models
import snn_lats
from experiments.timing import device_from_args, timed

CONFIGS = {
    # name: (model name, model kwargs, input shape without batch, batch size, ignored layers)
    "sew18-cifar": ("sew_resnet18", dict(T=4, stem="cifar", num_classes=10), (3, 32, 32), 8, ["fc"]),
    "sew18-imagenet-stem-32px": ("sew_resnet18", dict(T=4, num_classes=10), (3, 32, 32), 8, ["fc"]),
    "resnet50": ("resnet50", {}, (3, 224, 224), 8, []),
    # for bench_throughput
    "sew18-imagenet-224px": ("sew_resnet18", dict(T=4, num_classes=1000), (3, 224, 224), 4, ["fc"]),
}
DEFAULT_CONFIGS = ["sew18-cifar", "sew18-imagenet-stem-32px", "resnet50"]


def train_step(model, optimizer, x, y, pruner=None):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    functional.reset_net(model)  # no-op for ANNs
    if pruner is not None:
        pruner.step()


def bench(config: str, device: torch.device, repeats: int, warmup: int) -> dict:
    name, kwargs, shape, batch, ignored = CONFIGS[config]
    torch.manual_seed(0)
    dense = models.create_model(name, **kwargs).to(device)
    control = copy.deepcopy(dense)  # A/A: a second dense copy measures the noise floor of the ratio
    pruned = copy.deepcopy(dense)
    steps = warmup + repeats + 1
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                  for k, m in (("dense", dense), ("control", control), ("pruned", pruned))}
    pruner = snn_lats.SoftThresholdPruner(pruned, final_threshold=0.01, schedule="s-lats", total_steps=steps,
                                          ignored_layers=ignored, optimizer=optimizers["pruned"])
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    runs = {
        "dense": lambda: train_step(dense, optimizers["dense"], x, y),
        "control": lambda: train_step(control, optimizers["control"], x, y),
        "pruned": lambda: train_step(pruned, optimizers["pruned"], x, y, pruner),
    }
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times = {k: [] for k in runs}
    orders = list(itertools.permutations(runs))  # rotate the order so no variant always runs first
    for r in range(repeats):
        for key in orders[r % len(orders)]:
            times[key].append(timed(runs[key], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": config, "model": name, "input": [batch, *shape], "device": str(device),
        "pruned_layers": len(pruner.layers), "repeats": repeats,
        "dense_ms": med["dense"] * 1e3, "pruned_ms": med["pruned"] * 1e3,
        "ratio": med["pruned"] / med["dense"], "control_ratio": med["control"] / med["dense"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.repeats <= 0 or args.warmup < 0:
        parser.error("--repeats must be > 0 and --warmup >= 0")
    device = device_from_args(parser, args.device)

    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'config':<26} {'input':<18} {'dense ms':>9} {'pruned ms':>10} {'ratio':>6} {'A/A':>6}")
    for config in args.configs:
        row = bench(config, device, args.repeats, args.warmup)
        rows.append(row)
        print(f"{config:<26} {'x'.join(map(str, row['input'])):<18} {row['dense_ms']:9.1f} "
              f"{row['pruned_ms']:10.1f} {row['ratio']:6.3f} {row['control_ratio']:6.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
