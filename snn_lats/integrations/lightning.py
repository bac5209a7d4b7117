"""Lightning callback: soft-threshold pruning for any LightningModule (``pip install snn_lats[lightning]``).

    from snn_lats.integrations.lightning import SoftThresholdPruning
    pruning = SoftThresholdPruning(final_threshold=0.08, ignored_layers=["net.fc"])
    trainer = L.Trainer(max_epochs=90, callbacks=[pruning])

- The pruner is prepared in ``setup("fit")``: before Lightning restores a checkpoint's weights, so resuming
  (``trainer.fit(..., ckpt_path=...)``) finds the prepared keys it saved. ``total_steps`` defaults to
  ``trainer.estimated_stepping_batches``.
- At ``on_fit_start`` (optimizers exist by then) the pruner is attached (``pruner.attach``) to the optimizer
  that holds the pruned weights, so it steps right after every real optimizer step and before the LR
  scheduler, also under gradient accumulation and when AMP skips a step.
- It logs ``pruning/threshold`` and ``pruning/l1_coefficient`` every step and ``pruning/sparsity`` every epoch
  through the LightningModule's logger, saves the pruner's state in Lightning checkpoints, and squashes at
  ``on_fit_end`` when ``squash_on_fit_end=True``.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from .._checks import check_bool, check_int, check_type
from ..schedules import needs_total_steps, schedule_name
from ..soft_threshold import SoftThresholdPruner


class SoftThresholdPruning(Callback):
    """Arguments are those of :class:`snn_lats.SoftThresholdPruner` (layer names relative to the
    LightningModule), except ``optimizer`` and ``lr_scheduler``, which come from the trainer."""

    def __init__(self, final_threshold: float | None = None, schedule: Any = "s-lats",
                 total_steps: int | None = None, *, squash_on_fit_end: bool = False, **pruner_kwargs: Any):
        for key in ("optimizer", "lr_scheduler"):
            if key in pruner_kwargs:
                raise ValueError(f"SoftThresholdPruning takes no {key}=: it uses the trainer's")
        if schedule_name(schedule) == "lr" and pruner_kwargs.get("l1_coefficient") is None:
            raise ValueError("SoftThresholdPruning with schedule='lr' needs l1_coefficient=")
        self.final_threshold = final_threshold
        self.schedule = schedule
        self.total_steps = check_int("total_steps", total_steps, minimum=1, optional=True)
        self.squash_on_fit_end = check_bool("squash_on_fit_end", squash_on_fit_end)
        self.pruner_kwargs = pruner_kwargs
        self.pruner: SoftThresholdPruner | None = None
        self._pending_state: dict | None = None
        self._hook = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.pruner is not None:
            return
        total_steps = self.total_steps
        if total_steps is None and needs_total_steps(self.schedule):
            total_steps = int(trainer.estimated_stepping_batches)
        self.pruner = SoftThresholdPruner(pl_module, self.final_threshold, self.schedule, total_steps,
                                          **self.pruner_kwargs)
        if self._pending_state is not None:
            self.pruner.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_fit_start(self, trainer, pl_module) -> None:
        ids = {id(p) for p in self.pruner.weights()}
        holders = [o for o in trainer.optimizers
                   if any(id(p) in ids for g in o.param_groups for p in g["params"])]
        if len(holders) != 1:
            raise ValueError(f"SoftThresholdPruning needs exactly one optimizer holding the pruned weights, "
                             f"found {len(holders)}")
        if self._hook is not None:  # a previous fit that ended in an exception left it attached
            self._hook.remove()
        self.pruner.optimizer = holders[0]  # this fit's optimizer, also on a second fit
        self._hook = self.pruner.attach(holders[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = {"pruning/threshold": self.pruner.threshold}
        if self.pruner.l1_coefficient is not None:
            metrics["pruning/l1_coefficient"] = self.pruner.l1_coefficient
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("pruning/sparsity", self.pruner.sparsity_report().sparsity, on_epoch=True)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.squash_on_fit_end:
            self.pruner.squash()

    def state_dict(self) -> dict[str, Any]:
        return self.pruner.state_dict() if self.pruner is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (``{}``: saved before the pruner existed, nothing to restore). Before
        ``setup`` it is kept until the pruner exists; a state that cannot be a pruner's is refused now."""
        check_type("state_dict", state_dict, dict, "a dict (the callback's state_dict())")
        if not state_dict:
            return
        if self.pruner is None:  # restored before setup: apply once the pruner exists, checked whole then
            missing = sorted(set(SoftThresholdPruner.STATE_KEYS) - state_dict.keys())
            if missing:
                raise ValueError(f"state_dict is not a SoftThresholdPruner's state: it is missing the keys "
                                 f"{missing}")
            self._pending_state = state_dict
        else:
            self.pruner.load_state_dict(state_dict)


__all__ = ["SoftThresholdPruning"]
