r"""Accuracy against weight sparsity, epoch by epoch, for a few training runs side by side.

    python -m experiments.plot_runs runs/ltp_2 runs/slats_020 --labels "LTP λ=2" "S-LATS D=0.2" \
        --out docs/img/ltp_vs_slats.png

Reads each run's log.csv (the training pipeline writes one row per epoch) and draws one line per run through
its (sparsity, Acc@1) points, the last epoch marked. Prints a markdown table of every run's last epoch.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_log(run: Path) -> list[dict[str, float]]:
    path = run / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a training run's output directory?")
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k in ("epoch", "acc1", "sparsity", "firing_rate")}
                for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="training output directories")
    p.add_argument("--labels", nargs="+", default=None, help="one per run (default: the directory names)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--title", default="Acc@1 against weight sparsity, per epoch")
    args = p.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels has {len(labels)} entries for {len(args.runs)} runs")
    try:
        logs = [read_log(Path(r)) for r in args.runs]
    except FileNotFoundError as exc:
        p.error(str(exc))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in zip(labels, logs, strict=True):
        x = [100 * r["sparsity"] for r in rows]
        y = [r["acc1"] for r in rows]
        (line,) = ax.plot(x, y, marker="o", markersize=3, label=label)
        ax.plot(x[-1:], y[-1:], marker="*", markersize=12, color=line.get_color())
    ax.set_xlabel("weight sparsity of the pruned layers (%)")
    ax.set_ylabel("Acc@1 (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)

    print("| run | epochs | Acc@1 (%) | weight sparsity (%) | firing rate |")
    print("|---|---|---|---|---|")
    for label, rows in zip(labels, logs, strict=True):
        last = rows[-1]
        print(f"| {label} | {int(last['epoch'])} | {last['acc1']:.2f} | {100 * last['sparsity']:.1f} | "
              f"{last.get('firing_rate', float('nan')):.4f} |")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
