"""Real speed of OCS-pruned models against the dense ones: inference latency and training-step time.

    python -m experiments.bench_structured                                  # both configs on the CPU
    python -m experiments.bench_structured --configs resnet50 --device cuda --batch 64 --repeats 30

Each config builds the dense model with random weights, a copy pruned by ``OCSPruner`` to the target MAC
reduction (saliency-driven selection on those weights; no training needed for timing) and a second dense copy
as an A/A control whose ratio to the first shows the measurement noise. Every repeat times one inference pass
and one training step (forward, cross-entropy, backward, SGD step, ``reset_net`` for SNNs) of each variant,
rotating the order, so drifts in machine speed hit all equally. Reports medians, the measured speed-up
(dense / pruned) next to the FLOPs ratio (dense MACs / pruned MACs), and their quotient; target ≥ 0.7.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import models
from experiments.timing import device_from_args, timed
from snn_lats.structured import OCSPruner, count_macs

CONFIGS = {
    # name: (model name, model kwargs, input shape without batch, default batch)
    "resnet50": ("resnet50", {}, (3, 224, 224), 8),
    "sew18": ("sew_resnet18", dict(T=4, num_classes=1000), (3, 112, 112), 8),
}
TARGET = 0.5
VARIANTS = ("dense", "pruned", "control")


def train_step(model, optimizer, x, y):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    functional.reset_net(model)  # no-op for ANNs


@torch.no_grad()
def infer(model, x):
    model(x)
    functional.reset_net(model)


def bench(config: str, device: torch.device, batch: int, repeats: int, warmup: int, target: float) -> dict:
    name, kwargs, shape, _ = CONFIGS[config]
    torch.manual_seed(0)
    dense = models.create_model(name, **kwargs)
    pruned = copy.deepcopy(dense)
    example = torch.randn(1, *shape)
    start = time.perf_counter()
    pruner = OCSPruner(pruned, example, target)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    pruner.epoch_start(pruner.monitor_start_epoch)  # one per-epoch search, as during training
    epoch_start_s = time.perf_counter() - start
    pruner.prune(reselect=False)
    dense_macs, pruned_macs = count_macs(dense, example), count_macs(pruned, example)
    params = [sum(p.numel() for p in m.parameters()) for m in (dense, pruned)]

    nets = {"dense": dense.to(device), "pruned": pruned.to(device),
            "control": copy.deepcopy(dense).to(device)}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in nets.items()}
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 1000 if name == "resnet50" else kwargs["num_classes"], (batch,), device=device)
    results = {}
    for mode in ("inference", "training"):
        for m in nets.values():
            m.train(mode == "training")
        if mode == "inference":
            runs = {k: (lambda m=m: infer(m, x)) for k, m in nets.items()}
        else:
            runs = {k: (lambda m=m, o=optimizers[k]: train_step(m, o, x, y)) for k, m in nets.items()}
        for _ in range(warmup):
            for fn in runs.values():
                fn()
        times = {k: [] for k in runs}
        orders = list(itertools.permutations(VARIANTS))
        for r in range(repeats):
            for key in orders[r % len(orders)]:
                times[key].append(timed(runs[key], device))
        med = {k: statistics.median(v) for k, v in times.items()}
        speedup = med["dense"] / med["pruned"]
        results[mode] = {
            "dense_ms": med["dense"] * 1e3, "pruned_ms": med["pruned"] * 1e3,
            "control_ms": med["control"] * 1e3,
            "speedup": speedup, "control_ratio": med["control"] / med["dense"],
            "speedup_over_flops_ratio": speedup / (dense_macs / pruned_macs),
            "min_ms": {k: min(v) * 1e3 for k, v in times.items()},
        }
    return {
        "config": config, "model": name, "model_kwargs": kwargs, "input": [batch, *shape],
        "device": str(device), "target_flops_reduction": target,
        "dense_macs_per_sample": dense_macs, "pruned_macs_per_sample": pruned_macs,
        "achieved_flops_reduction": 1 - pruned_macs / dense_macs, "flops_ratio": dense_macs / pruned_macs,
        "dense_params": params[0], "pruned_params": params[1], "groups": len(pruner.groups),
        "pruner_build_s": build_s, "epoch_start_s": epoch_start_s, "repeats": repeats, "warmup": warmup,
        **results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: per config, 8)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--target", type=float, default=TARGET, help="target FLOPs (MAC) reduction")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.repeats <= 0 or args.warmup < 0 or (args.batch is not None and args.batch <= 0):
        parser.error("--repeats and --batch must be > 0, --warmup >= 0")
    if not 0 < args.target < 1:
        parser.error("--target must be in (0, 1)")
    device = device_from_args(parser, args.device)

    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{platform.processor()}")
    print(f"{'config':<9} {'input':<16} {'MACs/sample':>19} {'FLOPs x':>7} {'mode':<10} {'dense ms':>9} "
          f"{'pruned ms':>9} {'speed-up':>8} {'/FLOPs x':>8} {'A/A':>6}")
    for config in args.configs:
        batch = args.batch or CONFIGS[config][3]
        row = bench(config, device, batch, args.repeats, args.warmup, args.target)
        rows.append(row)
        macs = f"{row['dense_macs_per_sample'] / 1e9:.2f}G->{row['pruned_macs_per_sample'] / 1e9:.2f}G"
        for mode in ("inference", "training"):
            r = row[mode]
            print(f"{config:<9} {'x'.join(map(str, row['input'])):<16} {macs:>19} {row['flops_ratio']:7.3f} "
                  f"{mode:<10} {r['dense_ms']:9.1f} {r['pruned_ms']:9.1f} {r['speedup']:8.3f} "
                  f"{r['speedup_over_flops_ratio']:8.3f} {r['control_ratio']:6.3f}", flush=True)
        print(f"{config:<9} OCSPruner: build {row['pruner_build_s']:.1f} s, one epoch_start "
              f"{row['epoch_start_s']:.2f} s, {row['groups']} groups, "
              f"params {row['dense_params'] / 1e6:.2f}M -> {row['pruned_params'] / 1e6:.2f}M", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
