"""Cost of a measured pass (snn_lats.metrics.measure) against a plain eval pass, interleaved in one process.

    python -m experiments.bench_metrics                     # SEW ResNet-18, T=4, CPU
    python -m experiments.bench_metrics --device cuda --repeats 20

A plain pass is what a validation loop does: eval mode, no_grad, forward, reset_net after each batch. A measured
pass is one measure() call over the same batches (hooks, exact SOP counts, firing rates, per-layer masks
included). Each repeat times both, alternating which goes first; the table gives medians and their ratio, and an
A/A row (plain against plain) for the noise floor.
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
    # name: (model kwargs, input shape without batch, batch size)
    "sew18-cifar-32px": (dict(T=4, stem="cifar", num_classes=10), (3, 32, 32), 16),
    "sew18-imagenet-224px": (dict(T=4, num_classes=1000), (3, 224, 224), 4),
}


@torch.no_grad()
def plain_pass(model, batches):
    model.eval()
    for x in batches:
        model(x)
        functional.reset_net(model)


def bench(config, device, repeats, batches_per_pass):
    kwargs, shape, batch = CONFIGS[config]
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", **kwargs).to(device)
    batches = [torch.rand(batch, *shape, device=device) * 4 for _ in range(batches_per_pass)]
    runs = {"plain": lambda: plain_pass(model, batches), "control": lambda: plain_pass(model, batches),
            "measured": lambda: measure(model, batches)}
    for fn in runs.values():
        fn()
    times = {k: [] for k in runs}
    keys = list(runs)
    for r in range(repeats):
        for key in keys[r % 3:] + keys[: r % 3]:
            times[key].append(timed(runs[key], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": config, "device": str(device), "batch": batch, "batches_per_pass": batches_per_pass,
            "plain_ms": med["plain"] * 1e3, "measured_ms": med["measured"] * 1e3,
            "ratio": med["measured"] / med["plain"], "control_ratio": med["control"] / med["plain"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    print(f"{'config':<22} {'batch':>5} {'plain ms':>9} {'measured ms':>12} {'ratio':>6} {'A/A':>6}")
    rows = []
    for config in args.configs:
        row = bench(config, device, args.repeats, args.batches_per_pass)
        rows.append(row)
        print(f"{config:<22} {row['batch']:>5} {row['plain_ms']:9.1f} {row['measured_ms']:12.1f} "
              f"{row['ratio']:6.3f} {row['control_ratio']:6.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
