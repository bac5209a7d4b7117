"""The command line of ``experiments/train.py``: options, an optional YAML file of defaults, and every check
made before anything is built or written. Method-specific rules come from the methods registry."""
from __future__ import annotations

import argparse
import json
import math
import os

import torch
import yaml

import models
from experiments.data import DATASETS
from experiments.methods import METHODS
from snn_lats.cli.factory import UsageError, is_factory, output_selector, resolve_factory
from snn_lats.cli.types import finite_float
from snn_lats.structured import REGULARIZERS

OCS_REGULARIZERS = tuple(REGULARIZERS)
# train.py option -> the builder keyword argument it sets, for the options a model declares
# (models.model_info(NAME).options lists the keyword arguments); image_size comes from the data set
MODEL_OPTIONS = {"T": "T", "neuron": "neuron_type", "cnf": "cnf", "stem": "stem",
                 "width_multiplier": "width_multiplier", "image_size": "image_size"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose error is always one line: a newline or control character in what was typed
    (argparse's own "unrecognized arguments: ..." repeats the tokens) is shown escaped."""

    def error(self, message: str):
        super().error("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


def get_args_parser() -> argparse.ArgumentParser:
    import experiments.train

    p = ArgumentParser(prog="python -m experiments.train", description=experiments.train.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None,
                   help="YAML file of defaults (keys are the long option names)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", help=f"one of {DATASETS}")
    g.add_argument("--data-path", default=None,
                   help="dataset root (ImageFolder root with train/ and val/ for imagenet)")
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--train-subset", type=int, default=None,
                   help="train on the first N samples (CPU-sized runs)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="sew_resnet18", help=f"one of {models.list_models()} "
                   "(models.model_info(NAME).options says which of the next options it takes), or your own "
                   "model as PACKAGE.MODULE:FACTORY, a callable importable from the working directory or "
                   "PYTHONPATH that returns the nn.Module, called with --model-kwargs")
    g.add_argument("--T", type=int, default=4, help="time steps (SNNs)")
    g.add_argument("--neuron", default="if", help="if | lif | plif (SNN ResNets and VGGs)")
    g.add_argument("--cnf", default="ADD", help="ADD | AND | IAND (SEW ResNets)")
    g.add_argument("--stem", default=None,
                   help="imagenet | cifar (ResNets; default: imagenet for ImageNet, else cifar)")
    g.add_argument("--width-multiplier", type=finite_float, default=1.0)
    g.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help='architecture options as a JSON object, e.g. \'{"embed_dims": 64, "depths": 2}\' '
                        "(models.model_info(NAME).arch_kwargs lists them)")
    g.add_argument("--output", type=output_selector, default=None, metavar="INDEX|KEY",
                   help="for a model whose forward returns a tuple, list or dict: where the logits are "
                        "(default: its first tensor)")
    g.add_argument("--fused-neurons", action="store_true", help="swap in snn_lats's fused LIF/IF/PLIF nodes")
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="s-lats", help=f"one of {tuple(METHODS)}")
    g.add_argument("--final-threshold", type=finite_float, default=None, help="D for soft-threshold methods")
    g.add_argument("--l1-coefficient", type=finite_float, default=None,
                   help="λ for --method lr (else solved from D)")
    g.add_argument("--beta", type=finite_float, default=0.1, help="PGH base for pgh / early")
    g.add_argument("--freeze-epoch", type=int, default=None,
                   help="fix the masks after this epoch (early pruning)")
    g.add_argument("--pruning-start-epoch", type=int, default=0)
    g.add_argument("--pruning-ratio", type=finite_float, default=0.9, help="final sparsity for gmp")
    g.add_argument("--pruning-end-epoch", type=int, default=None,
                   help="gmp: the ramp reaches --pruning-ratio after this many epochs (default: --epochs), "
                        "leaving the rest to recover, as in Zhu & Gupta's recipe")
    g.add_argument("--ignored-layers", nargs="*", default=None, help="default: the classifier of SNNs")
    g.add_argument("--layer-scale", nargs="*", default=None, metavar="NAME=SCALE",
                   help="soft-threshold methods: layer NAME's threshold is SCALE x d (others 1), "
                        "e.g. conv1=4")
    g.add_argument("--l0-weight", type=finite_float, default=1.0,
                   help="λ of LTP's L0 term (ltp; larger: sparser)")
    g.add_argument("--temperature", type=finite_float, default=0.5,
                   help="T0 of LTP's sigmoid, T_l = T0·Var(|w|) (ltp)")
    g.add_argument("--threshold-lr", type=finite_float, default=None,
                   help="LR of LTP's thresholds (default: --lr)")
    g.add_argument("--pretrained", default=None,
                   help="start from this checkpoint's weights (dense or pruned)")
    g.add_argument("--trail", action=argparse.BooleanOptionalAction, default=None,
                   help="save every epoch's hard-masked model to OUTPUT_DIR/trail (default: on for ltp)")
    g = p.add_argument_group(
        "structured pruning (ocs: OCSPruner; ocs-lats: OCS, then LATS on the remaining weights)")
    g.add_argument("--target-flops-reduction", type=finite_float, default=0.5,
                   help="fraction of the dense conv/linear MACs to remove, in (0, 1)")
    g.add_argument("--ocs-monitor-start-epoch", type=int, default=2,
                   help="first epoch whose channels are scored")
    g.add_argument("--ocs-reg-start-epoch", type=int, default=None,
                   help="first regularised epoch (default: automatic, once the stability Ψ plateaus)")
    g.add_argument("--ocs-reg-init", type=finite_float, default=1e-4,
                   help="initial strength λ of the channel shrink")
    g.add_argument("--ocs-reg-delta", type=finite_float, default=1e-4, help="λ grows by this ...")
    g.add_argument("--ocs-reg-interval", type=int, default=2, help="... every this many epochs")
    g.add_argument("--ocs-stability-threshold", type=finite_float, default=0.999,
                   help="prune once Ψ reaches this")
    g.add_argument("--ocs-prune-epoch-cap", type=int, default=None,
                   help="prune after this epoch (0-based) at the latest (default: 40%% of --epochs)")
    g.add_argument("--ocs-layer-prune-limit", type=finite_float, default=0.75,
                   help="at most this fraction of a group goes")
    g.add_argument("--ocs-regularizer", default="shrink", help=f"one of {OCS_REGULARIZERS}")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--lr", type=finite_float, default=0.1)
    g.add_argument("--momentum", type=finite_float, default=0.9)
    g.add_argument("--weight-decay", type=finite_float, default=0.0)
    g.add_argument("--label-smoothing", type=finite_float, default=0.0)
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
    g.add_argument("--resume", default=None,
                   help="'auto' (OUTPUT_DIR/checkpoint_last.pth if present) or a path")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut epochs short (smoke tests)")
    g.add_argument("--log-every", type=int, default=50,
                   help="without a terminal (nohup, SLURM): a progress line every this many steps")
    g.add_argument("--dump-rank-state", action="store_true",
                   help="every rank saves its final state (DDP checks)")
    return p


def parse_args(argv: list[str] | None = None, config: dict | None = None,
               device_here: bool = True) -> argparse.Namespace:
    """The checked options of ``argv``; ``config`` is a mapping of defaults as a ``-c`` file would give them
    (what a sweep checks its runs with, before anything runs); without ``device_here`` a CUDA device need not
    exist on this machine (a SLURM job's). A problem is argparse's usage and one line (SystemExit 2)."""
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if config is not None:
        parser.set_defaults(**config_values(parser, config, "the base configuration"))
    if pre.config:
        parser.set_defaults(**read_config(parser, pre.config))
    args = parser.parse_args(argv)
    if is_factory(args.model):
        check_factory_model(parser, args)
    elif args.model in models.list_models():
        check_model_options(parser, args)
    checks = [
        (args.data in DATASETS, f"--data must be one of {DATASETS}, got {args.data!r}"),
        (is_factory(args.model) or args.model in models.list_models(),
         f"--model must be one of {models.list_models()} or PACKAGE.MODULE:FACTORY, got {args.model!r}"),
        (args.method in METHODS, f"--method must be one of {tuple(METHODS)}, got {args.method!r}"),
        (args.batch_size > 0, f"--batch-size must be > 0, got {args.batch_size}"),
        (args.workers >= 0, f"--workers must be >= 0, got {args.workers}"),
        (args.seed >= 0, f"--seed must be >= 0, got {args.seed}"),
        (not os.path.exists(args.output_dir) or os.path.isdir(args.output_dir),
         f"--output-dir {args.output_dir}: exists and is not a directory"),
        (args.log_every > 0, f"--log-every must be > 0, got {args.log_every}"),
        (args.max_steps_per_epoch is None or args.max_steps_per_epoch > 0,
         f"--max-steps-per-epoch must be > 0, got {args.max_steps_per_epoch}"),
        (args.epochs > 0, f"--epochs must be > 0, got {args.epochs}"),
        (args.train_subset is None or args.train_subset > 0,
         f"--train-subset must be > 0, got {args.train_subset}"),
        (args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        (args.momentum >= 0, f"--momentum must be >= 0, got {args.momentum}"),
        (args.weight_decay >= 0, f"--weight-decay must be >= 0, got {args.weight_decay}"),
        (0 <= args.label_smoothing <= 1, f"--label-smoothing must be in [0, 1], got {args.label_smoothing}"),
        (args.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {args.warmup_epochs}"),
        (args.T >= 1, f"--T must be >= 1 (time steps), got {args.T}"),
        (args.width_multiplier > 0, f"--width-multiplier must be > 0, got {args.width_multiplier}"),
        (args.final_threshold is None or args.final_threshold >= 0,
         f"--final-threshold must be >= 0, got {args.final_threshold}"),
        (args.l1_coefficient is None or args.l1_coefficient >= 0,
         f"--l1-coefficient must be >= 0, got {args.l1_coefficient}"),
        (args.beta > 0, f"--beta must be > 0, got {args.beta}"),
        (args.freeze_epoch is None or args.freeze_epoch >= 0,
         f"--freeze-epoch must be >= 0, got {args.freeze_epoch}"),
        (0 <= args.pruning_ratio < 1, f"--pruning-ratio must be in [0, 1), got {args.pruning_ratio}"),
        (args.amp in ("none", "fp16", "bf16"), f"--amp must be none, fp16 or bf16, got {args.amp!r}"),
        (args.sched_interval in ("step", "epoch"),
         f"--sched-interval must be step or epoch, got {args.sched_interval!r}"),
        (0 <= args.pruning_start_epoch < args.epochs, "--pruning-start-epoch must be in [0, --epochs)"),
        (args.pruning_end_epoch is None or args.pruning_start_epoch < args.pruning_end_epoch <= args.epochs,
         f"--pruning-end-epoch must be in (--pruning-start-epoch, --epochs], got {args.pruning_end_epoch}"),
        (args.l0_weight >= 0, f"--l0-weight must be >= 0, got {args.l0_weight}"),
        (args.temperature > 0, f"--temperature must be > 0, got {args.temperature}"),
        (args.threshold_lr is None or args.threshold_lr > 0,
         f"--threshold-lr must be > 0, got {args.threshold_lr}"),
        (args.pretrained is None or os.path.isfile(args.pretrained),
         f"--pretrained {args.pretrained}: file not found"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    check_device(parser, args.device, device_here)
    method = METHODS[args.method]
    for needed in method.needs:
        if getattr(args, needed) is None:
            parser.error(f"--method {args.method} needs --{needed.replace('_', '-')}")
    if args.layer_scale is not None:
        args.layer_scale = parse_layer_scale(parser, args.layer_scale)
        if not method.soft_threshold:
            soft = tuple(name for name, m in METHODS.items() if m.soft_threshold)
            parser.error(f"--layer-scale applies to the soft-threshold methods {soft}, not {args.method!r}")
    if method.structured:
        check_structured_args(parser, args)
    return args


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The defaults a YAML config file sets, each checked as its command-line option would be (argparse does
    not convert defaults): an unreadable file, an unknown key or a value of the wrong type is a one-line
    error."""
    if not os.path.isfile(path):
        parser.error(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except UnicodeDecodeError as exc:
        parser.error(f"--config {path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        parser.error(f"--config {path}: cannot be read: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())  # one line (a ReaderError has 2)
        parser.error(f"--config {path}: not valid YAML{line}: {reason}")
    if config is None:
        return {}
    if not isinstance(config, dict):
        parser.error(f"--config {path}: must be a mapping of option: value, got a {type(config).__name__}")
    return config_values(parser, config, f"--config {path}")


def config_values(parser: argparse.ArgumentParser, config: dict, where: str) -> dict:
    """``{dest: value}`` of a configuration mapping, each value checked as its option would be."""
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted((k for k in config if str(k).replace("-", "_") not in actions), key=str)
    if unknown:
        parser.error(f"{where}: unknown keys {unknown}")
    values = {}
    for key, value in config.items():
        dest = str(key).replace("-", "_")
        if (problem := config_type_problem(actions[dest], value)) is not None:
            parser.error(f"{where}: {key} must be {problem}, got {value!r}")
        values[dest] = value
    return values


def config_type_problem(action: argparse.Action, value) -> str | None:
    """What a config value of ``action`` must be, or None when ``value`` is that."""
    if value is None:
        return None if action.default is None else "set (it has a default)"
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return None if isinstance(value, bool) else "true or false"
    if action.dest in ("layer_scale", "model_kwargs"):  # a mapping, or the command line's spelling
        return None if isinstance(value, (dict, list, str)) else "a mapping or a string"
    if action.nargs == "*":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of names"
    if action.type is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if action.type is finite_float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number and math.isfinite(value) else "a finite number"
    return None if isinstance(value, str) else "a string"


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An option the model does not take must keep its default (never ignored silently); --model-kwargs
    becomes a dict of the model's architecture options."""
    info = models.model_info(args.model)
    defaults = get_args_parser()  # without the config's defaults
    flags = {kwarg: option for option, kwarg in MODEL_OPTIONS.items()}
    for option, kwarg in MODEL_OPTIONS.items():
        if option != "image_size" and kwarg not in info.options \
                and getattr(args, option) != defaults.get_default(option):
            takes = [f"--{flags[o].replace('_', '-')}" for o in info.options if o != "image_size"] \
                or "none of --T/--neuron/--cnf/--stem/..."
            parser.error(f"--{option.replace('_', '-')} does not apply to --model {args.model} "
                         f"(it takes {takes})")
    kwargs = model_kwargs_object(parser, args)
    for key in kwargs or {}:
        flag = next((o for o, k in MODEL_OPTIONS.items() if k == key and k in info.options), None)
        if flag is not None:
            where = "the data set" if flag == "image_size" else f"--{flag.replace('_', '-')}"
            parser.error(f"--model-kwargs {key!r}: set by {where}, not by --model-kwargs")
        if key not in info.arch_kwargs:
            parser.error(f"--model-kwargs {key!r} is not an architecture option of {args.model}; it takes "
                         f"{list(info.arch_kwargs)}")
    args.model_kwargs = kwargs


def model_kwargs_object(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict | None:
    """--model-kwargs as a dict (the command line's JSON text, or a config file's mapping)."""
    kwargs = args.model_kwargs
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as e:
            parser.error(f"--model-kwargs must be a JSON object, e.g. '{{\"depths\": 2}}': {e}")
    if kwargs is not None and not isinstance(kwargs, dict):
        parser.error(f"--model-kwargs must be a JSON object (a mapping), got {args.model_kwargs!r}")
    return kwargs


def check_factory_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--model PACKAGE.MODULE:FACTORY: importable and callable now (a one-line error, not a traceback after
    the data loaded); the registry's options do not reach it (its own go in --model-kwargs)."""
    defaults = get_args_parser()
    for option in MODEL_OPTIONS:
        if option != "image_size" and getattr(args, option) != defaults.get_default(option):
            parser.error(f"--{option.replace('_', '-')} does not apply to --model {args.model}: a factory "
                         "takes its own options in --model-kwargs")
    try:
        resolve_factory(args.model)
    except UsageError as exc:
        parser.error(str(exc))
    args.model_kwargs = model_kwargs_object(parser, args)


def check_device(parser: argparse.ArgumentParser, device: str, here: bool = True) -> None:
    """--device names a torch device (one this machine has, with ``here``)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        parser.error(f"--device must be a torch device such as cpu, cuda or cuda:1, got {device!r}")
    if kind == "cuda" and here and not torch.cuda.is_available():
        parser.error(f"--device {device}: no CUDA GPU is available here (torch.cuda.is_available() is False)")
    if kind not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {device!r}")


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
        (args.ocs_reg_init >= 0 and args.ocs_reg_delta >= 0,
         "--ocs-reg-init and --ocs-reg-delta must be >= 0"),
        (args.ocs_reg_interval >= 1, f"--ocs-reg-interval must be >= 1, got {args.ocs_reg_interval}"),
        (0 < args.ocs_stability_threshold <= 1,
         f"--ocs-stability-threshold must be in (0, 1], got {args.ocs_stability_threshold}"),
        (0 < args.ocs_layer_prune_limit < 1,
         f"--ocs-layer-prune-limit must be in (0, 1), got {args.ocs_layer_prune_limit}"),
        (args.ocs_regularizer in OCS_REGULARIZERS,
         f"--ocs-regularizer must be one of {OCS_REGULARIZERS}, got {args.ocs_regularizer!r}"),
        (args.ocs_prune_epoch_cap is None or start <= args.ocs_prune_epoch_cap < args.epochs,
         "--ocs-prune-epoch-cap must be in [--ocs-monitor-start-epoch, --epochs) = "
         f"[{start}, {args.epochs}), "
         f"got {args.ocs_prune_epoch_cap}"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    # the reference scripts cap at 38% (ImageNet 50/130) and 37% (CIFAR 110/300)
    if args.ocs_prune_epoch_cap is None:
        args.ocs_prune_epoch_cap = min(args.epochs - 1, max(start, round(0.4 * args.epochs)))
