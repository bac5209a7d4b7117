"""The ``--method`` registry: one entry per method says what it needs, how to build its pruners from the args,
and what it logs. ``train.py`` asks the registry and never compares method names; a new method is one
``register(Method(...))`` call here (and its options in ``experiments/args.py`` if it has new ones).

A run's pruners are a :class:`RunPruners`: named pruners ("pruner", "ocs": the checkpoint keys) driven through
the :class:`snn_lats.Pruner` hooks as one.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import models
import snn_lats
from snn_lats import Pruner
from snn_lats.cli.factory import is_factory
from snn_lats.structured import OCSPruner

# log.csv columns a pruner's log_dict() may fill, and how the epoch line shows each:
# (value, dense MACs) -> text
FIGURES: dict[str, Callable[[float, float], str]] = {
    "threshold": lambda v, _: f"d {v:.5f}",
    "l1_coefficient": lambda v, _: f"lambda {v:.3e}",
    "band_fraction": lambda v, _: f"in-band {v:.4f}",
    "stability": lambda v, _: f"psi {v:.4f}",
    "reg_strength": lambda v, _: f"reg {v:.2e}",
    "candidate_macs": lambda v, dense: f"candidate MACs {v / 1e6:.2f}M (-{1 - v / dense:.2%})",
}


class RunPruners(Pruner):
    """The pruners of one run by checkpoint key, in order; every hook calls each of them."""

    def __init__(self, model: torch.nn.Module, pruners: dict[str, Pruner] | None = None):
        self.model = model
        self.members: dict[str, Pruner] = dict(pruners or {})

    def add(self, key: str, pruner: Pruner) -> None:
        self.members[key] = pruner

    def get(self, key: str) -> Pruner | None:
        return self.members.get(key)

    def regularization(self) -> torch.Tensor | None:
        terms = [t for p in self.members.values() if (t := p.regularization()) is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def regularize(self) -> None:
        for p in self.members.values():
            p.regularize()

    def step(self) -> None:
        for p in self.members.values():
            p.step()

    def epoch_start(self, epoch: int) -> None:
        for p in self.members.values():
            p.epoch_start(epoch)

    def epoch_end(self, epoch: int) -> bool:
        return any([p.epoch_end(epoch) for p in list(self.members.values())])  # every one, no short cut

    @property
    def structure_change_due(self) -> bool:
        return any(p.structure_change_due for p in self.members.values())

    def extra_param_groups(self, lr: float | None = None) -> list[dict[str, Any]]:
        return [g for p in self.members.values() for g in p.extra_param_groups(lr)]

    def log_dict(self) -> dict[str, float | None]:
        return {k: v for p in self.members.values() for k, v in p.log_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {key: p.state_dict() for key, p in self.members.items()}

    def check_states(self, state: dict[str, Any]) -> None:
        """Raise unless ``state`` (a checkpoint) holds a state for every member, under its key."""
        missing = [type(p).__name__ for key, p in self.members.items() if not state.get(key)]
        if missing:
            raise ValueError(f"the checkpoint holds no {' or '.join(missing)} state, so it is from another "
                             "--method")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_states(state)
        for key, p in self.members.items():
            p.load_state_dict(state[key])


@dataclass
class RunContext:
    """What a method's builders see: the args, the bare model and the run's optimization objects."""

    args: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    example: torch.Tensor  # one sample, for tracing (OCS) and MAC counts
    ignored_layers: list[str]
    make_lr_scheduler: Callable[[], Any]
    resume: dict | None = None
    _lr_scheduler: Any = field(default=None, repr=False)

    @property
    def lr_scheduler(self):
        """Built on first use: a method that adds param groups must do so before (LTP's thresholds)."""
        if self._lr_scheduler is None:
            self._lr_scheduler = self.make_lr_scheduler()
        return self._lr_scheduler

    @property
    def total_steps(self) -> int:
        return self.args.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Method:
    """One ``--method``.

    build: the run's pruners at the start (on resume, as the checkpoint's point of the run needs them).
    needs: args that must be set (not None), e.g. ``("final_threshold",)``.
    soft_threshold: builds a SoftThresholdPruner, so it takes ``--layer-scale``.
    structured: removes channels (OCS options apply; sparsity and MACs are counted against the dense model).
    after_removal: called once the channels went, with the steps left: adds what prunes the thin model.
    trail: save the per-epoch trail by default.
    logs: the log.csv columns its pruners fill (``FIGURES``), in the epoch line's order.
    lr_note: why this run's LR schedule breaks the method's assumption (printed), or None.
    warning: what an epoch's logged row says is going wrong (printed), or None.
    """

    name: str
    build: Callable[[RunContext], RunPruners]
    needs: tuple[str, ...] = ()
    soft_threshold: bool = False
    structured: bool = False
    after_removal: Callable[[RunContext, RunPruners, int], None] | None = None
    trail: bool = False
    logs: tuple[str, ...] = ()
    lr_note: Callable[[Any], str | None] = lambda args: None
    warning: Callable[[dict], str | None] = lambda row: None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"--method must be one of {tuple(METHODS)}, got {name!r}")
    return METHODS[name]


# --- builders -----------------------------------------------------------------------------------------------

def thin_model_lats(ctx: RunContext, **schedule) -> snn_lats.SoftThresholdPruner:
    """ocs-lats's soft-threshold pruner of the thin model: schedule "lr" (any LR schedule, and it starts
    mid-run), no start step or freeze of its own."""
    return snn_lats.SoftThresholdPruner(ctx.model, schedule="lr", ignored_layers=ctx.ignored_layers,
                                        optimizer=ctx.optimizer, layer_scale=ctx.args.layer_scale, **schedule)


def soft_threshold_pruner(ctx: RunContext, schedule: str, **kwargs) -> snn_lats.SoftThresholdPruner:
    args = ctx.args
    common = dict(ignored_layers=ctx.ignored_layers, optimizer=ctx.optimizer, layer_scale=args.layer_scale,
                  start_step=args.pruning_start_epoch * ctx.steps_per_epoch)
    if args.freeze_epoch is not None:
        common["freeze_at"] = args.freeze_epoch * ctx.steps_per_epoch
    return snn_lats.SoftThresholdPruner(ctx.model, **common, schedule=schedule, **kwargs)


def lr_schedule_kwargs(ctx: RunContext, total_steps: int) -> dict:
    """schedule="lr" with λ solved so that d reaches --final-threshold after ``total_steps`` under the run's
    LR schedule (per-epoch LR moves: the simulation steps the scheduler per epoch)."""
    interval = ctx.steps_per_epoch if ctx.args.sched_interval == "epoch" else None
    return dict(final_threshold=ctx.args.final_threshold, total_steps=total_steps,
                lr_scheduler=ctx.lr_scheduler, steps_per_epoch=interval)


def one(key: str, make: Callable[[RunContext], Pruner]) -> Callable[[RunContext], RunPruners]:
    return lambda ctx: RunPruners(ctx.model, {key: make(ctx)})


def closed_form(schedule: str) -> Callable[[RunContext], RunPruners]:
    """The builder of s-lats, lats, pgh and early: d follows ``schedule``'s closed form to --final-threshold
    (lats spreads it per epoch, pgh weighs it by --beta)."""
    def build(ctx: RunContext) -> RunPruners:
        extra = {"lats": {"steps_per_epoch": ctx.steps_per_epoch}, "pgh": {"beta": ctx.args.beta}}
        return RunPruners(ctx.model, {"pruner": soft_threshold_pruner(
            ctx, schedule, final_threshold=ctx.args.final_threshold, total_steps=ctx.total_steps,
            **extra.get(schedule, {}))})

    return build


def build_lr(ctx: RunContext) -> RunPruners:
    """lr: constant λ, given (--l1-coefficient) or solved from --final-threshold."""
    if ctx.args.l1_coefficient is not None:
        pruner = soft_threshold_pruner(ctx, "lr", l1_coefficient=ctx.args.l1_coefficient)
    else:
        pruner = soft_threshold_pruner(ctx, "lr", **lr_schedule_kwargs(ctx, ctx.total_steps))
    return RunPruners(ctx.model, {"pruner": pruner})


def build_gmp(ctx: RunContext) -> snn_lats.MagnitudePruner:
    args, n = ctx.args, ctx.steps_per_epoch
    return snn_lats.MagnitudePruner(ctx.model, pruning_ratio=args.pruning_ratio,
                                    total_steps=(args.pruning_end_epoch or args.epochs) * n,
                                    start_step=args.pruning_start_epoch * n, frequency=max(1, n // 4),
                                    ignored_layers=ctx.ignored_layers)


def build_ltp(ctx: RunContext) -> snn_lats.LearnedThresholdPruner:
    args = ctx.args
    return snn_lats.LearnedThresholdPruner(ctx.model, l0_weight=args.l0_weight, temperature=args.temperature,
                                           ignored_layers=ctx.ignored_layers)


def model_time_steps(args, model) -> int:
    """T of a registry SNN (1 for an ANN); a PACKAGE.MODULE:FACTORY model's integer attribute ``T`` if it has
    one, else 1."""
    if is_factory(args.model):
        steps = getattr(model, "T", 1)
        return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 1
    return args.T if models.model_info(args.model).snn else 1


def build_ocs(ctx: RunContext) -> OCSPruner:
    """OCSPruner with the --ocs-* settings. For SNNs the example's MACs are summed over T, so the FLOPs-cost
    softmax is scaled by T to weigh groups as the reference does for one ANN forward."""
    args = ctx.args
    time_steps = model_time_steps(args, ctx.model)
    return OCSPruner(ctx.model, ctx.example, args.target_flops_reduction, ignored_layers=ctx.ignored_layers,
                     layer_prune_limit=args.ocs_layer_prune_limit,
                     monitor_start_epoch=args.ocs_monitor_start_epoch,
                     reg_start_epoch=args.ocs_reg_start_epoch, reg_init=args.ocs_reg_init,
                     reg_delta=args.ocs_reg_delta, reg_interval=args.ocs_reg_interval,
                     stability_threshold=args.ocs_stability_threshold,
                     prune_epoch_cap=args.ocs_prune_epoch_cap, regularizer=args.ocs_regularizer,
                     optimizer=ctx.optimizer, cost_temperature=1e6 * time_steps, output=args.output)


def build_ocs_then_lats(ctx: RunContext) -> RunPruners:
    """ocs-lats: OCS; resumed after the removal, also the LATS pruner of the thin model with its saved λ."""
    pruners = RunPruners(ctx.model, {"ocs": build_ocs(ctx)})
    resume = ctx.resume
    if resume is not None and resume.get("ocs") and resume["ocs"]["pruned"] and resume.get("pruner"):
        pruners.get("ocs").load_state_dict(resume["ocs"])
        lam = resume["pruner"]["schedule"]["l1_coefficient"]  # the saved state then restores d
        pruners.add("pruner", thin_model_lats(ctx, l1_coefficient=lam))
    return pruners


def lats_after_removal(ctx: RunContext, pruners: RunPruners, remaining_steps: int) -> None:
    """ocs-lats: soft-threshold pruning of the thin model's weights with constant λ (the ``lr`` schedule: any
    LR schedule, and it starts mid-run), d reaching --final-threshold at the run's last step."""
    if remaining_steps > 0:
        pruners.add("pruner", thin_model_lats(ctx, **lr_schedule_kwargs(ctx, remaining_steps)))


def closed_form_lr_note(args) -> str | None:
    """Why the threshold schedule's λ = Δd/lr will not be constant under this LR schedule, or None."""
    if args.warmup_epochs > 0:
        return (f"{args.method}'s closed form assumes a cosine LR from step 0: the warm-up inflates its λ. "
                "--method lr keeps λ constant under any LR schedule")
    designed = "step" if args.method == "s-lats" else "epoch"
    if args.sched_interval != designed:
        return (f"{args.method}'s closed form assumes a per-{designed} cosine LR, and --sched-interval is "
                f"{args.sched_interval}: its λ will not be constant (docs/results.md measured LATS's grow "
                f"2e4-fold under a per-step LR). Use --sched-interval {designed}, or --method lr")
    return None


SOFT = ("threshold", "l1_coefficient")
OCS_FIGURES = ("stability", "reg_strength", "candidate_macs")
D = ("final_threshold",)

register(Method("dense", build=lambda ctx: RunPruners(ctx.model)))
register(Method("s-lats", build=closed_form("s-lats"), needs=D, soft_threshold=True, logs=SOFT,
                lr_note=closed_form_lr_note))
register(Method("lats", build=closed_form("lats"), needs=D, soft_threshold=True, logs=SOFT,
                lr_note=closed_form_lr_note))
register(Method("pgh", build=closed_form("pgh"), needs=D, soft_threshold=True, logs=SOFT))
register(Method("lr", build=build_lr, soft_threshold=True, logs=SOFT))
register(Method("early", build=closed_form("pgh"), needs=D, soft_threshold=True, logs=SOFT))
register(Method("pai", needs=D, soft_threshold=True, logs=SOFT,
                build=one("pruner", lambda ctx: soft_threshold_pruner(
                    ctx, "constant", final_threshold=ctx.args.final_threshold, compensate=False))))
register(Method("gmp", build=one("pruner", build_gmp)))


def ltp_band_warning(row: dict) -> str | None:
    if row.get("band_fraction") is not None and row["band_fraction"] < 0.01:
        return ("warning: under 1% of the weights are in the sigmoid's transition band, so the thresholds "
                "barely move (LTP's premature termination): raise --temperature")
    return None


register(Method("ltp", build=one("pruner", build_ltp), trail=True, logs=("band_fraction",),
                warning=ltp_band_warning))
register(Method("ocs", build=one("ocs", build_ocs), structured=True, logs=OCS_FIGURES))
register(Method("ocs-lats", build=build_ocs_then_lats, needs=D, soft_threshold=True, structured=True,
                after_removal=lats_after_removal, logs=OCS_FIGURES + SOFT))


def build_pruners(ctx: RunContext) -> RunPruners:
    """The run's pruners for ``ctx.args.method``, with their extra param groups in the optimizer (before the
    LR scheduler exists)."""
    pruners = get_method(ctx.args.method).build(ctx)
    groups = pruners.extra_param_groups(ctx.args.threshold_lr or ctx.args.lr)
    if groups and ctx._lr_scheduler is not None:
        raise RuntimeError(f"--method {ctx.args.method}: param groups added after the LR scheduler was built")
    for group in groups:
        ctx.optimizer.add_param_group(group)
    return pruners


def epoch_figures(method: Method, row: dict, logged: dict, dense_macs: float | None) -> str:
    """The method's part of the epoch line from what its pruners logged (undefined figures are left out);
    a structured method shows the model's MACs once it stops searching."""
    parts = []
    if method.structured and logged.get("candidate_macs") is None:
        parts.append(f"MACs {row['macs'] / 1e6:.2f}M (-{row['flops_reduction']:.2%})")
    for name in method.logs:
        value = logged.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(FIGURES[name](value, dense_macs))
    return "  ".join(parts)
