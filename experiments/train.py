"""Train, and prune while training: SEW ResNets, ResNet-50 and MobileNet-V1, on one CPU or many GPUs.

    python -m experiments.train -c experiments/configs/demo_digits.yaml                    # CPU, ~1 minute
    torchrun --nproc_per_node 8 -m experiments.train -c experiments/configs/sew_resnet18_imagenet_lats.yaml \\
        --data-path /data/imagenet --output-dir runs/sew18_lats
    python -m experiments.train ... --resume auto                                           # after a crash

Options come from argparse; ``-c config.yaml`` supplies defaults (an unknown key is an error) and command-line
flags override them. The resolved config is written to OUTPUT_DIR/config.yaml. ``--batch-size`` is per process:
the global batch is batch-size x world size, and ``--lr`` is taken as given (scale it yourself, e.g. linearly with
the global batch: the configs state the batch their LR is for).

Under torchrun every rank trains on its DistributedSampler shard; rank 0 alone writes checkpoints, logs and
summaries. Each epoch writes checkpoint_last.pth (and checkpoint_best.pth on a new best Acc@1) atomically; it holds
model, optimizer, LR scheduler, AMP scaler, pruner, epoch, step, RNG states and the config, as plain dicts that
load with torch.load(weights_only=True). ``--resume auto`` continues from checkpoint_last.pth bit for bit on the
CPU with fixed seeds. A corrupt checkpoint stops the run with a clear error; it never starts over silently.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from spikingjelly.activation_based import functional
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import models
import snn_lats
from experiments.data import DATASETS, build_datasets
from snn_lats.checkpoint import (export_dense, load_checkpoint, load_plain_weights, model_state_from_checkpoint,
                                 save_checkpoint)
from snn_lats.metrics import new_batch, recording_firing
from snn_lats.trail import Trail

METHODS = ("dense", "s-lats", "lats", "pgh", "lr", "early", "pai", "gmp", "ltp")
SNN_MODELS = ("sew_resnet18", "sew_resnet34", "sew_resnet50")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None, help="YAML file of defaults (keys are the long option names)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", help=f"one of {DATASETS}")
    g.add_argument("--data-path", default=None, help="dataset root (ImageFolder root with train/ and val/ for imagenet)")
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--train-subset", type=int, default=None, help="train on the first N samples (CPU-sized runs)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="sew_resnet18", help=f"one of {models.list_models()}")
    g.add_argument("--T", type=int, default=4, help="time steps (SNNs)")
    g.add_argument("--neuron", default="if", help="if | lif | plif (SNNs)")
    g.add_argument("--cnf", default="ADD", help="ADD | AND | IAND (SEW ResNets)")
    g.add_argument("--stem", default=None, help="imagenet | cifar (SEW ResNets; default: by data)")
    g.add_argument("--width-multiplier", type=float, default=1.0)
    g.add_argument("--fused-neurons", action="store_true", help="swap in snn_lats's fused LIF/IF nodes")
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="s-lats", help=f"one of {METHODS}")
    g.add_argument("--final-threshold", type=float, default=None, help="D for soft-threshold methods")
    g.add_argument("--l1-coefficient", type=float, default=None, help="λ for --method lr (else solved from D)")
    g.add_argument("--beta", type=float, default=0.1, help="PGH base for pgh / early")
    g.add_argument("--freeze-epoch", type=int, default=None, help="fix the masks after this epoch (early pruning)")
    g.add_argument("--pruning-start-epoch", type=int, default=0)
    g.add_argument("--pruning-ratio", type=float, default=0.9, help="final sparsity for gmp")
    g.add_argument("--ignored-layers", nargs="*", default=None, help="default: the classifier of SNNs")
    g.add_argument("--l0-weight", type=float, default=1.0, help="λ of LTP's L0 term (ltp; larger: sparser)")
    g.add_argument("--temperature", type=float, default=0.5, help="T0 of LTP's sigmoid, T_l = T0·Var(|w|) (ltp)")
    g.add_argument("--threshold-lr", type=float, default=None, help="LR of LTP's thresholds (default: --lr)")
    g.add_argument("--pretrained", default=None, help="start from this checkpoint's weights (dense or pruned)")
    g.add_argument("--trail", action=argparse.BooleanOptionalAction, default=None,
                   help="save every epoch's hard-masked model to OUTPUT_DIR/trail (default: on for ltp)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--warmup-epochs", type=int, default=0)
    g.add_argument("--sched-interval", default="step", help="step | epoch: how often the cosine LR moves")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--amp", default="none", help="none | fp16 | bf16")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--sync-bn", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output-dir", default="runs/train")
    g.add_argument("--resume", default=None, help="'auto' (OUTPUT_DIR/checkpoint_last.pth if present) or a path")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut epochs short (smoke tests)")
    g.add_argument("--dump-rank-state", action="store_true", help="every rank saves its final state (DDP checks)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        if not os.path.isfile(pre.config):
            parser.error(f"--config {pre.config}: file not found")
        with open(pre.config) as f:
            config = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(k for k in config if k.replace("-", "_") not in known)
        if unknown:
            parser.error(f"--config {pre.config}: unknown keys {unknown}")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in config.items()})
    args = parser.parse_args(argv)
    checks = [
        (args.data in DATASETS, f"--data must be one of {DATASETS}, got {args.data!r}"),
        (args.model in models.list_models(), f"--model must be one of {models.list_models()}, got {args.model!r}"),
        (args.method in METHODS, f"--method must be one of {METHODS}, got {args.method!r}"),
        (args.batch_size > 0, f"--batch-size must be > 0, got {args.batch_size}"),
        (args.epochs > 0, f"--epochs must be > 0, got {args.epochs}"),
        (args.train_subset is None or args.train_subset > 0, f"--train-subset must be > 0, got {args.train_subset}"),
        (args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        (args.amp in ("none", "fp16", "bf16"), f"--amp must be none, fp16 or bf16, got {args.amp!r}"),
        (args.sched_interval in ("step", "epoch"), f"--sched-interval must be step or epoch, got {args.sched_interval!r}"),
        (args.method in ("dense", "gmp", "lr", "ltp") or args.final_threshold is not None,
         f"--method {args.method} needs --final-threshold"),
        (0 <= args.pruning_start_epoch < args.epochs, "--pruning-start-epoch must be in [0, --epochs)"),
        (args.l0_weight >= 0, f"--l0-weight must be >= 0, got {args.l0_weight}"),
        (args.temperature > 0, f"--temperature must be > 0, got {args.temperature}"),
        (args.threshold_lr is None or args.threshold_lr > 0, f"--threshold-lr must be > 0, got {args.threshold_lr}"),
        (args.pretrained is None or os.path.isfile(args.pretrained), f"--pretrained {args.pretrained}: file not found"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return args


# --- distributed ------------------------------------------------------------------------------------------------

def init_distributed(args) -> tuple[int, int, torch.device]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = args.device.startswith("cuda")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, torch.device(args.device)


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# --- building blocks --------------------------------------------------------------------------------------------

def model_kwargs(args, num_classes: int, in_channels: int) -> dict:
    """The keyword arguments of models.create_model; stored in checkpoints so tools can rebuild the model."""
    if args.model in SNN_MODELS:
        stem = args.stem or ("imagenet" if args.data == "imagenet" else "cifar")
        return dict(T=args.T, neuron_type=args.neuron, cnf=args.cnf, stem=stem, in_channels=in_channels,
                    num_classes=num_classes, width_multiplier=args.width_multiplier)
    if args.model == "mobilenet_v1":
        return dict(num_classes=num_classes, width_multiplier=args.width_multiplier, in_channels=in_channels)
    return dict(num_classes=num_classes)


def build_pruner(args, model, optimizer, lr_scheduler, steps_per_epoch: int):
    if args.method == "dense":
        return None
    ignored = args.ignored_layers if args.ignored_layers is not None else (["fc"] if args.model in SNN_MODELS else [])
    total = args.epochs * steps_per_epoch
    start = args.pruning_start_epoch * steps_per_epoch
    if args.method == "ltp":
        return snn_lats.LearnedThresholdPruner(model, l0_weight=args.l0_weight, temperature=args.temperature,
                                               ignored_layers=ignored)
    if args.method == "gmp":
        return snn_lats.MagnitudePruner(model, pruning_ratio=args.pruning_ratio, total_steps=total, start_step=start,
                                        frequency=max(1, steps_per_epoch // 4), ignored_layers=ignored)
    kwargs = dict(ignored_layers=ignored, optimizer=optimizer, start_step=start)
    if args.freeze_epoch is not None:
        kwargs["freeze_at"] = args.freeze_epoch * steps_per_epoch
    d = args.final_threshold
    if args.method in ("s-lats", "lats", "pgh", "early"):
        schedule = "pgh" if args.method == "early" else args.method
        extra = {"steps_per_epoch": steps_per_epoch} if schedule == "lats" else {}
        if schedule == "pgh":
            extra["beta"] = args.beta
        return snn_lats.SoftThresholdPruner(model, d, schedule, total, **kwargs, **extra)
    if args.method == "lr":
        if args.l1_coefficient is not None:
            return snn_lats.SoftThresholdPruner(model, schedule="lr", l1_coefficient=args.l1_coefficient, **kwargs)
        interval = steps_per_epoch if args.sched_interval == "epoch" else None
        return snn_lats.SoftThresholdPruner(model, d, "lr", total, lr_scheduler=lr_scheduler,
                                            steps_per_epoch=interval, **kwargs)
    return snn_lats.SoftThresholdPruner(model, d, "constant", compensate=False, **kwargs)  # pai


def build_lr_scheduler(args, optimizer, steps_per_epoch: int):
    unit = steps_per_epoch if args.sched_interval == "step" else 1
    warmup, total = args.warmup_epochs * unit, args.epochs * unit
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup == 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "gauss": gauss},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def loader_for_epoch(dataset, args, epoch: int, train: bool, world: int) -> DataLoader:
    if world > 1:
        sampler = DistributedSampler(dataset, shuffle=train, seed=args.seed, drop_last=train)
        sampler.set_epoch(epoch)
    elif train:  # a generator seeded per epoch: the order of epoch e is the same after a resume
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=torch.cuda.is_available(), drop_last=train)


def progress(iterable, rank: int, desc: str):
    if rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, leave=False)
    return iterable


# --- one epoch --------------------------------------------------------------------------------------------------

def train_one_epoch(model, loader, optimizer, lr_scheduler, scaler, pruner, args, epoch, device, rank, state):
    model.train()
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
    total_loss = seen = 0.0
    start = time.time()
    for i, (x, y) in enumerate(progress(loader, rank, f"epoch {epoch + 1}")):
        if args.max_steps_per_epoch is not None and i >= args.max_steps_per_epoch:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=args.label_smoothing)
        if hasattr(pruner, "regularization"):  # LTP's L0 term, in float32
            loss = loss + pruner.regularization()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # the pruner steps from the optimizer's post-hook: only on real steps
        scaler.update()
        functional.reset_net(model)
        if args.sched_interval == "step":
            lr_scheduler.step()
        state["step"] += 1
        total_loss += loss.item() * len(y)
        seen += len(y)
    if args.sched_interval == "epoch":
        lr_scheduler.step()
    total_loss, seen = all_reduce_sum([total_loss, seen], device)
    return total_loss / seen, seen / (time.time() - start)


@torch.no_grad()
def evaluate(model, loader, device, rank):
    model.eval()
    loss = top1 = top5 = n = 0.0
    with recording_firing(model) as neurons:
        for x, y in progress(loader, rank, "eval"):
            x, y = x.to(device), y.to(device)
            out = model(x)
            functional.reset_net(model)
            new_batch(neurons)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            top1 += (top[:, 0] == y).sum().item()
            top5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    spikes = sum(c.spikes for c in neurons.values())
    updates = sum(c.elements for c in neurons.values())
    loss, top1, top5, n, spikes, updates = all_reduce_sum([loss, top1, top5, n, spikes, updates], device)
    return {"loss": loss / n, "acc1": 100 * top1 / n, "acc5": 100 * top5 / n,
            "firing_rate": spikes / updates if updates else float("nan")}


# --- main -------------------------------------------------------------------------------------------------------

CSV_FIELDS = ["epoch", "train_loss", "val_loss", "acc1", "acc5", "sparsity", "threshold", "l1_coefficient",
              "band_fraction", "firing_rate", "lr", "img_per_s", "seconds"]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rank, world, device = init_distributed(args)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    out = Path(args.output_dir)

    train_set, val_set, num_classes, in_channels = build_datasets(args.data, args.data_path)  # fails before training
    if args.train_subset is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(args.train_subset, len(train_set))))
    if len(train_set) < args.batch_size * world:
        raise ValueError(f"--batch-size {args.batch_size} x {world} processes exceeds the {len(train_set)} "
                         "training samples")
    kwargs = model_kwargs(args, num_classes, in_channels)
    model = models.create_model(args.model, **kwargs)
    if args.pretrained:  # into the plain model, before any pruner: LTP's threshold unit and LATS's θ follow it
        load_plain_weights(model, model_state_from_checkpoint(load_checkpoint(args.pretrained)))
        if rank == 0:
            print(f"initialized from {args.pretrained}")
    if args.fused_neurons:
        report = snn_lats.snn.use_fused_neurons(model)
        if report.unsupported and rank == 0:
            print(report)
    steps_per_epoch = len(train_set) // (args.batch_size * world)
    if args.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    pruner = None
    if args.method == "ltp":  # its thresholds join the optimizer as a group (own LR, no decay) before the scheduler
        pruner = build_pruner(args, model, optimizer, None, steps_per_epoch)
        optimizer.add_param_group(pruner.param_groups(args.threshold_lr or args.lr)[1])
    lr_scheduler = build_lr_scheduler(args, optimizer, steps_per_epoch)
    if pruner is None:
        pruner = build_pruner(args, model, optimizer, lr_scheduler, steps_per_epoch)  # before DDP and compile
    if pruner is not None:
        optimizer.register_step_post_hook(lambda *_: pruner.step())
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and world > 1:  # keeps SpikingJelly's step modes, which torch's own conversion drops
        model = snn_lats.snn.convert_sync_batchnorm(model)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    state = {"epoch": 0, "step": 0, "best_acc1": -1.0}
    ckpt_path = out / "checkpoint_last.pth" if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if ckpt_path is not None and (args.resume != "auto" or ckpt_path.exists()):
        ckpt = load_checkpoint(ckpt_path)  # a corrupt file raises here: never start over silently
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if pruner is not None:
            pruner.load_state_dict(ckpt["pruner"])
        set_rng_state(ckpt["rng"])
        state = {"epoch": ckpt["epoch"] + 1, "step": ckpt["step"], "best_acc1": ckpt["best_acc1"]}
        if rank == 0:
            print(f"resumed from {ckpt_path} at epoch {state['epoch']}")

    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(vars(args), sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(out / "tensorboard")
        if state["epoch"] == 0 or not (out / "log.csv").exists():  # a fresh run starts a fresh log
            with open(out / "log.csv", "w", newline="") as f:
                csv.writer(f).writerow(CSV_FIELDS)
        else:  # rows are written before the checkpoint: drop those of epochs the checkpoint does not hold
            with open(out / "log.csv", newline="") as f:
                rows = [r for r in csv.reader(f)]
            kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= state["epoch"]]
            with open(out / "log.csv.tmp", "w", newline="") as f:
                csv.writer(f).writerows(kept)
            os.replace(out / "log.csv.tmp", out / "log.csv")
        print(f"{args.model} on {args.data}: {len(train_set)} train / {len(val_set)} val, {world} process(es), "
              f"global batch {args.batch_size * world}, {steps_per_epoch} steps/epoch, method {args.method}")

    trail = Trail(out / "trail") if rank == 0 and (args.trail if args.trail is not None else args.method == "ltp") \
        else None
    row, lambdas = {}, []
    for epoch in range(state["epoch"], args.epochs):
        start = time.time()
        lr = optimizer.param_groups[0]["lr"]
        train_loader = loader_for_epoch(train_set, args, epoch, True, world)
        train_loss, img_s = train_one_epoch(train_model, train_loader, optimizer, lr_scheduler, scaler, pruner,
                                            args, epoch, device, rank, state)
        metrics = evaluate(model, loader_for_epoch(val_set, args, epoch, False, world), device, rank)
        sparsity = pruner.sparsity_report().sparsity if pruner is not None else 0.0
        band = pruner.report().band_fraction if hasattr(pruner, "report") else None
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": metrics["loss"], "acc1": metrics["acc1"],
               "acc5": metrics["acc5"], "sparsity": sparsity, "threshold": getattr(pruner, "threshold", 0.0),
               "l1_coefficient": getattr(pruner, "l1_coefficient", None), "band_fraction": band,
               "firing_rate": metrics["firing_rate"],
               "lr": lr, "img_per_s": img_s, "seconds": time.time() - start}
        lambdas.append(row["l1_coefficient"])
        best = metrics["acc1"] > state["best_acc1"]
        state["best_acc1"] = max(state["best_acc1"], metrics["acc1"])
        if rank == 0:
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "pruner": pruner.state_dict() if pruner is not None else None, "epoch": epoch,
                          "step": state["step"], "best_acc1": state["best_acc1"], "rng": rng_state(),
                          "args": vars(args), "model_name": args.model, "model_kwargs": kwargs}
            with open(out / "log.csv", "a", newline="") as f:
                csv.writer(f).writerow([row[k] for k in CSV_FIELDS])
            if trail is not None:  # squashed weights: what evaluation just measured, loadable by a plain model
                trail.add(export_dense(model), epoch=epoch + 1, acc1=metrics["acc1"], sparsity=sparsity,
                          model_name=args.model, model_kwargs=kwargs)
            save_checkpoint(checkpoint, out / "checkpoint_last.pth")
            if best:
                save_checkpoint(checkpoint, out / "checkpoint_best.pth")
            for key, value in row.items():
                if key != "epoch" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                    writer.add_scalar(key, value, epoch + 1)
            lam = "-" if row["l1_coefficient"] is None else f"{row['l1_coefficient']:.3e}"
            method = f"in-band {band:.4f}" if band is not None else f"d {row['threshold']:.5f}  lambda {lam}"
            print(f"epoch {epoch + 1}/{args.epochs}  loss {train_loss:.4f}  Acc@1 {metrics['acc1']:.2f}  "
                  f"Acc@5 {metrics['acc5']:.2f}  sparsity {sparsity:.4f}  {method}  "
                  f"fire {metrics['firing_rate']:.4f}  lr {lr:.4g}  {img_s:.0f} img/s  {row['seconds']:.0f}s",
                  flush=True)
            if band is not None and band < 0.01:
                print("warning: under 1% of the weights are in the sigmoid's transition band, so the thresholds "
                      "barely move (LTP's premature termination): raise --temperature", flush=True)
    if args.dump_rank_state:
        torch.save({"model": model.state_dict(), "threshold": getattr(pruner, "threshold", 0.0)},
                   out / f"rank{rank}_state.pth")
    if rank == 0:
        writer.close()
        summary = {**row, "best_acc1": state["best_acc1"], "world_size": world, "config": vars(args)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if row:
            lams = sorted(v for v in lambdas if v is not None)
            lam = f"{lams[len(lams) // 2]:.3e} (median over epochs)" if lams else "-"
            method = "" if row["band_fraction"] is not None else f"  d {row['threshold']:.5f}  lambda {lam}"
            print(f"\nfinal: Acc@1 {row['acc1']:.2f} (best {state['best_acc1']:.2f})  weight sparsity "
                  f"{row['sparsity']:.4f}{method}  | {out / 'summary.json'}")
            print(f"spike-level sparsity: python -m experiments.benchmark_sparsity --checkpoint "
                  f"{out / 'checkpoint_best.pth'} --data {args.data}")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return row


if __name__ == "__main__":
    main()
