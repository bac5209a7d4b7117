"""``Pruner``: the hooks every pruner here implements, so one training loop drives any of them.

The names follow ``torch.ao.pruning`` (``step``, ``squash``, ``state_dict``) and Torch-Pruning (``regularize``
after ``backward``, regularizer strategies). One iteration of a loop, ours (``experiments/train.py``) or a
user's, for any pruner::

    pruner.epoch_start(epoch)
    for x, y in loader:
        loss = criterion(model(x), y)
        if (term := pruner.regularization()) is not None:  # a loss term: LTP's L0
            loss = loss + term
        optimizer.zero_grad(); loss.backward()
        pruner.regularize()                                # after backward: OCS's group-lasso gradient
        optimizer.step()
        pruner.step()                                      # after optimizer.step(): d, masks, OCS's shrink
    if pruner.epoch_end(epoch):                            # True: parameters were replaced (channels went)
        optimizer = ...                                    # rebuild it (and DDP) over model.parameters()
    log(pruner.log_dict())

=========================  =================================================  ============================
hook                       when                                               does something in
=========================  =================================================  ============================
``regularization()``       add to the loss before ``backward()`` (None: no    LTP (λ·L0)
                           term)
``regularize()``           after ``backward()`` (unscaled grads), before      OCS ``group_lasso``
                           ``optimizer.step()``
``step()``                 after every ``optimizer.step()``, before the LR    every pruner
                           scheduler (or ``attach(optimizer)``)
``epoch_start(epoch)``     before an epoch's first step                       OCS (scores, Ψ, λ)
``epoch_end(epoch)``       after an epoch's last step; returns True when it   OCS (removes the channels)
                           replaced the model's parameters
``structure_change_due``   True when the next ``epoch_end`` will replace      OCS
                           parameters (measure the model before it does)
``extra_param_groups(lr)`` optimizer param groups the pruner adds, before     LTP (its thresholds)
                           the LR scheduler is built
``log_dict()``             the figures to log now (name -> number or None)    every pruner
``state_dict()`` /         the pruner's own state (the model's buffers hold   every pruner
``load_state_dict()``      the rest)
``squash()``               bake the pruning into plain weights and detach     weight pruners
=========================  =================================================  ============================

The defaults do nothing, so a loop calls every hook on every pruner, never ``hasattr``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Pruner:
    """The protocol's do-nothing defaults; see the module docstring for when a loop calls each hook."""

    model: nn.Module

    def regularization(self) -> torch.Tensor | None:
        """A term to add to the loss before ``backward()``, or None."""
        return None

    def regularize(self) -> None:
        """After ``backward()`` and before ``optimizer.step()``, with unscaled gradients: change them."""

    def step(self) -> None:
        """After every ``optimizer.step()``: move the pruning on by one step."""

    def epoch_start(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (0-based, increasing)."""

    def epoch_end(self, epoch: int) -> bool:
        """After the last step of ``epoch``. True when the model's parameters were replaced: build a new
        optimizer over ``model.parameters()`` (and re-wrap DDP) before the next step."""
        return False

    @property
    def structure_change_due(self) -> bool:
        """True when the next :meth:`epoch_end` will replace parameters."""
        return False

    def extra_param_groups(self, lr: float | None = None) -> list[dict[str, Any]]:
        """Param groups to add (``optimizer.add_param_group``) to an optimizer built before the pruner, and
        before the LR scheduler is built; ``lr`` is their learning rate (None: the optimizer's default)."""
        return []

    def log_dict(self) -> dict[str, float | None]:
        """The pruner's figures now, by name (None: not defined at this point of the run)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; validates first and changes nothing when it raises."""

    def squash(self) -> nn.Module:
        """Bake the pruning into the model's plain weights; returns the model."""
        return self.model
