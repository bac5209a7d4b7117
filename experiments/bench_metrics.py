"""Cost of a measured pass (snn_lats.metrics.measure) against a plain eval pass, interleaved in one process.

    python -m experiments.bench_metrics                     # SEW ResNet-18 and a Spikformer, T=4, CPU
    python -m experiments.bench_metrics --device cuda --repeats 20

A plain pass is what a validation loop does: eval mode, no_grad, forward, reset_net after each batch. A
measured pass is one measure() call over the same batches (hooks, exact SOP counts, firing rates, per-layer
masks and the dispatch mode that counts module-less matrix products included); ``products=False`` times it
without that mode; "lemaire" is measure(energy="lemaire", weight_format="csr", weight_bits=8) (the
memory-aware energy and the footprint, priced from the same counts) and "neurobench" adds
``neurobench=True`` (NeuroBench's pair counts and each step's membrane). Each repeat times every variant,
rotating which goes first; the table gives medians and their ratio to the plain pass, and an A/A column
(plain against plain) for the noise floor.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from spikingjelly.activation_based import functional

import models
from experiments.timing import device_from_args, timed
from snn_lats.metrics import measure

CONFIGS = {
    # name: (registry model, model kwargs, input shape without batch, batch size)
    "sew18-cifar-32px": ("sew_resnet18", dict(T=4, stem="cifar", num_classes=10), (3, 32, 32), 16),
    "sew18-imagenet-224px": ("sew_resnet18", dict(T=4, num_classes=1000), (3, 224, 224), 4),
    # SpikingJelly's CIFAR-10 Spikformer (384 dims, 12 heads, 4 blocks): Conv1d layers and spike matmuls
    "spikformer-cifar10-32px": ("spikformer_cifar10", dict(T=4), (3, 32, 32), 8),
}


LEMAIRE = dict(energy="lemaire", weight_format="csr", weight_bits=8)


@torch.no_grad()
def plain_pass(model, batches):
    model.eval()
    for x in batches:
        model(x)
        functional.reset_net(model)


def bench(config, device, repeats, batches_per_pass):
    name, kwargs, shape, batch = CONFIGS[config]
    torch.manual_seed(0)
    model = models.create_model(name, **kwargs).to(device)
    batches = [torch.rand(batch, *shape, device=device) * 4 for _ in range(batches_per_pass)]
    runs = {"plain": lambda: plain_pass(model, batches), "control": lambda: plain_pass(model, batches),
            "measured": lambda: measure(model, batches),
            "no_products": lambda: measure(model, batches, products=False),
            "lemaire": lambda: measure(model, batches, **LEMAIRE),
            "neurobench": lambda: measure(model, batches, **LEMAIRE, neurobench=True)}
    for fn in runs.values():
        fn()
    times = {k: [] for k in runs}
    keys = list(runs)
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            times[key].append(timed(runs[key], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": config, "device": str(device), "batch": batch, "batches_per_pass": batches_per_pass,
            "plain_ms": med["plain"] * 1e3, "measured_ms": med["measured"] * 1e3,
            "no_products_ms": med["no_products"] * 1e3, "ratio": med["measured"] / med["plain"],
            "no_products_ratio": med["no_products"] / med["plain"],
            "lemaire_ms": med["lemaire"] * 1e3, "lemaire_ratio": med["lemaire"] / med["plain"],
            "neurobench_ms": med["neurobench"] * 1e3, "neurobench_ratio": med["neurobench"] / med["plain"],
            "control_ratio": med["control"] / med["plain"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches-per-pass", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.repeats <= 0 or args.batches_per_pass <= 0:
        parser.error("--repeats and --batches-per-pass must be > 0")
    device = device_from_args(parser, args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'config':<24} {'batch':>5} {'plain ms':>9} {'measured ms':>12} {'ratio':>6} "
          f"{'no products':>11} {'lemaire':>8} {'neurobench':>10} {'A/A':>6}")
    rows = []
    for config in args.configs:
        row = bench(config, device, args.repeats, args.batches_per_pass)
        rows.append(row)
        print(f"{config:<24} {row['batch']:>5} {row['plain_ms']:9.1f} {row['measured_ms']:12.1f} "
              f"{row['ratio']:6.3f} {row['no_products_ratio']:11.3f} {row['lemaire_ratio']:8.3f} "
              f"{row['neurobench_ratio']:10.3f} {row['control_ratio']:6.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
