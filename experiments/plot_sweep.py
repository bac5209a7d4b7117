"""Plots and tables from a sweep's results.csv: accuracy against weight sparsity, synaptic operations and
energy.

    python -m experiments.plot_sweep runs/sweep_fmnist_sew18/results.csv [more.csv ...] \\
        --out docs/img/sweep_sew18 --title "SEW ResNet-18 x0.25, T=4, Fashion-MNIST" --at 0.8 0.9 0.95 \\
        --at-ops 1e5 2e5

Writes OUT/accuracy_vs_sparsity.png, OUT/accuracy_vs_ops.png, OUT/accuracy_vs_energy.png and OUT/table.md, and
prints the tables. Every point is one (method, strength) averaged over its seeds, with the min-max range over
seeds as error bars; dense is a horizontal line with its range shaded. The operations axis is SOPs per sample
for SNNs (accumulates that reach a nonzero weight) and multiply-accumulates on nonzero weights for ANNs (which
have no SOPs); energy is 0.9 pJ per SOP plus 4.6 pJ per MAC (an SNN's real-valued first layer counts as MACs).

The "at equal sparsity" table interpolates each method's mean Acc@1 linearly between its two points that
bracket each sparsity level (only inside the range the method reached; "–" outside), and the seed spread (half
the min-max range over seeds) the same way. ``--at-ops`` adds the same table at equal operations (SOPs for
SNNs, MACs for ANNs), and ``--at-energy`` at equal energy, both interpolated in log scale.

The figures in README.md and docs/results.md come from the committed CSVs in docs/results/ through
``python -m experiments.build_docs_figures``, which uses these functions.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# the order of the methods in tables and legends (experiments.train's --method choices; any other comes last).
# Kept here rather than imported so that tables are built without loading the training pipeline (and torch).
METHOD_ORDER = ("dense", "s-lats", "lats", "pgh", "lr", "early", "pai", "gmp", "ltp", "ocs", "ocs-lats")
NUMERIC = ("acc1", "best_acc1", "sparsity", "firing_rate", "sops", "ops", "energy_uj", "energy_ratio", "macs",
           "flops_reduction", "train_seconds")


@dataclass
class Point:
    """One (method, strength), over its seeds: ``mean``, ``low`` and ``high`` per numeric column."""

    method: str
    strength_key: str
    strength: str
    seeds: int
    mean: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]

    def spread(self, column: str) -> float:
        return (self.high[column] - self.low[column]) / 2


def _number(value: str) -> float:
    return float("nan") if value in ("", "None") else float(value)


def read_points(paths: str | Path | list[str | Path]) -> list[Point]:
    """Aggregate one or more results.csv files (e.g. a sweep and its extension) over seeds, in METHOD_ORDER,
    then by sparsity."""
    rows = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        with open(path, newline="") as f:
            part = list(csv.DictReader(f))
        if not part:
            raise ValueError(f"{path} has no rows")
        missing = [c for c in ("method", "strength", "seed", *NUMERIC) if c not in part[0]]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}: is it a sweep's results.csv?")
        rows += part
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["strength_key"], row["strength"])].append(row)
    points = []
    for (method, key, strength), members in groups.items():
        values = {c: [_number(m[c]) for m in members] for c in NUMERIC}
        points.append(Point(method, key, strength, len(members),
                            {c: statistics.fmean(v) for c, v in values.items()},
                            {c: min(v) for c, v in values.items()}, {c: max(v) for c, v in values.items()}))
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(points, key=lambda p: (order.get(p.method, len(order)), p.mean["sparsity"]))


def by_method(points: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        out[p.method].append(p)
    return out


def on_axis(points: list[Point], column: str, log: bool) -> list[Point]:
    """``points`` sorted by ``column``; on a log axis without those at 0 (e.g. a collapsed network's
    operations)."""
    return sorted((p for p in points if p.mean[column] > 0 or not log), key=lambda p: p.mean[column])


def at_level(points: list[Point], column: str, level: float, log: bool = False) -> tuple[float, float] | None:
    """(Acc@1, seed spread) of one method where ``column`` (mean over seeds) equals ``level``, interpolated
    linearly (in log ``column`` with ``log``, which leaves out points at 0, e.g. a collapsed network) between
    the two points that bracket it; None outside the method's range."""
    pts = on_axis(points, column, log)
    scale = math.log if log else float
    for a, b in zip(pts, pts[1:], strict=False):
        lo, hi = a.mean[column], b.mean[column]
        if lo <= level <= hi and hi > lo:
            t = (scale(level) - scale(lo)) / (scale(hi) - scale(lo))
            acc = a.mean["acc1"] + t * (b.mean["acc1"] - a.mean["acc1"])
            return acc, a.spread("acc1") + t * (b.spread("acc1") - a.spread("acc1"))
    exact = [p for p in pts if p.mean[column] == level]
    return (exact[0].mean["acc1"], exact[0].spread("acc1")) if exact else None


def uses_sops(points: list[Point]) -> bool:
    return any(p.mean["sops"] > 0 for p in points)


def _fmt(p: Point, column: str, spec: str, scale: float = 1.0) -> str:
    mean = p.mean[column] * scale
    if math.isnan(mean):
        return "–"
    if p.seeds == 1 or p.high[column] == p.low[column]:
        return format(mean, spec)
    low, high = format(p.low[column] * scale, spec), format(p.high[column] * scale, spec)
    return f"{format(mean, spec)} ({low}–{high})"


def ops_axis(points: list[Point]) -> tuple[str, str]:
    """(name, column) of the operations axis: SOPs for an SNN sweep, MACs on nonzero weights for an ANN."""
    return ("SOPs", "sops") if uses_sops(points) else ("MACs", "ops")


def runs_table(points: list[Point]) -> str:
    """Every (method, strength) over its seeds: Acc@1, sparsity, operations, energy, firing rate, time."""
    ops_name, ops_column = ops_axis(points)
    lines = [f"| method | strength | seeds | Acc@1 (%) | weight sparsity (%) | {ops_name} / sample | "
             "energy (µJ / sample) | energy / dense ANN | firing rate | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        strength = f"{p.strength_key} = {p.strength}" if p.strength_key else "–"
        cells = [p.method, strength, str(p.seeds), _fmt(p, "acc1", ".2f"), _fmt(p, "sparsity", ".1f", 100),
                 _fmt(p, ops_column, ".3g"), _fmt(p, "energy_uj", ".3g"), _fmt(p, "energy_ratio", ".4f"),
                 _fmt(p, "firing_rate", ".4f"), f"{p.mean['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def level_axes(points: list[Point]) -> dict[str, tuple]:
    """axis -> (column, label, log, header of a level) of the interpolated tables: "sparsity", "ops",
    "energy"."""
    ops_name, ops_column = ops_axis(points)
    return {"sparsity": ("sparsity", "weight sparsity", False, lambda v: f"{100 * v:g} %"),
            "ops": (ops_column, f"{ops_name} per sample (interpolated in log {ops_name})", True,
                    lambda v: f"{v:.3g}"),
            "energy": ("energy_uj", "energy per sample (µJ, interpolated in log energy)", True,
                       lambda v: f"{v:g} µJ")}


def level_table(points: list[Point], axis: str, values: list[float]) -> str:
    """Acc@1 ± seed spread of every method but dense, interpolated at each of ``values`` on ``axis``
    ("sparsity", "ops" or "energy"), with its one-line caption."""
    column, label, log, header = level_axes(points)[axis]
    lines = [f"Acc@1 (%) at equal {label}, between each method's bracketing points (± half the range over "
             "seeds, interpolated alike; – where the method did not bracket the level):", "",
             "| method | " + " | ".join(header(v) for v in values) + " |", "|---|" + "---|" * len(values)]
    for method, pts in by_method(points).items():
        if method == "dense":
            continue
        cells = []
        for value in values:
            got = at_level(pts, column, value, log)
            cells.append("–" if got is None else f"{got[0]:.2f} ± {got[1]:.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(points: list[Point], levels: list[float], ops_levels: list[float] = (),
           energy_levels: list[float] = ()) -> str:
    """table.md: the runs table, then the interpolated tables of the levels given."""
    parts = [runs_table(points)]
    for axis, values in (("sparsity", levels), ("ops", ops_levels), ("energy", energy_levels)):
        if values:
            parts.append(level_table(points, axis, list(values)))
    return "\n\n".join(parts)


def plot(points: list[Point], out: Path, title: str, ymin: float | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    groups = by_method(points)
    dense = groups.pop("dense", [])
    sops = uses_sops(points)
    written = []
    for x_col, scale, xlabel, name, log in (
            ("sparsity", 100, "weight sparsity (%)", "accuracy_vs_sparsity.png", False),
            ("sops" if sops else "ops", 1,
             "SOPs per sample" if sops else "MACs on nonzero weights per sample", "accuracy_vs_ops.png",
             True),
            ("energy_uj", 1, "energy per sample (µJ; 0.9 pJ per SOP, 4.6 pJ per MAC)",
             "accuracy_vs_energy.png", True)):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for i, (method, pts) in enumerate(groups.items()):
            pts = on_axis(pts, x_col, log)
            x = [p.mean[x_col] * scale for p in pts]
            y = [p.mean["acc1"] for p in pts]
            xerr = [[(p.mean[x_col] - p.low[x_col]) * scale for p in pts],
                    [(p.high[x_col] - p.mean[x_col]) * scale for p in pts]]
            yerr = [[p.mean["acc1"] - p.low["acc1"] for p in pts],
                    [p.high["acc1"] - p.mean["acc1"] for p in pts]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", ms=4, capsize=2, lw=1.3, label=method,
                        color=colors(i % 10))
            for xi, yi in zip(x, y, strict=True):  # below the axis: a triangle on its edge, with the value
                if ymin is not None and yi < ymin:
                    ax.plot([xi], [ymin], marker="v", ms=7, color=colors(i % 10), clip_on=False)
                    ax.annotate(f"{yi:.0f}", (xi, ymin), textcoords="offset points", xytext=(0, 6),
                                ha="center", fontsize=7, color=colors(i % 10))
        for p in dense:
            ax.axhline(p.mean["acc1"], color="black", ls="--", lw=1, label="dense")
            ax.axhspan(p.low["acc1"], p.high["acc1"], color="black", alpha=0.08)
            if x_col != "sparsity":
                ax.plot([p.mean[x_col]], [p.mean["acc1"]], marker="s", color="black")
        if log:
            ax.set_xscale("log")
        if ymin is not None:
            top = max(p.high["acc1"] for p in points)
            ax.set_ylim(ymin, top + 0.05 * (top - ymin))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Acc@1 (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        written.append(out / name)
        fig.savefig(written[-1], dpi=130)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="a sweep's results.csv (several: drawn together)")
    p.add_argument("--out", required=True, help="folder for the PNGs and table.md")
    p.add_argument("--title", default="Acc@1 against sparsity")
    p.add_argument("--ymin", type=float, default=None,
                   help="lower end of the Acc@1 axis; points below it are marked on the edge with their "
                        "value")
    p.add_argument("--at", nargs="*", type=float, default=[0.8, 0.9, 0.95],
                   help="sparsity levels (fractions) for the equal-sparsity table")
    p.add_argument("--at-ops", nargs="*", type=float, default=[],
                   help="SOPs (SNN) or MACs (ANN) per sample for an equal-operations table")
    p.add_argument("--at-energy", nargs="*", type=float, default=[],
                   help="energies (µJ per sample) for an equal-energy table")
    args = p.parse_args(argv)
    if any(not 0 < lv < 1 for lv in args.at):
        p.error(f"--at levels must be fractions in (0, 1), got {args.at}")
    if any(not lv > 0 for lv in args.at_ops):
        p.error(f"--at-ops levels must be positive operation counts, got {args.at_ops}")
    if any(not lv > 0 for lv in args.at_energy):
        p.error(f"--at-energy levels must be positive energies in µJ, got {args.at_energy}")
    try:
        points = read_points(args.results)
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = tables(points, args.at, args.at_ops, args.at_energy)
    (out / "table.md").write_text(text + "\n")
    print(text)
    for path in [*plot(points, out, args.title, args.ymin), out / "table.md"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
