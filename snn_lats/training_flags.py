"""Switching a model's mode without losing its modules' own flags.

``model.train(flag)`` sets every submodule, so restoring only the top-level flag after an ``eval()`` turns a
BatchNorm the user froze (``bn.eval()`` inside a training model) back to train mode. Everything in snn_lats
that switches modes restores each module's own flag instead.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def preserved_training_flags(model: nn.Module) -> Iterator[None]:
    """Every module's ``training`` flag as it was on entry, restored on exit (also after an error)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
