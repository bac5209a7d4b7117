"""``SoftThresholdPruner``: LATS soft-threshold pruning (implicit ISTA) for any PyTorch or SpikingJelly
model."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._checks import check_bool, check_int, check_number, check_type, differs, shown
from .base import BasePruner
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers
from .parametrizations import SoftThreshold, latent_weight
from .schedules import ThresholdSchedule, build_schedule, simulate_learning_rates
from .thresholds import LayerScale, resolve_layer_scale


def _overflows(value: float, dtype: torch.dtype) -> bool:
    """Whether ``value`` is too large for a buffer of ``dtype`` (filling it would raise, or give inf)."""
    return abs(value) > torch.finfo(dtype).max


class SoftThresholdPruner(BasePruner):
    """Reparameterize every prunable weight as ``W = sign(θ)·relu(|θ| − d)`` and grow ``d`` on a schedule.

    Args:
        model: the network to prune (before DDP wrapping). SpikingJelly's ``layer.Conv1d/2d/3d`` and
            ``layer.Linear`` are covered through their ``nn`` base classes.
        final_threshold: D, the threshold the schedule ends at. The only sparsity knob: sweep it per model
            (:func:`snn_lats.suggest_threshold` gives the D for a target sparsity of the current weights).
        schedule: ``"s-lats"`` (default), ``"lats"`` (needs ``steps_per_epoch``), ``"pgh"`` (needs ``beta``),
            ``"lr"`` (constant λ: needs ``l1_coefficient``, or ``final_threshold`` with ``lr_scheduler``),
            ``"constant"``, a callable ``step -> d``, or a :class:`~snn_lats.schedules.ThresholdSchedule`.
        total_steps: the optimizer step at which the schedule reaches D.
        ignored_layers: module names or modules left dense (a container ignores everything inside it).
        layer_types: the layer classes to prune.
        layer_scale: per-layer multipliers of the global d: a ``{name: scale}`` dict (others get 1) or a
            callable ``(name, module) -> scale``; :func:`snn_lats.relative_weight_scale` scales each layer's
            threshold by its weight std.
        start_step: d stays 0 until this step (delayed start).
        steps_per_epoch: for ``"lats"``; with ``schedule="lr"`` and ``lr_scheduler`` it marks an epoch-level
            LR scheduler.
        beta: the PGH base (β < 1 front-loads pruning: early pruning).
        l1_coefficient: λ for ``schedule="lr"``.
        optimizer: needed by ``schedule="lr"`` from the first ``step()`` on (here, or set ``pruner.optimizer``
            later, e.g. once a framework has built it); for any schedule it lets the pruner report λ.
        lr_scheduler: with ``schedule="lr"`` and ``final_threshold``: solve for the λ that reaches D exactly
            at ``total_steps`` under this LR schedule.
        compensate: map the dense weights through ``right_inverse`` at preparation, so the model's function is
            unchanged even when the schedule starts above 0. ``False`` with ``schedule="constant"`` is pruning
            at initialization.
        freeze_at: after this many steps, fix the masks: pruned weights stay exactly zero and the rest train
            freely (early pruning).
    """

    # the entries a state_dict() must have ("kind" and "settings" too, unless saved by an older version)
    STATE_KEYS = ("step", "squashed", "layers", "threshold", "last_lr", "last_increment", "schedule_type",
                  "schedule", "scales")

    def __init__(
        self,
        model: nn.Module,
        final_threshold: float | None = None,
        schedule: str | Callable[[int], float] | ThresholdSchedule = "s-lats",
        total_steps: int | None = None,
        *,
        ignored_layers: IgnoredLayers = None,
        layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
        layer_scale: LayerScale = None,
        start_step: int = 0,
        steps_per_epoch: int | None = None,
        beta: float | None = None,
        l1_coefficient: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        compensate: bool = True,
        freeze_at: int | None = None,
    ):
        total_steps = check_int("total_steps", total_steps, minimum=1, optional=True)
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1, optional=True)
        freeze_at = check_int("freeze_at", freeze_at, minimum=0, optional=True)
        compensate = check_bool("compensate", compensate)
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer", optional=True)
        check_type("lr_scheduler", lr_scheduler, torch.optim.lr_scheduler.LRScheduler,
                   "a torch.optim.lr_scheduler.LRScheduler", optional=True)

        learning_rates = None
        if lr_scheduler is not None:
            if optimizer is None or total_steps is None:
                raise ValueError("lr_scheduler= needs optimizer= and total_steps= as well")
            if lr_scheduler.optimizer is not optimizer:
                raise ValueError("lr_scheduler= steps another optimizer than optimizer=; pass the scheduler "
                                 "of the optimizer that trains the model")
            learning_rates = simulate_learning_rates(optimizer, lr_scheduler, total_steps, steps_per_epoch)
        self.schedule = build_schedule(
            schedule,
            final_threshold=final_threshold,
            total_steps=total_steps,
            start_step=start_step,
            steps_per_epoch=steps_per_epoch,
            beta=beta,
            l1_coefficient=l1_coefficient,
            learning_rates=learning_rates,
        )

        super().__init__(model, ignored_layers, layer_types)
        self.scales = resolve_layer_scale(self.layers, layer_scale)
        self.optimizer = optimizer
        self.freeze_at = freeze_at
        self.compensate = compensate
        self.threshold = self.schedule.advance(0, 0.0, None)
        self.last_lr: float | None = None
        self.last_increment = 0.0
        self._lr_group: tuple[int, int] | None = None  # (id(optimizer), group index) cache
        self._written: dict[str, tuple[float, float]] = {}  # (threshold, scale) as last written to each layer

        # checked before the first parametrization, so that a refusal changes nothing
        if optimizer is not None:
            self._check_holds_weights("optimizer", optimizer)
            self._find_lr_group(optimizer)  # one learning rate for the pruned weights
        # the largest threshold the schedule will reach, where it is known
        largest = max(self.threshold, getattr(self.schedule, "final_threshold", 0.0))
        self._check_threshold_fits(largest, "final_threshold" if largest > self.threshold else "threshold")
        initial = self.threshold if self.compensate else 0.0
        self._register(
            lambda name, module: SoftThreshold(self.scales[name], initial).to(module.weight.device,
                                                                              module.weight.dtype)
        )
        self._write_threshold(self.threshold)
        if freeze_at == 0:
            self.freeze()

    def _check_threshold_fits(self, threshold: float, what: str, scales: Mapping[str, float] | None = None
                              ) -> None:
        """Raise unless every layer's threshold buffer (and scale) can hold ``threshold`` times its scale."""
        scales = self.scales if scales is None else scales
        for name, module in self.layers.items():
            weight = latent_weight(module)
            dtype = weight.dtype if weight.is_floating_point() else torch.float32
            if _overflows(scales[name], dtype) or _overflows(threshold * scales[name], dtype):
                raise ValueError(f"{what} = {threshold!r} (times layer_scale[{name!r}] = {scales[name]!r}) "
                                 f"overflows the layer's {dtype} weights (largest "
                                 f"{torch.finfo(dtype).max:.4g})")

    @torch.no_grad()
    def _write_threshold(self, value: float) -> None:
        for name, _, p in self.parametrizations():
            p.set_threshold(value * self.scales[name])
            self._written[name] = (p._value, p._scale_value)

    def _check_model_state(self) -> None:
        # Python mirrors of the buffers, refreshed by the model's load_state_dict: no device sync per step
        for name, _, p in self.parametrizations():
            if (p._value, p._scale_value) != self._written[name]:
                written, scale = self._written[name]
                raise self._stale(
                    f"the model's threshold for {name!r} is {p._value:.6g} (scale {p._scale_value:.4g}), "
                    f"this pruner (at step {self.step_count}) last set {written:.6g} (scale {scale:.4g})")

    def _all_zero_layers(self) -> dict[str, str]:
        entries = list(self.parametrizations())
        theta = [m.parametrizations.weight.original for _, m, _ in entries]
        peaks = torch.stack([(t * p.mask if p.frozen else t).abs().amax().float()
                             for t, (_, _, p) in zip(theta, entries, strict=True)]).tolist()  # one sync
        found = {}
        for (name, _, p), peak in zip(entries, peaks, strict=True):
            if p.frozen and peak == 0:
                found[name] = "its frozen mask keeps no nonzero weight"
            elif not p.frozen and peak <= p._value:
                found[name] = f"its largest |θ| is {peak:.4g}, its threshold d = {p._value:.4g}"
        return found

    def _prepare_attach(self, optimizer: torch.optim.Optimizer) -> None:
        if self.optimizer is not None and self.optimizer is not optimizer:
            raise ValueError("attach(): pruner.optimizer is another optimizer; set pruner.optimizer to this "
                             "one first if it is the one to read the learning rate from")
        self.optimizer = optimizer

    @property
    def frozen(self) -> bool:
        """True once the masks are fixed (``freeze_at`` or ``freeze()``)."""
        return not self.squashed and all(p.frozen for _, _, p in self.parametrizations())

    @property
    def l1_coefficient(self) -> float | None:
        """The implied L1 coefficient of the last step, λ = Δd / lr. None before a step or without an
        optimizer."""
        if self.last_lr is None or self.last_lr == 0:
            return None
        return self.last_increment / self.last_lr

    def log_dict(self) -> dict[str, float | None]:
        """The threshold d and the implied L1 coefficient λ = Δd/lr of the last step."""
        return {"threshold": self.threshold, "l1_coefficient": self.l1_coefficient}

    def _current_lr(self) -> float | None:
        """The LR of the param group holding the pruned weights, as used by the step just taken."""
        if self.optimizer is None:
            return None
        if self._lr_group is None or self._lr_group[0] != id(self.optimizer):
            self._lr_group = (id(self.optimizer), self._find_lr_group(self.optimizer))
        return float(self.optimizer.param_groups[self._lr_group[1]]["lr"])

    def _find_lr_group(self, optimizer: torch.optim.Optimizer) -> int:
        """The index of the param group whose LR the pruned weights train with; raises unless there is one."""
        groups = optimizer.param_groups
        ids = {id(latent_weight(m)) for m in self.layers.values()}
        found = [i for i, g in enumerate(groups) if any(id(p) in ids for p in g["params"])]
        if not found:
            raise ValueError("optimizer does not hold the pruned weights (parametrizations.weight.original)")
        lrs = {float(groups[i]["lr"]) for i in found}
        if len(lrs) > 1:
            raise ValueError("pruned weights sit in param groups with different learning rates "
                             f"{sorted(lrs)}")
        return found[0]

    def _step(self) -> None:
        """Advance the threshold by one optimizer step."""
        lr = self._current_lr()
        previous = self.threshold
        frozen = self.frozen
        if not frozen:
            step = self.step_count + 1
            threshold = check_number(f"the schedule's threshold at step {step}",
                                     self.schedule.advance(step, previous, lr), minimum=0)
            self._check_threshold_fits(threshold, f"the schedule's threshold at step {step}")
        self.step_count += 1  # only now: a step that raised above leaves the pruner as it was
        if not frozen:
            self.threshold = threshold
            self._write_threshold(threshold)
        self.last_lr = lr
        self.last_increment = self.threshold - previous
        if self.freeze_at is not None and self.step_count >= self.freeze_at and not frozen:
            self.freeze()

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the current masks: θ becomes the current W, and W = θ·mask from now on."""
        for _, module, p in self.parametrizations():
            if p.frozen:
                continue
            weight = module.weight
            module.parametrizations.weight.original.copy_(weight)
            p.mask = weight != 0

    def state_dict(self) -> dict[str, Any]:
        """The pruner's own state (the thresholds and θ are also in the model's ``state_dict``)."""
        return {
            **self._base_state(),
            "threshold": self.threshold,
            "last_lr": self.last_lr,
            "last_increment": self.last_increment,
            "schedule_type": type(self.schedule).__name__,
            "schedule": self.schedule.state_dict(),
            "scales": dict(self.scales),
        }

    def _settings(self) -> dict[str, Any]:
        return {"schedule": type(self.schedule).__name__, **self.schedule.settings(),
                "compensate": self.compensate, "freeze_at": self.freeze_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`; the schedule then continues exactly. A state saved
        with another schedule, D, N, β, λ or start is refused, and nothing changes."""
        self._check_base_state(state, self.STATE_KEYS)
        if differs(state["schedule_type"], type(self.schedule).__name__):
            raise ValueError(
                f"state_dict was saved with schedule_type {shown(state['schedule_type'])}, "
                f"this pruner uses {type(self.schedule).__name__}"
            )
        saved_scales = check_type("state_dict['scales']", state["scales"], Mapping, "a dict {layer: scale}")
        missing = sorted(set(self.layers) - set(saved_scales))
        if missing:
            raise ValueError(f"state_dict['scales'] has no scale for layers {missing[:5]}")
        # every entry is checked before the first assignment: a refused state leaves the pruner as it was
        scales = {name: check_number(f"state_dict['scales'][{name!r}]", saved_scales[name], minimum=0)
                  for name in self.layers}
        threshold = check_number("state_dict['threshold']", state["threshold"], minimum=0)
        last_lr = check_number("state_dict['last_lr']", state["last_lr"], minimum=0, optional=True)
        last_increment = check_number("state_dict['last_increment']", state["last_increment"])
        final = getattr(self.schedule, "final_threshold", None)
        if final is not None and threshold > final * (1 + 1e-9):
            raise ValueError(f"state_dict['threshold'] = {threshold!r} is above this schedule's "
                             f"final_threshold {final!r}, which it never exceeds")
        self._check_threshold_fits(threshold, "state_dict['threshold']", scales)
        schedule = check_type("state_dict['schedule']", state["schedule"], Mapping, "a dict")
        try:  # checks it (the schedules here keep no other state)
            self.schedule.load_state_dict(schedule)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state_dict['schedule']: {exc}") from None
        self._load_base_state(state)
        self.scales = scales
        self.threshold = threshold
        self.last_lr = last_lr
        self.last_increment = last_increment
        if not self.squashed:
            for name, _, p in self.parametrizations():
                p.set_scale(self.scales[name])
            self._write_threshold(self.threshold)
