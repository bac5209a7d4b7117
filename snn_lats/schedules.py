"""Threshold schedules: how the global soft threshold d grows with the optimizer step.

Under plain SGD the soft-threshold step is one ISTA step for ``L(W) + λ_k‖W‖₁`` with ``λ_k = Δd_k / η_k``
(``shared/reference/lats_paper.md`` §1.2). A schedule therefore *is* a choice of the L1 path λ_k:

- ``ConstantSchedule``: d = D from the first step; λ = 0 afterwards.
- ``SLATSSchedule``: d = D·(x + sin(πx)/π), increments ∝ 1 + cos(πx), i.e. λ constant under an ideal
  per-step cosine LR.
- ``LATSSchedule``: the exact per-epoch form of the reference code, increments ∝ that epoch's cosine LR.
- ``PGHSchedule``: increments ∝ β^x·(1 + cos(πx)); λ changes geometrically (β < 1: early pruning).
- ``LRProportionalSchedule``: d += λ·η_k with the optimizer's actual LR, so λ is exactly constant under any
  LR schedule (warm-up, step, one-cycle).
- ``CallableSchedule``: any ``step -> d``.

``step`` counts optimizer steps: the threshold for the forward passes after ``step`` steps is
``threshold_at(step)``. Progress ``x = (step − start_step) / (total_steps − start_step)`` clamped to [0, 1].
"""
from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._checks import check_int, check_number, differs, shown

SCHEDULE_NAMES = ("constant", "s-lats", "lats", "pgh", "lr")
_ALIASES = {"slats": "s-lats"}
# the schedules whose closed form runs over a fixed number of steps
NEEDS_TOTAL_STEPS = ("s-lats", "lats", "pgh")


def schedule_name(schedule: Any) -> str | None:
    """The canonical name of a ``schedule=`` string (case and the ``slats`` spelling folded), else None."""
    if not isinstance(schedule, str):
        return None
    name = schedule.lower()
    return _ALIASES.get(name, name)


def needs_total_steps(schedule: Any) -> bool:
    """Whether ``build_schedule(schedule, ...)`` needs ``total_steps=``."""
    return schedule_name(schedule) in NEEDS_TOTAL_STEPS


def _check_steps(total_steps: Any, start_step: Any) -> tuple[int, int]:
    total = check_int("total_steps", total_steps, minimum=1)
    start = check_int("start_step", start_step, minimum=0)
    if start >= total:
        raise ValueError(f"start_step must be < total_steps={total}, got {start_step!r}")
    return total, start


class ThresholdSchedule:
    """Base class. Subclasses give ``threshold_at(step)``; stateful ones override ``advance``.

    Every subclass's ``threshold_at`` takes a step count, an int >= 0 (``-1``, ``1.5`` and ``True`` are
    refused, not extrapolated): the check wraps it once, here, for the schedules of this module and a user's
    alike.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("threshold_at")
        if own is not None and not getattr(own, "_checks_step", False):
            @functools.wraps(own)
            def threshold_at(self, step: int) -> float:
                return own(self, check_int("step", step, minimum=0))

            threshold_at._checks_step = True
            cls.threshold_at = threshold_at

    def threshold_at(self, step: int) -> float:
        raise NotImplementedError

    def advance(self, step: int, threshold: float, lr: float | None) -> float:
        """The threshold after ``step`` optimizer steps, given the previous one and the LR the last step
        used."""
        return self.threshold_at(step)

    def settings(self) -> dict[str, Any]:
        """The numbers that define the schedule (D, N, β, ...): a pruner refuses a state saved with others."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, (int, float))}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class _RampSchedule(ThresholdSchedule):
    """d = D·shape(x) with x the clamped progress between ``start_step`` and ``total_steps``."""

    def __init__(self, final_threshold: float, total_steps: int, start_step: int = 0):
        self.final_threshold = check_number("final_threshold", final_threshold, minimum=0)
        self.total_steps, self.start_step = _check_steps(total_steps, start_step)

    def progress(self, step: int) -> float:
        span = self.total_steps - self.start_step
        return min(max((step - self.start_step) / span, 0.0), 1.0)

    def shape(self, x: float) -> float:
        raise NotImplementedError

    def threshold_at(self, step: int) -> float:
        return self.final_threshold * self.shape(self.progress(step))


class ConstantSchedule(ThresholdSchedule):
    """d = D from ``start_step`` on (0 before). With the pruner's default compensation the model's function is
    unchanged at preparation; without it (``compensate=False``) this is pruning at initialization."""

    def __init__(self, final_threshold: float, start_step: int = 0):
        self.final_threshold = check_number("final_threshold", final_threshold, minimum=0)
        self.start_step = check_int("start_step", start_step, minimum=0)

    def threshold_at(self, step: int) -> float:
        return self.final_threshold if step >= self.start_step else 0.0


class SLATSSchedule(_RampSchedule):
    """S-LATS: d = D·(x + sin(πx)/π)."""

    def shape(self, x: float) -> float:
        return x + math.sin(math.pi * x) / math.pi


class LATSSchedule(_RampSchedule):
    """LATS, the reference's exact per-epoch form (``--gradual sinp --low-freq``).

    With E epochs after ``start_step``, nb = ``steps_per_epoch``, epoch e = 0…E−1 and iteration b = 1…nb:
    d(e, b) = D·[B(e) + b·(1 + cos(πe/E)) / (nb·(E + 1))], where
    B(e) = Σ_{k<e} (1 + cos(πk/E)) / (E + 1) = (1 + 2e + sin(π(e − ½)/E) / sin(π/(2E))) / (2(E + 1)).
    The increment in epoch e is proportional to a per-epoch cosine LR, and d reaches D after the last step.
    """

    def __init__(self, final_threshold: float, total_steps: int, steps_per_epoch: int, start_step: int = 0):
        super().__init__(final_threshold, total_steps, start_step)
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
        span = self.total_steps - self.start_step
        if span % steps_per_epoch:
            raise ValueError(
                f"steps_per_epoch={steps_per_epoch} must divide total_steps - start_step = {span}: "
                "LATS spreads each epoch's increment over whole epochs"
            )
        self.steps_per_epoch = steps_per_epoch
        self.epochs = span // steps_per_epoch

    def epoch_base(self, e: int) -> float:
        """B(e), the fraction of D reached at the start of epoch e (closed form)."""
        E = self.epochs
        return (1 + 2 * e + math.sin(math.pi * (e - 0.5) / E) / math.sin(math.pi / (2 * E))) / (2 * (E + 1))

    def threshold_at(self, step: int) -> float:
        n = step - self.start_step
        if n <= 0:
            return 0.0
        if n >= self.epochs * self.steps_per_epoch:
            return self.final_threshold
        e, b = divmod(n - 1, self.steps_per_epoch)
        b += 1
        E, nb = self.epochs, self.steps_per_epoch
        frac = self.epoch_base(e) + b * (1 + math.cos(math.pi * e / E)) / (nb * (E + 1))
        return self.final_threshold * frac


class PGHSchedule(_RampSchedule):
    """Proximal-gradient homotopy: increments ∝ β^x·(1 + cos(πx)), normalised so f(0) = 0 and f(1) = 1.

    With L = ln β: f(x) = [π²(β^x − 1) + (β^x − 2)L² + β^x·L·(L·cos πx + π·sin πx)] / [π²(β − 1) − 2L²].
    β < 1 front-loads the threshold (early pruning); β > 1 back-loads it. β = 1 is S-LATS.
    """

    def __init__(self, final_threshold: float, total_steps: int, beta: float, start_step: int = 0):
        super().__init__(final_threshold, total_steps, start_step)
        self.beta = check_number("beta", beta, above=0)
        if self.beta == 1:
            raise ValueError("beta must be a finite number > 0 and != 1 (beta=1 is schedule='s-lats'), got "
                             f"{beta!r}")

    def shape(self, x: float) -> float:
        beta, L, pi2 = self.beta, math.log(self.beta), math.pi**2
        bx = beta**x
        wave = L * math.cos(math.pi * x) + math.pi * math.sin(math.pi * x)
        num = pi2 * (bx - 1) + (bx - 2) * L * L + bx * L * wave
        return num / (pi2 * (beta - 1) - 2 * L * L)


class CallableSchedule(ThresholdSchedule):
    """Any ``fn(step) -> d``; values must be finite and >= 0."""

    def __init__(self, fn: Callable[[int], float]):
        if not callable(fn):
            raise TypeError(f"schedule must be a callable, got {shown(fn)}")
        self.fn = fn

    def threshold_at(self, step: int) -> float:
        value = self.fn(step)
        try:
            value = float(value)  # a number, or a one-element tensor
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"schedule({step}) must be a finite number >= 0, got {shown(value)}") from None
        return check_number(f"schedule({step})", value, minimum=0)


class LRProportionalSchedule(ThresholdSchedule):
    """Constant λ: d_{k+1} = d_k + λ·η_k, with η_k the LR the optimizer actually used for step k.

    ``d`` stays 0 until ``start_step``. The pruner passes η_k (read from the optimizer after its step and
    before the LR scheduler's), so this works with any LR schedule. ``solve_l1_coefficient`` finds the λ that
    reaches a given final threshold for a known LR scheduler.
    """

    def __init__(self, l1_coefficient: float, start_step: int = 0):
        self.l1_coefficient = check_number("l1_coefficient", l1_coefficient, minimum=0)
        self.start_step = check_int("start_step", start_step, minimum=0)

    def threshold_at(self, step: int) -> float:
        if step > self.start_step:
            raise RuntimeError(
                "LRProportionalSchedule has no closed form; the pruner advances it step by step"
            )
        return 0.0

    def advance(self, step: int, threshold: float, lr: float | None) -> float:
        if step <= self.start_step:
            return 0.0
        if lr is None:
            raise ValueError("schedule='lr' reads the optimizer's learning rate at every step: pass "
                             "optimizer= to the pruner or set pruner.optimizer before the first step()")
        return threshold + self.l1_coefficient * lr

    def state_dict(self) -> dict[str, Any]:
        return {"l1_coefficient": self.l1_coefficient}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = check_number("state_dict['l1_coefficient']", state.get("l1_coefficient"), minimum=0)
        if saved != self.l1_coefficient:  # the pruner's settings check says so first; kept for direct use
            raise ValueError(f"state_dict was saved with l1_coefficient={saved!r}, this schedule has "
                             f"{self.l1_coefficient!r}")


def simulate_learning_rates(
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    total_steps: int,
    steps_per_epoch: int | None = None,
    param_group: int = 0,
) -> list[float]:
    """The LR of each of ``total_steps`` optimizer steps under ``lr_scheduler``, without touching either
    object.

    The scheduler is deep-copied onto a stand-in optimizer with the same hyper-parameters. It is stepped after
    every optimizer step, or after every ``steps_per_epoch`` steps when it is an epoch-level scheduler.
    """
    stand_in = torch.optim.SGD(
        [
            {
                **{k: v for k, v in group.items() if k != "params"},
                "params": [torch.zeros(1, requires_grad=True)],
            }
            for group in optimizer.param_groups
        ]
    )
    sim = copy.deepcopy(lr_scheduler, memo={id(optimizer): stand_in})
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" on the stand-in
        for k in range(total_steps):
            lrs.append(float(stand_in.param_groups[param_group]["lr"]))
            stand_in.step()
            if steps_per_epoch is None or (k + 1) % steps_per_epoch == 0:
                sim.step()
    return lrs


def solve_l1_coefficient(final_threshold: float, learning_rates: list[float], start_step: int = 0) -> float:
    """λ such that Σ_{k>=start_step} λ·η_k = D, i.e. the constant-λ path that ends exactly at D."""
    total = math.fsum(learning_rates[start_step:])
    if total <= 0:
        raise ValueError("the learning rates after start_step sum to 0: no λ can reach the final threshold")
    return final_threshold / total


def _refuse_ignored(schedule: str, given: dict[str, Any], uses: set[str]) -> None:
    ignored = sorted(set(given) - uses)
    if ignored:
        takes = ", ".join(f"{k}=" for k in sorted(uses)) or "none of them"
        raise ValueError(f"schedule={schedule} does not use {', '.join(f'{k}=' for k in ignored)} (it takes "
                         f"{takes}); drop it, or choose the schedule that uses it")


# the pruner's arguments each named schedule uses ("lr": λ given, or solved from D under the LR scheduler)
_USES = {"constant": {"final_threshold", "start_step"},
         "s-lats": {"final_threshold", "total_steps", "start_step"},
         "lats": {"final_threshold", "total_steps", "steps_per_epoch", "start_step"},
         "pgh": {"final_threshold", "total_steps", "beta", "start_step"},
         "lr": {"final_threshold", "total_steps", "lr_scheduler", "steps_per_epoch", "start_step"}}


def build_schedule(
    schedule: str | Callable[[int], float] | ThresholdSchedule,
    *,
    final_threshold: float | None,
    total_steps: int | None,
    start_step: int = 0,
    steps_per_epoch: int | None = None,
    beta: float | None = None,
    l1_coefficient: float | None = None,
    learning_rates: list[float] | None = None,
) -> ThresholdSchedule:
    """Turn the pruner's ``schedule=`` argument into a schedule object, checking the arguments it needs and
    then refusing those it would ignore (``beta=`` beside ``"s-lats"``, a ``final_threshold=`` beside a
    schedule object that has another one). ``learning_rates`` come from the pruner's ``lr_scheduler=``."""
    given = {"final_threshold": final_threshold, "total_steps": total_steps,
             "start_step": start_step or None, "steps_per_epoch": steps_per_epoch, "beta": beta,
             "l1_coefficient": l1_coefficient, "lr_scheduler": learning_rates}
    given = {k: v for k, v in given.items() if v is not None}
    if isinstance(schedule, ThresholdSchedule):
        own = {k: getattr(schedule, k) for k in given if k != "lr_scheduler" and hasattr(schedule, k)}
        clash = sorted(k for k in given if k not in own or differs(own[k], given[k]))
        if clash:
            says = ", ".join(f"{k}={own[k]!r}" for k in clash if k in own) or "none of them"
            raise ValueError(f"schedule={schedule!r} is given with {', '.join(f'{k}=' for k in clash)}, "
                             f"which it does not take from the pruner (it has {says}); set them on the "
                             "schedule object only")
        return schedule
    if not isinstance(schedule, str):
        built = CallableSchedule(schedule)
        _refuse_ignored("a callable", given, set())
        return built
    built = _named_schedule(schedule, final_threshold=final_threshold, total_steps=total_steps,
                            start_step=start_step, steps_per_epoch=steps_per_epoch, beta=beta,
                            l1_coefficient=l1_coefficient, learning_rates=learning_rates)
    name = schedule_name(schedule)
    uses = {"l1_coefficient", "start_step"} if name == "lr" and l1_coefficient is not None else _USES[name]
    _refuse_ignored(repr(schedule), given, uses)
    return built


def _named_schedule(schedule: str, *, final_threshold, total_steps, start_step, steps_per_epoch, beta,
                    l1_coefficient, learning_rates) -> ThresholdSchedule:
    name = schedule_name(schedule)

    def need(value: Any, arg: str) -> Any:
        if value is None:
            raise ValueError(f"schedule={schedule!r} needs {arg}=")
        return value

    if name == "constant":
        return ConstantSchedule(need(final_threshold, "final_threshold"), start_step)
    if name == "s-lats":
        return SLATSSchedule(
            need(final_threshold, "final_threshold"), need(total_steps, "total_steps"), start_step
        )
    if name == "lats":
        return LATSSchedule(
            need(final_threshold, "final_threshold"),
            need(total_steps, "total_steps"),
            need(steps_per_epoch, "steps_per_epoch"),
            start_step,
        )
    if name == "pgh":
        return PGHSchedule(
            need(final_threshold, "final_threshold"),
            need(total_steps, "total_steps"),
            need(beta, "beta"),
            start_step,
        )
    if name == "lr":
        if l1_coefficient is None:
            if final_threshold is None or learning_rates is None:
                raise ValueError(
                    "schedule='lr' needs l1_coefficient=, or final_threshold= with lr_scheduler= and "
                    "total_steps= to solve for it"
                )
            l1_coefficient = solve_l1_coefficient(
                check_number("final_threshold", final_threshold, minimum=0), learning_rates, start_step
            )
        elif final_threshold is not None:
            raise ValueError("schedule='lr' takes l1_coefficient= or final_threshold=, not both")
        return LRProportionalSchedule(l1_coefficient, start_step)
    raise ValueError(
        f"schedule must be one of {SCHEDULE_NAMES}, a callable or a ThresholdSchedule, got {schedule!r}"
    )
