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

``--method ocs`` (OCSPruner) removes channels in the middle of the run: once the stability indicator Ψ reaches
its threshold (or at the cap epoch), the epoch's training ends, the channels go, and training continues on the
thin model with a fresh optimizer on the same LR schedule (DDP re-wrapped). Checkpoints then hold the channel
structure ("structure"), so resuming, --pretrained and the benchmark tools rebuild the thin model.
``--method ocs-lats`` adds LATS soft-threshold pruning of the remaining weights after that, with constant λ.
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
from snn_lats.sparsity import weight_sizes
from snn_lats.structured import OCSPruner, count_macs, structure_spec
from snn_lats.trail import Trail

METHODS = ("dense", "s-lats", "lats", "pgh", "lr", "early", "pai", "gmp", "ltp", "ocs", "ocs-lats")
STRUCTURED = ("ocs", "ocs-lats")
SOFT_THRESHOLD = ("s-lats", "lats", "pgh", "lr", "early", "pai", "ocs-lats")
OCS_REGULARIZERS = ("shrink", "group_lasso")
# train.py option -> the builder keyword argument it sets, for the options a model declares
# (models.model_info)
MODEL_OPTIONS = {"T": "T", "neuron": "neuron_type", "cnf": "cnf", "stem": "stem",
                 "width_multiplier": "width_multiplier", "image_size": "img_size"}
# the image size of each data set, for models that are built for one (the transformers' img_size)
IMAGE_SIZES = {"digits": (8, 8), "fashion-mnist": (28, 28), "cifar10": (32, 32), "cifar100": (32, 32),
               "imagenet": (224, 224)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None, help="YAML file of defaults (keys are the long option names)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", help=f"one of {DATASETS}")
    g.add_argument("--data-path", default=None, help="dataset root (ImageFolder root with train/ and val/ for imagenet)")
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--train-subset", type=int, default=None, help="train on the first N samples (CPU-sized runs)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="sew_resnet18", help=f"one of {models.list_models()}; "
                   "models.model_info(NAME).options says which of the next options it takes")
    g.add_argument("--T", type=int, default=4, help="time steps (SNNs)")
    g.add_argument("--neuron", default="if", help="if | lif | plif (SNN ResNets and VGGs)")
    g.add_argument("--cnf", default="ADD", help="ADD | AND | IAND (SEW ResNets)")
    g.add_argument("--stem", default=None, help="imagenet | cifar (ResNets; default: imagenet for ImageNet, else cifar)")
    g.add_argument("--width-multiplier", type=float, default=1.0)
    g.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help='architecture options as a JSON object, e.g. \'{"embed_dims": 64, "depths": 2}\' '
                        "(models.model_info(NAME).arch_kwargs lists them)")
    g.add_argument("--fused-neurons", action="store_true", help="swap in snn_lats's fused LIF/IF nodes")
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="s-lats", help=f"one of {METHODS}")
    g.add_argument("--final-threshold", type=float, default=None, help="D for soft-threshold methods")
    g.add_argument("--l1-coefficient", type=float, default=None, help="λ for --method lr (else solved from D)")
    g.add_argument("--beta", type=float, default=0.1, help="PGH base for pgh / early")
    g.add_argument("--freeze-epoch", type=int, default=None, help="fix the masks after this epoch (early pruning)")
    g.add_argument("--pruning-start-epoch", type=int, default=0)
    g.add_argument("--pruning-ratio", type=float, default=0.9, help="final sparsity for gmp")
    g.add_argument("--pruning-end-epoch", type=int, default=None,
                   help="gmp: the ramp reaches --pruning-ratio after this many epochs (default: --epochs), "
                        "leaving the rest to recover, as in Zhu & Gupta's recipe")
    g.add_argument("--ignored-layers", nargs="*", default=None, help="default: the classifier of SNNs")
    g.add_argument("--layer-scale", nargs="*", default=None, metavar="NAME=SCALE",
                   help="soft-threshold methods: layer NAME's threshold is SCALE x d (others 1), e.g. conv1=4")
    g.add_argument("--l0-weight", type=float, default=1.0, help="λ of LTP's L0 term (ltp; larger: sparser)")
    g.add_argument("--temperature", type=float, default=0.5, help="T0 of LTP's sigmoid, T_l = T0·Var(|w|) (ltp)")
    g.add_argument("--threshold-lr", type=float, default=None, help="LR of LTP's thresholds (default: --lr)")
    g.add_argument("--pretrained", default=None, help="start from this checkpoint's weights (dense or pruned)")
    g.add_argument("--trail", action=argparse.BooleanOptionalAction, default=None,
                   help="save every epoch's hard-masked model to OUTPUT_DIR/trail (default: on for ltp)")
    g = p.add_argument_group("structured pruning (ocs: OCSPruner; ocs-lats: OCS, then LATS on the remaining weights)")
    g.add_argument("--target-flops-reduction", type=float, default=0.5,
                   help="fraction of the dense conv/linear MACs to remove, in (0, 1)")
    g.add_argument("--ocs-monitor-start-epoch", type=int, default=2, help="first epoch whose channels are scored")
    g.add_argument("--ocs-reg-start-epoch", type=int, default=None,
                   help="first regularised epoch (default: automatic, once the stability Ψ plateaus)")
    g.add_argument("--ocs-reg-init", type=float, default=1e-4, help="initial strength λ of the channel shrink")
    g.add_argument("--ocs-reg-delta", type=float, default=1e-4, help="λ grows by this ...")
    g.add_argument("--ocs-reg-interval", type=int, default=2, help="... every this many epochs")
    g.add_argument("--ocs-stability-threshold", type=float, default=0.999, help="prune once Ψ reaches this")
    g.add_argument("--ocs-prune-epoch-cap", type=int, default=None,
                   help="prune after this epoch (0-based) at the latest (default: 40%% of --epochs)")
    g.add_argument("--ocs-layer-prune-limit", type=float, default=0.75, help="at most this fraction of a group goes")
    g.add_argument("--ocs-regularizer", default="shrink", help=f"one of {OCS_REGULARIZERS}")
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
    if args.model in models.list_models():
        check_model_options(parser, args)
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
        (args.method in ("dense", "gmp", "lr", "ltp", "ocs") or args.final_threshold is not None,
         f"--method {args.method} needs --final-threshold"),
        (0 <= args.pruning_start_epoch < args.epochs, "--pruning-start-epoch must be in [0, --epochs)"),
        (args.pruning_end_epoch is None or args.pruning_start_epoch < args.pruning_end_epoch <= args.epochs,
         f"--pruning-end-epoch must be in (--pruning-start-epoch, --epochs], got {args.pruning_end_epoch}"),
        (args.l0_weight >= 0, f"--l0-weight must be >= 0, got {args.l0_weight}"),
        (args.temperature > 0, f"--temperature must be > 0, got {args.temperature}"),
        (args.threshold_lr is None or args.threshold_lr > 0, f"--threshold-lr must be > 0, got {args.threshold_lr}"),
        (args.pretrained is None or os.path.isfile(args.pretrained), f"--pretrained {args.pretrained}: file not found"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.layer_scale is not None:
        args.layer_scale = parse_layer_scale(parser, args.layer_scale)
        if args.method not in SOFT_THRESHOLD:
            parser.error(f"--layer-scale applies to the soft-threshold methods {SOFT_THRESHOLD}, not {args.method!r}")
    if args.method in STRUCTURED:
        check_structured_args(parser, args)
    return args


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An option the model does not take must keep its default (never ignored silently); --model-kwargs
    becomes a dict of the model's architecture options."""
    info = models.model_info(args.model)
    defaults = get_args_parser()  # without the config's defaults
    for option in MODEL_OPTIONS:
        if option != "image_size" and option not in info.options \
                and getattr(args, option) != defaults.get_default(option):
            takes = [o for o in info.options if o != "image_size"] or "none of --T/--neuron/--cnf/--stem/..."
            parser.error(f"--{option.replace('_', '-')} does not apply to --model {args.model} (it takes {takes})")
    kwargs = args.model_kwargs
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as e:
            parser.error(f"--model-kwargs must be a JSON object, e.g. '{{\"depths\": 2}}': {e}")
    if kwargs is not None and not isinstance(kwargs, dict):
        parser.error(f"--model-kwargs must be a JSON object (a mapping), got {args.model_kwargs!r}")
    for key in kwargs or {}:
        flag = next((o for o, k in MODEL_OPTIONS.items() if k == key and o in info.options), None)
        if flag is not None:
            where = "the data set" if flag == "image_size" else f"--{flag.replace('_', '-')}"
            parser.error(f"--model-kwargs {key!r}: set by {where}, not by --model-kwargs")
        if key not in info.arch_kwargs:
            parser.error(f"--model-kwargs {key!r} is not an architecture option of {args.model}; it takes "
                         f"{list(info.arch_kwargs)}")
    args.model_kwargs = kwargs


def parse_layer_scale(parser: argparse.ArgumentParser, entries: list[str] | str | dict) -> dict[str, float]:
    if isinstance(entries, dict):  # a config file's mapping (OUTPUT_DIR/config.yaml writes it so)
        entries = [f"{k}={v}" for k, v in entries.items()]
    entries = [entries] if isinstance(entries, str) else entries
    entries = [e for item in entries for e in str(item).split()]  # a config or a sweep may give one string
    scales = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        try:
            scales[name] = float(value)
        except ValueError:
            scales[name] = float("nan")
        if not name or not scales[name] >= 0:  # also rejects nan
            parser.error(f"--layer-scale entries are NAME=SCALE with SCALE a number >= 0, got {entry!r}")
    return scales


def check_structured_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate the OCS flags, and resolve the default cap epoch (recorded in config.yaml)."""
    start = args.ocs_monitor_start_epoch
    checks = [
        (0 < args.target_flops_reduction < 1,
         f"--target-flops-reduction must be in the open interval (0, 1), got {args.target_flops_reduction}"),
        (0 <= start < args.epochs, f"--ocs-monitor-start-epoch must be in [0, --epochs), got {start}"),
        (args.ocs_reg_start_epoch is None or args.ocs_reg_start_epoch >= 0,
         f"--ocs-reg-start-epoch must be >= 0, got {args.ocs_reg_start_epoch}"),
        (args.ocs_reg_init >= 0 and args.ocs_reg_delta >= 0, "--ocs-reg-init and --ocs-reg-delta must be >= 0"),
        (args.ocs_reg_interval >= 1, f"--ocs-reg-interval must be >= 1, got {args.ocs_reg_interval}"),
        (0 < args.ocs_stability_threshold <= 1,
         f"--ocs-stability-threshold must be in (0, 1], got {args.ocs_stability_threshold}"),
        (0 < args.ocs_layer_prune_limit < 1,
         f"--ocs-layer-prune-limit must be in (0, 1), got {args.ocs_layer_prune_limit}"),
        (args.ocs_regularizer in OCS_REGULARIZERS,
         f"--ocs-regularizer must be one of {OCS_REGULARIZERS}, got {args.ocs_regularizer!r}"),
        (args.ocs_prune_epoch_cap is None or start <= args.ocs_prune_epoch_cap < args.epochs,
         f"--ocs-prune-epoch-cap must be in [--ocs-monitor-start-epoch, --epochs) = [{start}, {args.epochs}), "
         f"got {args.ocs_prune_epoch_cap}"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.ocs_prune_epoch_cap is None:  # the reference scripts cap at 38% (ImageNet 50/130) and 37% (CIFAR 110/300)
        args.ocs_prune_epoch_cap = min(args.epochs - 1, max(start, round(0.4 * args.epochs)))


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

def model_kwargs(args, num_classes: int, in_channels: int, image_size: tuple[int, int] | None = None) -> dict:
    """The keyword arguments of models.create_model, from the options the model declares (models.model_info)
    and --model-kwargs; stored in checkpoints so tools can rebuild the model. ``image_size`` (H, W) defaults to
    the data set's."""
    info = models.model_info(args.model)
    values = {"T": args.T, "neuron": args.neuron, "cnf": args.cnf, "width_multiplier": args.width_multiplier,
              "stem": args.stem or ("imagenet" if args.data == "imagenet" else "cifar"),
              "image_size": list(image_size or IMAGE_SIZES[args.data])}
    kwargs = dict(num_classes=num_classes, in_channels=in_channels)
    kwargs.update({MODEL_OPTIONS[o]: values[o] for o in info.options})
    kwargs.update(args.model_kwargs or {})
    return kwargs


def ignored_layers(args) -> list[str]:
    """--ignored-layers; by default the classifier of SNNs (models.model_info(NAME).classifier), none for
    ANNs."""
    if args.ignored_layers is not None:
        return args.ignored_layers
    info = models.model_info(args.model)
    return [info.classifier] if info.snn else []


def build_optimizer(args, model) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def build_pruner(args, model, optimizer, lr_scheduler, steps_per_epoch: int):
    """The unstructured pruner of ``args.method`` (None for dense; for ocs-lats it comes after the channels go)."""
    if args.method in ("dense", *STRUCTURED):
        return None
    ignored = ignored_layers(args)
    total = args.epochs * steps_per_epoch
    start = args.pruning_start_epoch * steps_per_epoch
    if args.method == "ltp":
        return snn_lats.LearnedThresholdPruner(model, l0_weight=args.l0_weight, temperature=args.temperature,
                                               ignored_layers=ignored)
    if args.method == "gmp":
        ramp_end = (args.pruning_end_epoch or args.epochs) * steps_per_epoch
        return snn_lats.MagnitudePruner(model, pruning_ratio=args.pruning_ratio, total_steps=ramp_end, start_step=start,
                                        frequency=max(1, steps_per_epoch // 4), ignored_layers=ignored)
    kwargs = dict(ignored_layers=ignored, optimizer=optimizer, start_step=start, layer_scale=args.layer_scale)
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


def schedule_lr_mismatch(args) -> str | None:
    """Why the threshold schedule's λ = Δd/lr will not be constant under this LR schedule, or None."""
    if args.method not in ("s-lats", "lats"):
        return None
    if args.warmup_epochs > 0:
        return (f"{args.method}'s closed form assumes a cosine LR from step 0: the warm-up inflates its λ. "
                "--method lr keeps λ constant under any LR schedule")
    designed = "step" if args.method == "s-lats" else "epoch"
    if args.sched_interval != designed:
        return (f"{args.method}'s closed form assumes a per-{designed} cosine LR, and --sched-interval is "
                f"{args.sched_interval}: its λ will not be constant (docs/results.md measured LATS's grow 2e4-fold "
                f"under a per-step LR). Use --sched-interval {designed}, or --method lr")
    return None


def build_ocs(args, model, optimizer, example) -> OCSPruner:
    """OCSPruner with the --ocs-* settings. ``example`` is one sample; for SNNs its MACs are summed over T, so the
    FLOPs-cost softmax is scaled by T to weigh groups as the reference does for one ANN forward."""
    time_steps = args.T if models.model_info(args.model).snn else 1
    return OCSPruner(model, example, args.target_flops_reduction, ignored_layers=ignored_layers(args),
                     layer_prune_limit=args.ocs_layer_prune_limit, monitor_start_epoch=args.ocs_monitor_start_epoch,
                     reg_start_epoch=args.ocs_reg_start_epoch, reg_init=args.ocs_reg_init,
                     reg_delta=args.ocs_reg_delta, reg_interval=args.ocs_reg_interval,
                     stability_threshold=args.ocs_stability_threshold, prune_epoch_cap=args.ocs_prune_epoch_cap,
                     regularizer=args.ocs_regularizer, optimizer=optimizer, cost_temperature=1e6 * time_steps)


def build_lats_after_ocs(args, model, optimizer, lr_scheduler, steps_per_epoch: int, remaining_steps: int,
                         l1_coefficient: float | None = None):
    """ocs-lats: soft-threshold pruning of the thin model's weights with constant λ (the ``lr`` schedule: any LR
    schedule, and it starts mid-run), λ solved so that d reaches --final-threshold at the run's last step; on
    resume λ is given and the saved state restores d."""
    kwargs = dict(ignored_layers=ignored_layers(args), optimizer=optimizer, layer_scale=args.layer_scale)
    if l1_coefficient is not None:
        return snn_lats.SoftThresholdPruner(model, schedule="lr", l1_coefficient=l1_coefficient, **kwargs)
    interval = steps_per_epoch if args.sched_interval == "epoch" else None  # pruning ends an epoch: phases align
    return snn_lats.SoftThresholdPruner(model, args.final_threshold, "lr", remaining_steps, lr_scheduler=lr_scheduler,
                                        steps_per_epoch=interval, **kwargs)


def rebuild_optimization(args, model, optimizer, lr_scheduler, steps_per_epoch: int):
    """A fresh optimizer over the (new) parameters of a channel-pruned model, and an LR scheduler that continues
    exactly where ``lr_scheduler`` was: the run keeps one LR schedule across the pruning (OCS, reference B.2)."""
    new_optimizer = build_optimizer(args, model)
    new_scheduler = build_lr_scheduler(args, new_optimizer, steps_per_epoch)
    new_scheduler.load_state_dict(lr_scheduler.state_dict())
    for new, old in zip(new_optimizer.param_groups, optimizer.param_groups, strict=True):
        new["lr"], new["initial_lr"] = old["lr"], old["initial_lr"]
    return new_optimizer, new_scheduler


def wrap_for_training(args, model, world: int, device):
    """DDP and torch.compile around the bare model (again after OCS replaces its parameters)."""
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)
    return train_model


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

def train_one_epoch(model, loader, optimizer, lr_scheduler, scaler, pruner, args, epoch, device, rank, state,
                    ocs=None):
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
        if ocs is not None and ocs.regularizer == "group_lasso":  # the penalty's gradient, added to unscaled grads
            scaler.unscale_(optimizer)
            ocs.regularize()
        scaler.step(optimizer)  # the pruners step from the optimizer's post-hook: only on real steps
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
              "band_fraction", "stability", "reg_strength", "candidate_macs", "macs", "flops_reduction",
              "firing_rate", "lr", "img_per_s", "seconds"]


def load_start_checkpoints(args, out: Path):
    """The checkpoint to resume from (None for a fresh run) and the --pretrained one, loaded before the model is
    built: a channel-pruned run's model must be built thin."""
    path = out / "checkpoint_last.pth" if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    resume = None
    if path is not None and (args.resume != "auto" or path.exists()):
        resume = load_checkpoint(path)  # a corrupt file raises here: never start over silently
        resume["path"] = str(path)
    pretrained = load_checkpoint(args.pretrained) if args.pretrained and resume is None else None
    return resume, pretrained


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
    resume, pretrained = load_start_checkpoints(args, out)
    source = resume if resume is not None else pretrained
    structure = source.get("structure") if isinstance(source, dict) else None  # channel widths of a pruned model
    kwargs = model_kwargs(args, num_classes, in_channels, tuple(val_set[0][0].shape[-2:]))
    model = models.create_model(args.model, structure=structure, **kwargs)
    if pretrained is not None:  # into the plain model, before any pruner: LTP's threshold unit and LATS's θ follow it
        load_plain_weights(model, model_state_from_checkpoint(pretrained))
        if rank == 0:
            print(f"initialized from {args.pretrained}" + (" (channel-pruned structure)" if structure else ""))
    if args.fused_neurons:
        report = snn_lats.snn.use_fused_neurons(model)
        if report.unsupported and rank == 0:
            print(report)
    steps_per_epoch = len(train_set) // (args.batch_size * world)
    if args.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    model.to(device)
    if args.sync_bn and world > 1:  # keeps SpikingJelly's step modes, which torch's own conversion drops
        model = snn_lats.snn.convert_sync_batchnorm(model)
    example = val_set[0][0].unsqueeze(0).to(device)  # one sample (no augmentation, no RNG): MAC counts, OCS tracing
    ignored = ignored_layers(args)
    dense_sizes = dense_macs = None  # set when channels are or will be removed: sparsity and MACs against dense
    if structure is not None or args.method in STRUCTURED:
        with torch.random.fork_rng(devices=[]):  # the reference model's init leaves the run's RNG streams alone
            dense = models.create_model(args.model, **kwargs).to(device)
        dense_sizes, dense_macs = weight_sizes(dense, ignored_layers=ignored), count_macs(dense, example)
        del dense
    if args.method in STRUCTURED and resume is not None and not resume.get("ocs"):
        raise ValueError(f"--resume {resume['path']}: the checkpoint holds no OCSPruner state, so it is not from a "
                         f"--method {args.method} run")

    optimizer = build_optimizer(args, model)
    pruner = ocs = None
    if args.method == "ltp":  # its thresholds join the optimizer as a group (own LR, no decay) before the scheduler
        pruner = build_pruner(args, model, optimizer, None, steps_per_epoch)
        optimizer.add_param_group(pruner.param_groups(args.threshold_lr or args.lr)[1])
    lr_scheduler = build_lr_scheduler(args, optimizer, steps_per_epoch)
    if args.method in STRUCTURED:  # on the plain model, before DDP and compile
        ocs = build_ocs(args, model, optimizer, example)
        if resume is not None and resume["ocs"]["pruned"]:  # resuming after the channels went
            ocs.load_state_dict(resume["ocs"])
            if args.method == "ocs-lats" and resume["pruner"] is not None:
                lam = resume["pruner"]["schedule"]["l1_coefficient"]
                pruner = build_lats_after_ocs(args, model, optimizer, None, steps_per_epoch, 0, l1_coefficient=lam)
    elif pruner is None:
        pruner = build_pruner(args, model, optimizer, lr_scheduler, steps_per_epoch)  # before DDP and compile
    if pruner is not None:
        optimizer.register_step_post_hook(lambda *_, p=pruner: p.step())
    if ocs is not None and not ocs.pruned:
        optimizer.register_step_post_hook(lambda *_, o=ocs: o.step())  # the channel shrink, from the current LR
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    train_model = wrap_for_training(args, model, world, device)

    state = {"epoch": 0, "step": 0, "best_acc1": -1.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        lr_scheduler.load_state_dict(resume["lr_scheduler"])
        scaler.load_state_dict(resume["scaler"])
        if pruner is not None:
            pruner.load_state_dict(resume["pruner"])
        if ocs is not None and not ocs.pruned:
            ocs.load_state_dict(resume["ocs"])
        set_rng_state(resume["rng"])
        state = {"epoch": resume["epoch"] + 1, "step": resume["step"], "best_acc1": resume["best_acc1"]}
        if rank == 0:
            print(f"resumed from {resume['path']} at epoch {state['epoch']}")
    macs = count_macs(model, example)

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
        if mismatch := schedule_lr_mismatch(args):
            print(f"note: {mismatch}")

    trail = Trail(out / "trail") if rank == 0 and (args.trail if args.trail is not None else args.method == "ltp") \
        else None
    row, lambdas = {}, []
    for epoch in range(state["epoch"], args.epochs):
        start = time.time()
        if ocs is not None:
            ocs.epoch_start(epoch)  # score, search, Ψ, λ (nothing once pruned)
        lr = optimizer.param_groups[0]["lr"]
        train_loader = loader_for_epoch(train_set, args, epoch, True, world)
        train_loss, img_s = train_one_epoch(train_model, train_loader, optimizer, lr_scheduler, scaler, pruner,
                                            args, epoch, device, rank, state, ocs)
        val_loader = loader_for_epoch(val_set, args, epoch, False, world)
        # this epoch's Ψ and λ (None once the channels are gone: nothing is searched or regularised any more)
        stability, reg_strength, candidate = ((ocs.stability, ocs.regularization_strength, ocs.candidate_flops)
                                              if ocs and not ocs.pruned else (None,) * 3)
        if ocs is not None and ocs.should_prune:  # this epoch's training is done: remove the channels now
            before = evaluate(model, val_loader, device, rank)
            ocs.prune()
            if args.channels_last:
                model.to(memory_format=torch.channels_last)
            optimizer, lr_scheduler = rebuild_optimization(args, model, optimizer, lr_scheduler, steps_per_epoch)
            remaining = (args.epochs - epoch - 1) * steps_per_epoch
            if args.method == "ocs-lats" and remaining > 0:
                pruner = build_lats_after_ocs(args, model, optimizer, lr_scheduler, steps_per_epoch, remaining)
                optimizer.register_step_post_hook(lambda *_, p=pruner: p.step())
            train_model = wrap_for_training(args, model, world, device)
            macs = count_macs(model, example)
            if rank == 0:
                params = sum(p.numel() for p in model.parameters())
                why = "cap epoch" if stability < args.ocs_stability_threshold else f"psi {stability:.4f}"
                print(f"pruned channels after epoch {epoch + 1} ({why}): MACs {dense_macs / 1e6:.2f}M -> "
                      f"{macs / 1e6:.2f}M (-{1 - macs / dense_macs:.2%}), {params:,} parameters; "
                      f"Acc@1 before {before['acc1']:.2f}", flush=True)
        metrics = evaluate(model, val_loader, device, rank)
        if dense_sizes is not None:  # removed channels count as pruned weights of the dense model
            sparsity = snn_lats.sparsity_report(model, ignored_layers=ignored, dense_sizes=dense_sizes).sparsity
        else:
            sparsity = pruner.sparsity_report().sparsity if pruner is not None else 0.0
        band = pruner.report().band_fraction if hasattr(pruner, "report") else None
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": metrics["loss"], "acc1": metrics["acc1"],
               "acc5": metrics["acc5"], "sparsity": sparsity, "threshold": getattr(pruner, "threshold", 0.0),
               "l1_coefficient": getattr(pruner, "l1_coefficient", None), "band_fraction": band,
               "stability": stability, "reg_strength": reg_strength,
               "candidate_macs": candidate, "macs": macs,
               "flops_reduction": 1 - macs / dense_macs if dense_macs else 0.0,
               "firing_rate": metrics["firing_rate"],
               "lr": lr, "img_per_s": img_s, "seconds": time.time() - start}
        lambdas.append(row["l1_coefficient"])
        best = metrics["acc1"] > state["best_acc1"]
        state["best_acc1"] = max(state["best_acc1"], metrics["acc1"])
        if rank == 0:
            spec = structure_spec(model) if structure is not None or (ocs is not None and ocs.pruned) else None
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "pruner": pruner.state_dict() if pruner is not None else None,
                          "ocs": ocs.state_dict() if ocs is not None else None, "structure": spec, "epoch": epoch,
                          "step": state["step"], "best_acc1": state["best_acc1"], "rng": rng_state(),
                          "args": vars(args), "model_name": args.model, "model_kwargs": kwargs}
            with open(out / "log.csv", "a", newline="") as f:
                csv.writer(f).writerow([row[k] for k in CSV_FIELDS])
            if trail is not None:  # squashed weights: what evaluation just measured, loadable by a plain model
                trail.add(export_dense(model), epoch=epoch + 1, acc1=metrics["acc1"], sparsity=sparsity,
                          model_name=args.model, model_kwargs=kwargs, structure=spec)
            save_checkpoint(checkpoint, out / "checkpoint_last.pth")
            if best:
                save_checkpoint(checkpoint, out / "checkpoint_best.pth")
            for key, value in row.items():
                if key != "epoch" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                    writer.add_scalar(key, value, epoch + 1)
            print(epoch_line(args, row, ocs), flush=True)
            if band is not None and band < 0.01:
                print("warning: under 1% of the weights are in the sigmoid's transition band, so the thresholds "
                      "barely move (LTP's premature termination): raise --temperature", flush=True)
    if args.dump_rank_state:
        torch.save({"model": model.state_dict(), "threshold": getattr(pruner, "threshold", 0.0),
                    "structure": structure_spec(model)}, out / f"rank{rank}_state.pth")
    if rank == 0 and not row and state["epoch"] >= args.epochs:  # resumed after the last epoch: its logged row
        with open(out / "log.csv", newline="") as f:
            logged = list(csv.DictReader(f))
        row = {k: (None if v in ("", "None") else float(v)) for k, v in logged[-1].items()} if logged else {}
    if rank == 0:
        writer.close()
        summary = {**row, "best_acc1": state["best_acc1"], "world_size": world, "dense_macs": dense_macs or macs,
                   "prune_epoch": None if ocs is None or ocs.prune_epoch is None else ocs.prune_epoch + 1,
                   "config": vars(args)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if row:
            lams = sorted(v for v in lambdas if v is not None)
            lam = f"{lams[len(lams) // 2]:.3e} (median over epochs)" if lams else "-"
            method = "" if row["band_fraction"] is not None or pruner is None else \
                f"  d {row['threshold']:.5f}  lambda {lam}"
            if ocs is not None:
                method += f"  MACs -{row['flops_reduction']:.2%}" + (
                    f" (pruned after epoch {summary['prune_epoch']})" if ocs.pruned else " (not pruned)")
            print(f"\nfinal: Acc@1 {row['acc1']:.2f} (best {state['best_acc1']:.2f})  weight sparsity "
                  f"{row['sparsity']:.4f}{method}  | {out / 'summary.json'}")
            print(f"spike-level sparsity: python -m experiments.benchmark_sparsity --checkpoint "
                  f"{out / 'checkpoint_best.pth'} --data {args.data}")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return row


def epoch_line(args, row: dict, ocs: OCSPruner | None) -> str:
    """One console line per epoch, with the method's own figures."""
    if row["band_fraction"] is not None:
        method = f"in-band {row['band_fraction']:.4f}"
    else:
        lam = "-" if row["l1_coefficient"] is None else f"{row['l1_coefficient']:.3e}"
        method = f"d {row['threshold']:.5f}  lambda {lam}"
    if ocs is not None:
        if row["candidate_macs"] is None:
            method = f"MACs {row['macs'] / 1e6:.2f}M (-{row['flops_reduction']:.2%})" + (
                f"  {method}" if args.method == "ocs-lats" else "")
        else:
            cut = 1 - row["candidate_macs"] / ocs.dense_flops
            method = (f"psi {row['stability']:.4f}  reg {row['reg_strength']:.2e}  candidate MACs "
                      f"{row['candidate_macs'] / 1e6:.2f}M (-{cut:.2%})")
    return (f"epoch {row['epoch']}/{args.epochs}  loss {row['train_loss']:.4f}  Acc@1 {row['acc1']:.2f}  "
            f"Acc@5 {row['acc5']:.2f}  sparsity {row['sparsity']:.4f}  {method}  fire {row['firing_rate']:.4f}  "
            f"lr {row['lr']:.4g}  {row['img_per_s']:.0f} img/s  {row['seconds']:.0f}s")


if __name__ == "__main__":
    main()
