"""AMP training throughput of SEW ResNet-18 (T=4, synthetic data) pruned by S-LATS: our fused neurons,
SpikingJelly's neurons, and dense (SpikingJelly's neurons, no pruner). Images/s and peak CUDA memory each.

    python -m experiments.bench_amp_train --device cuda                       # 60 steps at 224x224
    python -m experiments.bench_amp_train --device cpu --steps 2 --batch-size 1 --image-size 32 \
        --width-multiplier 0.125
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

import models
import snn_lats
from experiments.timing import device_from_args
from snn_lats.snn.swap import use_fused_neurons

VARIANTS = ("fused", "spikingjelly", "dense")


def run_variant(variant: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", T=args.T, num_classes=1000, neuron_type=args.neuron,
                                width_multiplier=args.width_multiplier)
    if variant == "fused" and (report := use_fused_neurons(model)).unsupported:
        raise RuntimeError(f"the fused variant would keep SpikingJelly neurons: {report}")
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = None
    total = args.steps + args.warmup
    if variant != "dense":
        pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.01, schedule="s-lats",
                                              total_steps=total, ignored_layers=["fc"], optimizer=optimizer)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        functional.reset_net(model)
        if pruner is not None:
            pruner.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    row = {"variant": variant, "neuron": args.neuron, "steps": args.steps, "batch_size": args.batch_size,
           "T": args.T, "image_size": args.image_size, "amp": amp, "seconds": seconds,
           "img_per_s": args.steps * args.batch_size / seconds}
    row["max_memory_allocated_mib"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                       if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--neuron", default="if", choices=("if", "lif", "plif"),
                        help="SEW ResNet-18's neuron: if (the SEW ImageNet setting, default), lif, plif")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = device_from_args(parser, args.device)
    if args.steps <= 0 or args.warmup < 0:
        parser.error("--steps must be > 0 and --warmup >= 0")
    rows = []
    for variant in args.variants:
        row = run_variant(variant, args, device)
        mem = row["max_memory_allocated_mib"]
        print(f"{variant:<14} {row['img_per_s']:9.1f} img/s"
              + (f"  max_memory_allocated {mem:.0f} MiB" if mem is not None else ""), flush=True)
        rows.append(row)
    if args.out:
        snn_lats.io.atomic_write(args.out, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
