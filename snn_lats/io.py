"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over the target.

A crash at any point leaves either the previous file or the new one, never a truncated one; the temporary
file is removed when writing fails.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import torch


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only folder); the message names the file, and
    ``errno`` is the system's."""


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any]) -> None:
    """Write ``data`` to ``path``: bytes, text as UTF-8, or a function that writes to the open binary file.

    A failure of the file system (no space, no permission) is a :class:`WriteError` naming ``path``; the
    previous file is then untouched and no temporary file is left."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    guarded = None
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                guarded = _Guarded(f)
                data(guarded)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        # torch.save reports a failed write as a RuntimeError of its own: the file system's error is kept
        failed = exc if isinstance(exc, OSError) else guarded.error if guarded is not None else None
        if failed is None or isinstance(failed, WriteError):
            raise
        raise WriteError(failed.errno, f"cannot write {path}: {failed.strerror or failed}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _Guarded:
    """The open file as a writer function sees it, remembering the OSError of a failed write."""

    def __init__(self, f: IO[bytes]):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))
