"""A trail of checkpoints, one per evaluation, each with its accuracy and sparsity, and a pick for a budget.

LTP's use: every epoch's hard-masked network is kept, and the user picks the one that meets an accuracy or
sparsity budget afterwards. The directory holds ``epoch_XXX.pth`` files and ``index.json``, both written
atomically.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ._checks import check_int, check_number, check_type
from .checkpoint import save_checkpoint
from .io import atomic_write

INDEX = "index.json"


@dataclass(frozen=True)
class TrailEntry:
    epoch: int
    acc1: float
    sparsity: float
    path: str  # relative to the trail directory


class Trail:
    """Append hard-masked checkpoints to ``directory``; an epoch written twice (after a resume) is
    replaced."""

    def __init__(self, directory: str | os.PathLike):
        check_type("directory", directory, (str, os.PathLike), "a path")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"directory must be a folder (made if missing), got {os.fspath(directory)!r}, "
                             "which is a file")
        self.directory.mkdir(parents=True, exist_ok=True)

    def add(self, model_state: Mapping[str, torch.Tensor], *, epoch: int, acc1: float, sparsity: float,
            **extra: Any) -> TrailEntry:
        """Save ``{"model": model_state, "epoch", "acc1", "sparsity", **extra}`` and index it."""
        epoch = check_int("epoch", epoch, minimum=0)
        entry = TrailEntry(epoch, check_number("acc1", acc1),
                           check_number("sparsity", sparsity, minimum=0, maximum=1), f"epoch_{epoch:03d}.pth")
        save_checkpoint({"model": dict(model_state), **asdict(entry), **extra}, self.directory / entry.path)
        entries = ([e for e in read_trail(self.directory) if e.epoch != entry.epoch]
                   if self._has_index() else [])
        entries = sorted(entries + [entry], key=lambda e: e.epoch)
        atomic_write(self.directory / INDEX, json.dumps([asdict(e) for e in entries], indent=1))
        return entry

    def _has_index(self) -> bool:
        return (self.directory / INDEX).is_file()


def read_trail(directory: str | os.PathLike) -> list[TrailEntry]:
    """The entries of a trail directory, by epoch."""
    index = Path(directory) / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{os.fspath(directory)!r} holds no trail ({INDEX} not found)")
    try:
        entries = [TrailEntry(**e) for e in json.loads(index.read_text())]
        for i, e in enumerate(entries):  # the types the writer gives them, and a path inside the trail
            check_int(f"entry {i}: epoch", e.epoch, minimum=0)
            check_number(f"entry {i}: acc1", e.acc1)
            check_number(f"entry {i}: sparsity", e.sparsity, minimum=0, maximum=1)
            check_type(f"entry {i}: path", e.path, str, "a file name")
            if Path(e.path).name != e.path or e.path in ("", ".", "..") or "\\" in e.path:
                raise ValueError(f"entry {i}: path must be a file name inside the trail folder, got "
                                 f"{e.path!r}")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{os.fspath(index)!r} is not a valid trail index: {exc}") from None
    return entries


def pick(entries: list[TrailEntry], min_acc: float | None = None,
         min_sparsity: float | None = None) -> TrailEntry | None:
    """The best entry that meets the budget, or None if none does.

    With ``min_sparsity`` (alone or with ``min_acc``): the highest accuracy among those at least that sparse.
    With ``min_acc`` alone: the sparsest among those at least that accurate. Ties go to the other figure, then
    to the later epoch. Accuracy is in the entries' unit (percent in the training pipeline); sparsity is a
    fraction.
    """
    if min_acc is None and min_sparsity is None:
        raise ValueError("pick needs a budget: min_acc, min_sparsity or both")
    min_acc = check_number("min_acc", min_acc, optional=True)
    min_sparsity = check_number("min_sparsity", min_sparsity, minimum=0, maximum=1, optional=True)
    ok = [e for e in entries if (min_acc is None or e.acc1 >= min_acc)
          and (min_sparsity is None or e.sparsity >= min_sparsity)]
    if not ok:
        return None
    if min_sparsity is not None:
        return max(ok, key=lambda e: (e.acc1, e.sparsity, e.epoch))
    return max(ok, key=lambda e: (e.sparsity, e.acc1, e.epoch))
