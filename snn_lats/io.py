"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over the target.

A crash at any point leaves either the previous file or the new one, never a truncated one; the temporary
file is removed when writing fails.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import torch


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any]) -> None:
    """Write ``data`` to ``path``: bytes, text as UTF-8, or a function that writes to the open binary file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))
