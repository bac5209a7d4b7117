"""Helpers of the training script, as torchvision's ``references/classification/utils.py``: the distributed
set-up, the RNG state, progress output and the run log (config.yaml, log.csv, TensorBoard, summary.json,
trail)."""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from snn_lats.io import WriteError, atomic_write
from snn_lats.trail import Trail

# --- distributed --------------------------------------------------------------------------------------------


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun (NCCL on CUDA, gloo on the CPU), or a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = device.startswith("cuda")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if use_cuda else "cpu")
    return 0, 1, torch.device(device)


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def finish_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# --- RNG state ----------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict:
    """Every RNG's state as plain containers and tensors (loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "gauss": gauss},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --- progress -----------------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


class Progress:
    """One epoch's progress on rank 0: a tqdm bar on a terminal; without one (nohup, SLURM) a line every
    ``every`` steps with the loss, img/s, the pruner's figures and the ETA of the epoch and of the run."""

    def __init__(self, enabled: bool, epoch: int, epochs: int, steps: int, steps_left_after: int, every: int):
        self.enabled, self.epoch, self.epochs, self.steps = enabled, epoch, epochs, steps
        self.steps_left_after, self.every = steps_left_after, every
        self.start = time.time()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False)

    def update(self, step: int, loss: float, images: int, figures: dict[str, float | None]) -> None:
        """After step ``step`` (1-based) of the epoch, ``images`` seen so far in it (this process)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            return
        if step % self.every and step != self.steps:
            return
        elapsed = time.time() - self.start
        per_step = elapsed / step
        shown = "".join(f"  {k} {v:.4g}" for k, v in figures.items() if v is not None)
        print(f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps}  loss {loss:.4f}  "
              f"{images / elapsed:.0f} img/s{shown}  eta {_duration(per_step * (self.steps - step))} "
              f"(run {_duration(per_step * (self.steps - step + self.steps_left_after))})", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- run log ------------------------------------------------------------------------------------------------

CSV_FIELDS = ["epoch", "train_loss", "val_loss", "acc1", "acc5", "sparsity", "threshold", "l1_coefficient",
              "band_fraction", "stability", "reg_strength", "candidate_macs", "macs", "flops_reduction",
              "firing_rate", "lr", "img_per_s", "seconds"]


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def lock_run_dir(folder: Path):
    """An exclusive ``flock`` on ``folder/.lock``, held while the returned file stays open (the process's
    lifetime: the kernel drops it when the process dies, even by SIGKILL). A second training process on the
    same folder exits with code 2 instead of interleaving its checkpoints with the first one's."""
    import fcntl

    handle = open(folder / ".lock", "a")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        print(f"error: --output-dir {folder} is in use by another training process (it holds "
              f"{folder / '.lock'}); wait for it to end or choose another --output-dir", file=sys.stderr)
        raise SystemExit(2) from None
    return handle


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``NAME.tmp.PID`` files that atomic writes of a killed process left in ``folder`` (and its
    trail), those whose process is gone; returns them."""
    removed = []
    for path in [*folder.glob("*.tmp.*"), *folder.glob("trail/*.tmp.*")]:
        pid = path.name.rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLog:
    """What a run writes beside its checkpoints, on rank 0 only (elsewhere every method does nothing).

    ``config.yaml`` (the resolved args), ``log.csv`` (one row per epoch; on resume, rows of epochs after the
    checkpoint are dropped, since rows are written before the checkpoint), TensorBoard scalars, the trail of
    per-epoch models and ``summary.json``; each file is replaced atomically.
    """

    def __init__(self, out: Path, args, first_epoch: int, enabled: bool, trail: bool):
        self.out, self.enabled = out, enabled
        self.writer = self.trail = None
        if not enabled:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run_dir(out)  # before anything in it is written or deleted
        except OSError as exc:  # a read-only folder, or one on a full disk: the user's to fix, in one line
            raise WriteError(exc.errno, f"cannot write in --output-dir {out}: {exc.strerror or exc}") from exc
        remove_stale_temp_files(out)
        atomic_write(out / "config.yaml", yaml.safe_dump(vars(args), sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(out / "tensorboard")
        self.rows = [CSV_FIELDS]
        if first_epoch > 0 and (out / "log.csv").exists():
            with open(out / "log.csv", newline="") as f:
                logged = list(csv.reader(f))
            self.rows += [r for r in logged[1:] if len(r) == len(CSV_FIELDS) and r[0].isdigit()
                          and int(r[0]) <= first_epoch]
        self._write_csv()
        self.trail = Trail(out / "trail") if trail else None

    def _write_csv(self) -> None:
        text = io.StringIO()
        csv.writer(text).writerows(self.rows)
        atomic_write(self.out / "log.csv", text.getvalue())

    def scalars(self, values: dict[str, float | None], step: int, prefix: str = "") -> None:
        if self.writer is not None:
            for key, value in values.items():
                if _finite(value):
                    self.writer.add_scalar(prefix + key, value, step)

    def epoch(self, row: dict) -> None:
        """Add the epoch's row to log.csv (the whole file replaced: a kill never leaves half a row) and its
        figures to TensorBoard."""
        if not self.enabled:
            return
        self.rows.append([row[k] for k in CSV_FIELDS])
        self._write_csv()
        self.scalars({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def last_row(self) -> dict:
        """The last logged row (a run resumed after its last epoch reports it)."""
        with open(self.out / "log.csv", newline="") as f:
            logged = list(csv.DictReader(f))
        return {k: (None if v in ("", "None") else float(v)) for k, v in logged[-1].items()} if logged else {}

    def summary(self, summary: dict) -> None:
        if self.enabled:
            atomic_write(self.out / "summary.json", json.dumps(summary, indent=2, default=str))

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if getattr(self, "_lock", None) is not None:
            self._lock.close()  # releases the flock
            self._lock = None
