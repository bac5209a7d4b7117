"""Train, and prune while training: any registry model (SEW ResNets, ResNet-50, MobileNet-V1, the
SpikingJelly zoo) or your own (``--model PACKAGE.MODULE:FACTORY --model-kwargs '{...}'``, SpikingJelly's
clock_driven API and tuple outputs included), on one CPU or many GPUs.

    python -m experiments.train -c experiments/configs/demo_digits.yaml                    # CPU, ~1 minute
    torchrun --nproc_per_node 8 -m experiments.train -c experiments/configs/sew_resnet18_imagenet_lats.yaml \\
        --data-path /data/imagenet --output-dir runs/sew18_lats
    python -m experiments.train ... --resume auto                                           # after a crash

Options come from argparse; ``-c config.yaml`` supplies defaults (an unknown key is an error) and command-line
flags override them. The resolved config is written to OUTPUT_DIR/config.yaml. ``--batch-size`` is per
process: the global batch is batch-size x world size, and ``--lr`` is taken as given (scale it yourself, e.g.
linearly with the global batch: the configs state the batch their LR is for).

Under torchrun every rank trains on its DistributedSampler shard; rank 0 alone writes checkpoints, logs and
summaries. Each epoch writes checkpoint_last.pth (and checkpoint_best.pth on a new best Acc@1) atomically; it
holds model, optimizer, LR scheduler, AMP scaler, pruner, epoch, step, RNG states and the config, as plain
dicts that load with torch.load(weights_only=True). ``--resume auto`` continues from checkpoint_last.pth bit
for bit on the CPU with fixed seeds. A corrupt checkpoint stops the run with a clear error; it never starts
over silently.

Each ``--method`` is an entry of experiments/methods.py, and its pruners are driven through the hooks of
snn_lats.Pruner. ``--method ocs`` (OCSPruner) removes channels in the middle of the run: once the stability
indicator Ψ reaches its threshold (or at the cap epoch), the epoch's training ends, the channels go, and
training continues on the thin model with a fresh optimizer on the same LR schedule (DDP re-wrapped).
Checkpoints then hold the channel structure ("structure"), so resuming, --pretrained and the benchmark tools
rebuild the thin model. ``--method ocs-lats`` adds LATS soft-threshold pruning of the remaining weights after
that, with constant λ.
"""
from __future__ import annotations

import errno
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import models
import snn_lats
from experiments import utils
from experiments.args import MODEL_OPTIONS, get_args_parser, parse_args  # noqa: F401 (the script's CLI)
from experiments.data import INPUT_SHAPES, build_datasets, data_flags
from experiments.methods import Method, RunContext, RunPruners, build_pruners, epoch_figures, get_method
from snn_lats import spiking
from snn_lats.checkpoint import (
    check_state_fits,
    export_dense,
    load_checkpoint,
    load_plain_weights,
    model_state_from_checkpoint,
    save_checkpoint,
)
from snn_lats.cli import factory
from snn_lats.io import WriteError
from snn_lats.metrics import new_batch, recording_firing
from snn_lats.outputs import select_output
from snn_lats.sparsity import weight_sizes
from snn_lats.structured import count_macs, structure_spec
from snn_lats.structured.flops import layer_geometry

# the image size of each data set, for models that are built for one (the transformers' image_size)
IMAGE_SIZES = {name: shape[1:] for name, shape in INPUT_SHAPES.items()}


def main(argv: list[str] | None = None) -> dict:
    """Train as the command line says; returns the last epoch's log row. Errors are raised (``cli`` turns the
    user's into one line)."""
    args = parse_args(argv)
    return train(prepare(args))


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.train``: what the user can fix is one line on stderr and exit code 2, never a
    traceback: a configuration the pipeline refuses, an unreadable or unfit checkpoint or data set (nothing
    written yet), and an output folder that cannot be written, also mid-run (a full disk: the previous
    checkpoint is whole, so ``--resume auto`` continues once there is space)."""
    args = parse_args(argv)  # argparse's own errors: usage and one line, exit 2
    try:
        run = prepare(args)
    except (ValueError, OSError) as exc:
        return _fail(exc)
    try:
        train(run)
    except WriteError as exc:
        what = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make the folder writable"
        return _fail(f"{exc.strerror}; {what}, then continue with --resume auto (every file written so far "
                     "is whole)")
    return 0


def _fail(error) -> int:
    print(f"python -m experiments.train: error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2


def prepare(args) -> Run:
    """Everything a run needs, checked and built, before anything is written: data, checkpoints, model,
    optimizer, pruners (restored on a resume)."""
    method = get_method(args.method)
    rank, world, device = utils.init_distributed(args.device)
    utils.seed_everything(args.seed)
    out, main_process = Path(args.output_dir), rank == 0
    say = print if main_process else lambda *a, **k: None

    # fails before anything is built
    train_set, val_set, num_classes, in_channels = training_data(args, world)
    steps_per_epoch = min(len(train_set) // (args.batch_size * world),
                          args.max_steps_per_epoch or len(train_set))
    resume, pretrained = load_start_checkpoints(args, out)
    if resume is not None:
        check_same_run(args, resume)
    source = resume if resume is not None else pretrained
    # a channel-pruned model's widths
    structure = source.get("structure") if isinstance(source, dict) else None
    kwargs = model_kwargs(args, num_classes, in_channels, tuple(val_set[0][0].shape[-2:]))
    model = build_model(args, kwargs, structure, pretrained, world, device, say)
    example = val_set[0][0].unsqueeze(0).to(device)  # one sample (no augmentation, no RNG): MACs, OCS tracing
    if factory.is_factory(args.model):
        check_logits(args, model, example, num_classes)
    optimizer = build_optimizer(args, model)
    ctx = run_context(args, model, optimizer, steps_per_epoch, example, resume)
    if factory.is_factory(args.model) and args.ignored_layers is None and ctx.ignored_layers:
        say(f"--ignored-layers defaults to {ctx.ignored_layers}, the last layer {args.model} runs (the "
            "classifier, which SNN pruning leaves dense); pass --ignored-layers to choose")
    run = Run(args, method, out, rank, world, device, ctx, kwargs, thin=structure is not None)
    if structure is not None or method.structured:  # sparsity and MACs against the dense model
        run.dense_sizes, run.dense_macs = dense_reference(args, kwargs, ctx.ignored_layers, example, device)
    run.pruners = build_pruners(ctx)  # on the plain model, before DDP and compile
    optimizer.register_step_post_hook(lambda *_: run.pruners.step())  # only the steps GradScaler takes
    run.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    run.train_model = wrap_for_training(args, model, world, device)
    if resume is not None:
        run.state = restore(resume, model, optimizer, ctx.lr_scheduler, run.scaler, run.pruners)
        say(f"resumed from {resume['path']} at epoch {run.state['epoch']}")
    run.macs = count_macs(model, example)
    run.data = train_set, val_set
    say(f"{args.model} on {args.data}: {len(train_set)} train / {len(val_set)} val, {world} process(es), "
        f"global batch {args.batch_size * world}, {steps_per_epoch} steps/epoch, method {args.method}")
    if note := method.lr_note(args):
        say(f"note: {note}")
    return run


def train(run: Run) -> dict:
    """Write the run's files and train it to --epochs; the last epoch's log row."""
    args, model, main_process = run.args, run.ctx.model, run.rank == 0
    say = print if main_process else lambda *a, **k: None
    run.log = utils.RunLog(run.out, args, run.state["epoch"], main_process,
                           trail=args.trail if args.trail is not None else run.method.trail)
    with run.log:  # closed, and the output folder unlocked, however the run ends
        row = fit(run, *run.data, say)
        if args.dump_rank_state:
            threshold = run.pruners.log_dict().get("threshold", 0.0)
            state = {"model": model.state_dict(), "threshold": threshold, "structure": structure_spec(model)}
            torch.save(state, run.out / f"rank{run.rank}_state.pth")
        if main_process:
            row = finish(run, row)
    utils.finish_distributed()
    return row


def fit(run: Run, train_set, val_set, say) -> dict:
    """The epochs from the run's state to --epochs; the last epoch's log row."""
    args, ctx, model, main_process = run.args, run.ctx, run.ctx.model, run.rank == 0
    steps_per_epoch = ctx.steps_per_epoch
    row = {}
    for epoch in range(run.state["epoch"], args.epochs):
        start = time.time()
        run.pruners.epoch_start(epoch)  # OCS: score, search, Ψ, λ
        lr = ctx.optimizer.param_groups[0]["lr"]
        progress = utils.Progress(main_process, epoch, args.epochs, steps_per_epoch,
                                  (args.epochs - epoch - 1) * steps_per_epoch, args.log_every)
        train_loader = loader_for_epoch(train_set, args, epoch, True, run.world)
        train_loss, img_s = train_one_epoch(run, train_loader, progress)
        val_loader = loader_for_epoch(val_set, args, epoch, False, run.world)
        figures = run.pruners.log_dict()  # this epoch's, before a structure change ends the search
        if run.pruners.structure_change_due:  # this epoch's training is done: the channels go now
            remove_channels(run, epoch, val_loader, figures, say)
        else:
            run.pruners.epoch_end(epoch)
        metrics = evaluate(model, val_loader, run.device, args.output)
        report = weight_report(run.pruners, model, ctx.ignored_layers, run.dense_sizes)
        logged = {**figures, **run.pruners.log_dict()}  # a follow-up pruner's figures start at the removal
        row = epoch_row(epoch, train_loss, metrics, report.sparsity if report else 0.0, logged, run.macs,
                        run.dense_macs, lr, img_s, time.time() - start)
        run.lambdas.append(row["l1_coefficient"])
        best = metrics["acc1"] > run.state["best_acc1"]
        run.state["best_acc1"] = max(run.state["best_acc1"], metrics["acc1"])
        if main_process:
            save_epoch(run, epoch, row, metrics, report, best)
            print(epoch_line(args, row, epoch_figures(run.method, row, logged, run.dense_macs)), flush=True)
            if warning := run.method.warning(row):
                print(warning, flush=True)
    return row


@dataclass
class Run:
    """The state of one run that the steps of ``main`` share."""

    args: Any
    method: Method
    out: Path
    rank: int
    world: int
    device: torch.device
    ctx: RunContext  # model, optimizer, LR scheduler (replaced when channels go)
    kwargs: dict  # models.create_model's, stored in checkpoints
    thin: bool = False  # channels have been removed: checkpoints hold the structure
    pruners: RunPruners | None = None
    scaler: Any = None
    train_model: Any = None  # the model under DDP / compile
    log: utils.RunLog | None = None
    dense_sizes: dict | None = None
    dense_macs: int | None = None
    macs: int = 0
    state: dict = field(default_factory=lambda: {"epoch": 0, "step": 0, "best_acc1": -1.0})
    lambdas: list = field(default_factory=list)
    data: tuple = ()  # (train set, validation set)


def remove_channels(run: Run, epoch: int, val_loader, figures: dict, say) -> None:
    """The pruners' epoch end removes channels: a new optimizer on the same LR schedule, the method's
    follow-up pruner, DDP around the thin model; prints the MACs and the accuracy just before."""
    model, args = run.ctx.model, run.args
    before = evaluate(model, val_loader, run.device, args.output)["acc1"]
    run.pruners.epoch_end(epoch)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    ctx = run.ctx
    ctx.optimizer, ctx._lr_scheduler = rebuild_optimization(args, model, ctx.optimizer, ctx.lr_scheduler,
                                                            ctx.steps_per_epoch)
    ctx.optimizer.register_step_post_hook(lambda *_: run.pruners.step())
    if run.method.after_removal is not None:
        run.method.after_removal(ctx, run.pruners, (args.epochs - epoch - 1) * ctx.steps_per_epoch)
    run.train_model = wrap_for_training(args, model, run.world, run.device)
    run.macs, run.thin = count_macs(model, ctx.example), True
    params = sum(p.numel() for p in model.parameters())
    stability = figures["stability"]
    why = "cap epoch" if stability < args.ocs_stability_threshold else f"psi {stability:.4f}"
    say(f"pruned channels after epoch {epoch + 1} ({why}): MACs {run.dense_macs / 1e6:.2f}M -> "
        f"{run.macs / 1e6:.2f}M (-{1 - run.macs / run.dense_macs:.2%}), {params:,} parameters; Acc@1 before "
        f"{before:.2f}", flush=True)


def save_epoch(run: Run, epoch: int, row: dict, metrics: dict, report, best: bool) -> None:
    """Rank 0, every epoch: the log row, TensorBoard's per-layer figures, the trail and the checkpoints."""
    model, ctx, args = run.ctx.model, run.ctx, run.args
    spec = structure_spec(model) if run.thin else None
    checkpoint = {"model": model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
                  "lr_scheduler": ctx.lr_scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                  "pruner": None, "ocs": None, **run.pruners.state_dict(), "structure": spec, "epoch": epoch,
                  "step": run.state["step"], "best_acc1": run.state["best_acc1"], "rng": utils.rng_state(),
                  "args": vars(args), "model_name": args.model, "model_kwargs": run.kwargs}
    run.log.epoch(row)
    if report is not None:
        run.log.scalars({n: 1 - layer.fraction for n, layer in report.layers.items()}, epoch + 1, "density/")
    run.log.scalars(metrics["layer_firing"], epoch + 1, prefix="firing_rate/")
    # squashed weights: what evaluation just measured, loadable by a plain model
    if run.log.trail is not None:
        run.log.trail.add(export_dense(model), epoch=epoch + 1, acc1=metrics["acc1"],
                          sparsity=row["sparsity"], model_name=args.model, model_kwargs=run.kwargs,
                          structure=spec)
    if best:  # before the last one: a kill between the two leaves the best the log and summary agree with
        save_checkpoint(checkpoint, run.out / "checkpoint_best.pth")
    save_checkpoint(checkpoint, run.out / "checkpoint_last.pth")


def finish(run: Run, row: dict) -> dict:
    """Rank 0, at the end: summary.json and the final lines; the last logged row when resumed
    after the end."""
    if not row and run.state["epoch"] >= run.args.epochs:
        row = run.log.last_row()
    ocs = run.pruners.get("ocs")
    summary = {**row, "best_acc1": run.state["best_acc1"], "world_size": run.world,
               "dense_macs": run.dense_macs or run.macs,
               "prune_epoch": None if ocs is None or ocs.prune_epoch is None else ocs.prune_epoch + 1,
               "config": vars(run.args)}
    run.log.summary(summary)
    run.log.close()
    if row:
        print(final_lines(run.args, run.method, row, summary, run.lambdas, run.out))
    return row


# --- one epoch ----------------------------------------------------------------------------------------------

def train_one_epoch(run: Run, loader, progress: utils.Progress):
    """One epoch of the protocol's loop; the pruners step from the optimizer's post-hook."""
    model, args, device, state, pruners = run.train_model, run.args, run.device, run.state, run.pruners
    optimizer, lr_scheduler, scaler = run.ctx.optimizer, run.ctx.lr_scheduler, run.scaler
    model.train()
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
    total_loss = seen = 0.0
    for i, (x, y) in enumerate(loader):
        if i >= progress.steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = select_output(model(x), args.output)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        if (term := pruners.regularization()) is not None:  # LTP's L0 term, in float32
            loss = loss + term
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # a no-op without fp16; regularize() changes true gradients
        pruners.regularize()
        scaler.step(optimizer)
        scaler.update()
        spiking.reset_state(model)  # SpikingJelly's state of either namespace, without reset_net's log lines
        figures = {"lr": optimizer.param_groups[0]["lr"], **pruners.log_dict()}  # the step's LR, d after it
        if args.sched_interval == "step":
            lr_scheduler.step()
        state["step"] += 1
        value = loss.item()
        total_loss += value * len(y)
        seen += len(y)
        run.log.scalars({"loss": value, **figures}, state["step"], prefix="step/")
        progress.update(i + 1, value, seen, figures)
    progress.close()
    if args.sched_interval == "epoch":
        lr_scheduler.step()
    total_loss, seen = utils.all_reduce_sum([total_loss, seen], device)
    return total_loss / seen, seen / (time.time() - progress.start)


@torch.no_grad()
def evaluate(model, loader, device, output=None) -> dict:
    """Loss, top-1/top-5 and the firing rate over every neuron and per neuron layer, summed over ranks.
    ``output`` selects the logits of a tuple/list/dict output (snn_lats.outputs.select_output)."""
    model.eval()
    loss = top1 = top5 = n = 0.0
    with recording_firing(model) as neurons:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = select_output(model(x), output)
            spiking.reset_state(model)
            new_batch(neurons)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            top1 += (top[:, 0] == y).sum().item()
            top5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    names = list(neurons)
    counts = utils.all_reduce_sum([loss, top1, top5, n] + [neurons[k].spikes for k in names]
                                  + [neurons[k].elements for k in names], device)
    loss, top1, top5, n = counts[:4]
    spikes, updates = counts[4:4 + len(names)], counts[4 + len(names):]
    layers = {k: s / u for k, s, u in zip(names, spikes, updates, strict=True) if u}
    return {"loss": loss / n, "acc1": 100 * top1 / n, "acc5": 100 * top5 / n,
            "firing_rate": sum(spikes) / sum(updates) if sum(updates) else float("nan"),
            "layer_firing": layers}


# --- building blocks ----------------------------------------------------------------------------------------

def model_kwargs(args, num_classes: int, in_channels: int, image_size: tuple[int, int] | None = None) -> dict:
    """The keyword arguments of models.create_model, from the options the model declares (models.model_info)
    and --model-kwargs; stored in checkpoints so tools can rebuild the model. ``image_size`` (H, W) defaults
    to the data set's. A PACKAGE.MODULE:FACTORY model gets exactly --model-kwargs."""
    if factory.is_factory(args.model):
        return dict(args.model_kwargs or {})
    info = models.model_info(args.model)
    values = {"T": args.T, "neuron": args.neuron, "cnf": args.cnf, "width_multiplier": args.width_multiplier,
              "stem": args.stem or ("imagenet" if args.data == "imagenet" else "cifar"),
              "image_size": list(image_size or IMAGE_SIZES[args.data])}
    kwargs = dict(num_classes=num_classes, in_channels=in_channels)
    kwargs.update({kwarg: values[o] for o, kwarg in MODEL_OPTIONS.items() if kwarg in info.options})
    kwargs.update(args.model_kwargs or {})
    return kwargs


def ignored_layers(args, model=None, example=None) -> list[str]:
    """--ignored-layers; by default the classifier of SNNs (models.model_info(NAME).classifier), none for
    ANNs. For a PACKAGE.MODULE:FACTORY model, the classifier of a spiking one is the last conv/linear layer
    its forward of ``example`` runs."""
    if args.ignored_layers is not None:
        return args.ignored_layers
    if factory.is_factory(args.model):
        if model is None or example is None or not spiking.is_spiking(model):
            return []
        _, order, _ = layer_geometry(model, example)
        return order[-1:]
    info = models.model_info(args.model)
    return [info.classifier] if info.snn else []


def run_context(args, model, optimizer, steps_per_epoch: int, example=None, resume=None) -> RunContext:
    """What the method's builders see (experiments.methods); the LR scheduler is built on first use."""
    return RunContext(args, model, optimizer, steps_per_epoch, example, ignored_layers(args, model, example),
                      resume=resume,
                      make_lr_scheduler=lambda: build_lr_scheduler(args, optimizer, steps_per_epoch))


def training_data(args, world: int):
    """(train, val, num_classes, in_channels), the train set cut to --train-subset."""
    train_set, val_set, num_classes, in_channels = build_datasets(args.data, args.data_path)
    if args.train_subset is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(args.train_subset, len(train_set))))
    if len(train_set) < args.batch_size * world:
        raise ValueError(f"--batch-size {args.batch_size} x {world} processes exceeds the {len(train_set)} "
                         "training samples")
    return train_set, val_set, num_classes, in_channels


def build_model(args, kwargs: dict, structure: dict | None, pretrained, world: int, device, say):
    """The model on its device: thin when ``structure`` is given, with --pretrained weights loaded before any
    pruner (LTP's threshold unit and LATS's θ follow them), fused neurons and SyncBatchNorm if asked."""
    model = create_model(args, kwargs, structure)
    if pretrained is not None:
        try:
            load_plain_weights(model, model_state_from_checkpoint(pretrained))
        except ValueError as exc:
            raise ValueError(f"--pretrained {args.pretrained}: {exc}") from None
        say(f"initialized from {args.pretrained}" + (" (channel-pruned structure)" if structure else ""))
    if args.fused_neurons and (report := snn_lats.snn.use_fused_neurons(model)).unsupported:
        say(report)
    model.to(device)
    if args.sync_bn and world > 1:  # keeps SpikingJelly's step modes, which torch's own conversion drops
        model = snn_lats.snn.convert_sync_batchnorm(model)
    return model


def create_model(args, kwargs: dict, structure: dict | None = None) -> torch.nn.Module:
    """The registry model --model names, or the user's PACKAGE.MODULE:FACTORY model (snn_lats.cli.factory,
    which builds both)."""
    return factory.create(args.model, kwargs, structure)


def check_logits(args, model, example, num_classes: int) -> None:
    """A user's model must give [batch, num_classes] logits (averaged over T inside), else a clear error now
    rather than a shape error inside cross_entropy. One eval-mode forward, state reset, every module's own
    training flag kept (layer_geometry's evaluation pass)."""
    _, _, output = layer_geometry(model, example)
    logits = select_output(output, args.output)
    if tuple(logits.shape) != (example.shape[0], num_classes):
        raise factory.UsageError(
            f"--model {args.model} gives logits of shape {tuple(logits.shape)} for an input of shape "
            f"{tuple(example.shape)}; train.py needs [batch, {num_classes}] for --data {args.data} (average "
            "over T inside the model, or pick the logits of a tuple output with --output)")


def dense_reference(args, kwargs: dict, ignored: list[str], example, device) -> tuple[dict, int]:
    """Per-layer weight counts and MACs of the unpruned architecture."""
    with torch.random.fork_rng(devices=[]):  # the reference model's init leaves the run's RNG streams alone
        dense = create_model(args, kwargs).to(device)
    return weight_sizes(dense, ignored_layers=ignored), count_macs(dense, example)


def build_optimizer(args, model) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                           weight_decay=args.weight_decay)


def build_lr_scheduler(args, optimizer, steps_per_epoch: int):
    unit = steps_per_epoch if args.sched_interval == "step" else 1
    warmup, total = args.warmup_epochs * unit, args.epochs * unit
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup == 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def rebuild_optimization(args, model, optimizer, lr_scheduler, steps_per_epoch: int):
    """A fresh optimizer over the (new) parameters of a channel-pruned model, and an LR scheduler that
    continues exactly where ``lr_scheduler`` was: the run keeps one LR schedule across the pruning (OCS,
    reference B.2)."""
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


def load_start_checkpoints(args, out: Path):
    """The checkpoint to resume from (None for a fresh run) and the --pretrained one, loaded before the model
    is built: a channel-pruned run's model must be built thin."""
    if args.resume == "auto":
        path = out / "checkpoint_last.pth"
    else:
        path = Path(args.resume) if args.resume else None
    resume = None
    if path is not None and (args.resume != "auto" or path.exists()):
        resume = load_checkpoint(path)  # a corrupt file raises here: never start over silently
        missing = sorted(RESUME_KEYS - resume.keys()) if isinstance(resume, dict) else None
        if missing != []:
            what = f"lacks {missing}" if missing else f"holds a {type(resume).__name__}"
            raise ValueError(f"--resume {path}: not a checkpoint of experiments.train (it {what})")
        resume["path"] = str(path)
    pretrained = load_checkpoint(args.pretrained) if args.pretrained and resume is None else None
    return resume, pretrained


# what restore() reads from a checkpoint
RESUME_KEYS = {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "step", "best_acc1", "rng", "args"}


# what a resume may change: where things are and how they are shown, not what is computed
RESUME_MAY_CHANGE = ("resume", "output_dir", "config", "data_path", "workers", "log_every", "dump_rank_state",
                     "device", "pretrained")


def check_same_run(args, resume: dict) -> None:
    """Refuse a resume whose configuration differs from the checkpoint's, naming the keys (a changed --epochs
    or D would silently bend the LR and threshold schedules); RESUME_MAY_CHANGE may differ."""
    saved = resume.get("args")
    if not isinstance(saved, dict):
        raise ValueError(f"--resume {resume['path']}: the checkpoint holds no training configuration "
                         "('args'), so it is not a checkpoint of experiments.train")
    now = vars(args)
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {now.get(k)!r})" for k in changed)
        raise ValueError(f"--resume {resume['path']} changes the run: {shown}. Resume with the checkpoint's "
                         f"settings (OUTPUT_DIR/config.yaml), or start a new run in another --output-dir")


def restore(resume: dict, model, optimizer, lr_scheduler, scaler, pruners: RunPruners) -> dict:
    """Load a checkpoint's states; the run's epoch, step and best Acc@1 to continue from."""
    path = resume["path"]
    try:  # before anything is loaded
        pruners.check_states(resume)
    except ValueError as exc:
        raise ValueError(f"--resume {path}: {exc}") from None
    counters = {"epoch": resume["epoch"], "step": resume["step"], "best_acc1": resume["best_acc1"]}
    for key, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int if key != "best_acc1" else (int, float)) \
                or not (value >= 0 if key != "best_acc1" else math.isfinite(value)):
            raise ValueError(f"--resume {path}: its {key!r} is {value!r}, not a count of a run")
    # A checkpoint that passed check_same_run was written by this script for this run; one that still does not
    # load into its part (edited, or from another version) is named here, not left as the part's traceback.
    parts = [("model", model), ("optimizer", optimizer), ("lr_scheduler", lr_scheduler), ("scaler", scaler)]
    if not isinstance(resume["model"], dict):
        raise ValueError(f"--resume {path}: its 'model' is a {type(resume['model']).__name__}, not a "
                         "state_dict")
    try:
        check_state_fits(model, resume["model"])
    except ValueError as exc:
        raise ValueError(f"--resume {path}: {exc}") from None
    for key, target in parts:
        try:
            target.load_state_dict(resume[key])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise ValueError(f"--resume {path}: its {key!r} state does not load: {exc}") from None
    pruners.load_state_dict(resume)
    try:
        utils.set_rng_state(resume["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ValueError(f"--resume {path}: its 'rng' state does not load: {exc}") from None
    return {"epoch": resume["epoch"] + 1, "step": resume["step"], "best_acc1": resume["best_acc1"]}


# --- what a run reports -------------------------------------------------------------------------------------

def weight_report(pruners: RunPruners, model, ignored: list[str], dense_sizes: dict | None):
    """Per-layer weight sparsity: against the dense model once channels go (removed ones count as pruned),
    else of the run's weight pruner's layers; None for a dense run."""
    if dense_sizes is not None:
        return snn_lats.sparsity_report(model, ignored_layers=ignored, dense_sizes=dense_sizes)
    pruner = pruners.get("pruner")
    return pruner.sparsity_report() if pruner is not None else None


def epoch_row(epoch, train_loss, metrics, sparsity, logged, macs, dense_macs, lr, img_s, seconds) -> dict:
    """The log.csv row; ``logged`` holds the pruners' figures (a column none of them logs stays empty)."""
    return {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": metrics["loss"],
            "acc1": metrics["acc1"], "acc5": metrics["acc5"], "sparsity": sparsity,
            "threshold": logged.get("threshold", 0.0),
            **{k: logged.get(k) for k in ("l1_coefficient", "band_fraction", "stability", "reg_strength",
                                          "candidate_macs")},
            "macs": macs, "flops_reduction": 1 - macs / dense_macs if dense_macs else 0.0,
            "firing_rate": metrics["firing_rate"], "lr": lr, "img_per_s": img_s, "seconds": seconds}


def epoch_line(args, row: dict, figures: str) -> str:
    """One console line per epoch, with the method's own figures."""
    return (f"epoch {row['epoch']}/{args.epochs}  loss {row['train_loss']:.4f}  Acc@1 {row['acc1']:.2f}  "
            f"Acc@5 {row['acc5']:.2f}  sparsity {row['sparsity']:.4f}  {figures + '  ' if figures else ''}"
            f"fire {row['firing_rate']:.4f}  lr {row['lr']:.4g}  {row['img_per_s']:.0f} img/s  "
            f"{row['seconds']:.0f}s")


def final_lines(args, method, row: dict, summary: dict, lambdas: list, out: Path) -> str:
    """The run's last lines: the final figures and the command that measures its spike-level sparsity."""
    figures = ""
    if "threshold" in method.logs:
        lams = [v for v in lambdas if v is not None]
        lam = f"{statistics.median_high(lams):.3e} (median over epochs)" if lams else "-"
        figures = f"  d {row['threshold']:.5f}  lambda {lam}"
    if method.structured:
        figures += f"  MACs -{row['flops_reduction']:.2%}" + (
            f" (pruned after epoch {summary['prune_epoch']})" if summary["prune_epoch"] else " (not pruned)")
    output = [] if args.output is None else ["--output", str(args.output)]
    measure = shlex.join(["python", "-m", "experiments.benchmark_sparsity", "--checkpoint",
                          str(out / "checkpoint_best.pth"), *data_flags(args.data, args.data_path), *output])
    return (f"\nfinal: Acc@1 {row['acc1']:.2f} (best {summary['best_acc1']:.2f})  weight sparsity "
            f"{row['sparsity']:.4f}{figures}  | {out / 'summary.json'}\nspike-level sparsity: {measure}")


if __name__ == "__main__":
    sys.exit(cli())
