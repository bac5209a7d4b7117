"""Rebuild every generated table and figure of README.md and docs/results.md from the committed files.

    python -m experiments.build_docs_figures                  # print every generated region
    python -m experiments.build_docs_figures sweep-table      # print one
    python -m experiments.build_docs_figures --write          # rewrite them in place (+ docs/img/*/table.md)
    python -m experiments.build_docs_figures --write --plots  # and redraw docs/img/sweep_*/*.png
    python -m experiments.build_docs_figures --check          # exit 1, with a diff, where a file differs

A generated region of a Markdown file sits between two comment lines,

    <!-- generated: NAME -->
    ...
    <!-- end generated -->

and its text comes from REGIONS[NAME] below, which reads only files in docs/results/: the sweeps'
results.csv copies (sweep_fmnist_*.csv), the per-epoch logs of the LTP comparison (ltp_vs_slats_*.csv), and
one `make demo` run: its log.csv and summary.json (demo_digits_log.csv, demo_digits_summary.json) and
experiments.benchmark_sparsity's JSON of its best checkpoint (demo_digits_sparsity.json). A region indented in
its file (inside a list item) is indented alike. Edit a generated region's words here, not in the Markdown:
--check, and tests/test_docs_figures.py, fail when the two differ. The qualitative claims of the generated
prose ("wins", "a tie") are checked against the numbers, so a CSV that contradicts one stops the build instead
of leaving a stale sentence.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import functools
import json
import math
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments import plot_sweep
from experiments.plot_sweep import Point

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCS = ("README.md", "docs/results.md", "docs/metrics.md")
BEGIN = re.compile(r"^(?P<indent>[ \t]*)<!-- generated: (?P<name>[\w-]+) -->[ \t]*$")
END = re.compile(r"^[ \t]*<!-- end generated -->[ \t]*$")

SCHEDULES = ("s-lats", "lats", "pgh", "lr")  # the soft-threshold schedules of the comparison
CONSTANT_LAMBDA = ("s-lats", "lats", "lr")
NAMES = {"dense": "dense", "s-lats": "S-LATS", "lats": "LATS", "pgh": "PGH", "lr": "`lr`"}


@dataclass(frozen=True)
class Sweep:
    """Sweep CSVs drawn and tabulated together, with the levels of their interpolated tables."""

    csvs: tuple[str, ...]
    img: str  # docs/img folder of its plots and table.md
    title: str
    ymin: float | None
    at: tuple[float, ...]
    at_ops: tuple[float, ...] = ()
    at_energy: tuple[float, ...] = ()


SWEEPS = {
    "sew18": Sweep(("sweep_fmnist_sew18.csv", "sweep_fmnist_sew18_extreme.csv"), "docs/img/sweep_sew18",
                   "SEW ResNet-18 x0.25, T=4, LIF, Fashion-MNIST 10k, 6 epochs, 2 seeds", 70,
                   (0.8, 0.9, 0.95, 0.985, 0.993), (3.5e4, 7e4, 1.4e5, 2.5e5), (0.66, 1, 1.5, 2)),
    "resnet18": Sweep(("sweep_fmnist_resnet18.csv", "sweep_fmnist_resnet18_extreme.csv"),
                      "docs/img/sweep_resnet18",
                      "ResNet-18 x0.25 (ANN twin), Fashion-MNIST 10k, 6 epochs, 2 seeds", 70,
                      (0.8, 0.9, 0.95, 0.985), (1.5e5, 2e5, 3.3e5, 5.5e5)),
    "spikformer": Sweep(("sweep_fmnist_spikformer.csv", "sweep_fmnist_spikformer_extend.csv"),
                        "docs/img/sweep_spikformer",
                        "Spikformer (32 dims, 1 block, T=2), Fashion-MNIST 5k, 5 epochs, 2 seeds", None,
                        (0.6, 0.7, 0.8, 0.9), (1e5, 1.5e5, 2e5, 3e5), (0.2, 0.3, 0.4)),
}
# every run of "Every method side by side" (README's count): the two main sweeps, their extensions, the pilot
# that chose the strengths, and the investigations
COMPARISON_CSVS = ("sweep_fmnist_sew18_pilot.csv", "sweep_fmnist_sew18.csv", "sweep_fmnist_sew18_extreme.csv",
                   "sweep_fmnist_sew18_epoch_lr.csv", "sweep_fmnist_sew18_long.csv",
                   "sweep_fmnist_sew18_stem_scale.csv", "sweep_fmnist_resnet18.csv",
                   "sweep_fmnist_resnet18_extreme.csv", "sweep_fmnist_resnet18_paper_optimizer.csv")


# --- reading the committed files --------------------------------------------------------------------------


@functools.cache
def points(*csvs: str) -> tuple[Point, ...]:
    return tuple(plot_sweep.read_points([RESULTS / c for c in csvs]))


def sweep_points(name: str) -> list[Point]:
    return list(points(*SWEEPS[name].csvs))


def rows(csv_name: str) -> list[dict]:
    with open(RESULTS / csv_name, newline="") as f:
        return list(csv.DictReader(f))


def method_points(pts: list[Point], method: str) -> list[Point]:
    return [p for p in pts if p.method == method]


def one(pts: list[Point], method: str, strength: str | None = None) -> Point:
    found = [p for p in method_points(pts, method) if strength is None or p.strength == strength]
    if len(found) != 1:
        raise ValueError(f"expected one {method} point with strength {strength!r}, found {len(found)}")
    return found[0]


def acc_spread(name: str, method: str, axis: str, level: float) -> tuple[float, float] | None:
    """(mean Acc@1, half the seed range) of ``method`` in sweep ``name`` interpolated at ``level`` on ``axis``
    ("sparsity", "ops" or "energy") as the docs' tables do; None outside the method's range."""
    pts = sweep_points(name)
    column, _, log, _ = plot_sweep.level_axes(pts)[axis]
    return plot_sweep.at_level(method_points(pts, method), column, level, log)


def acc(name: str, method: str, axis: str, level: float) -> float | None:
    got = acc_spread(name, method, axis, level)
    return None if got is None else got[0]


def need(value: float | None, what: str) -> float:
    if value is None:
        raise ValueError(f"{what}: outside the committed CSVs' range")
    return value


def check(claim: bool, what: str) -> None:
    """A qualitative statement of the generated prose that the numbers must bear out."""
    if not claim:
        raise ValueError(f"the committed CSVs no longer support the generated claim: {what}")


def margins(name: str, methods: tuple[str, ...], others: tuple[str, ...], axis: str,
            levels: tuple[float, ...]) -> list[float]:
    """acc(method) - acc(other) at every level where both are defined."""
    out = []
    for level in levels:
        for m in methods:
            for o in others:
                a, b = acc(name, m, axis, level), acc(name, o, axis, level)
                if a is not None and b is not None:
                    out.append(a - b)
    return out


def leads(name: str, other: str, axis: str, levels: tuple[float, ...], method: str = "s-lats"):
    """acc(method) - acc(other) at each level (None where either is undefined)."""
    out = []
    for level in levels:
        a, b = acc(name, method, axis, level), acc(name, other, axis, level)
        out.append(None if a is None or b is None else a - b)
    return out


def defined(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def pgh_tie(levels: tuple[float, ...]) -> float:
    """The largest |Acc@1(PGH) - Acc@1(best constant-λ schedule)| in the SNN sweep at ``levels``, checking at
    each level that the gap is within the two's interpolated seed spreads."""
    worst = 0.0
    for level in levels:
        pgh = acc_spread("sew18", "pgh", "sparsity", level)
        rivals = [got for m in CONSTANT_LAMBDA if (got := acc_spread("sew18", m, "sparsity", level))]
        if pgh is None or not rivals:
            continue
        best = max(rivals)
        check(abs(best[0] - pgh[0]) <= best[1] + pgh[1],
              f"PGH ties the best constant-λ schedule within the seed spreads at {level_name(level)}")
        worst = max(worst, abs(best[0] - pgh[0]))
    return worst


def seeds_text(pts: list[Point]) -> str:
    lo, hi = min(p.seeds for p in pts), max(p.seeds for p in pts)
    return f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"


def stem_pruned(p: Point, dense: Point) -> float:
    """Share of the SNN stem's MACs pruned. The stem is the only layer fed real values, so an SNN's MACs (on
    nonzero weights) are its stem's: 1 - MACs / dense MACs."""
    return 1 - (p.mean["ops"] - p.mean["sops"]) / (dense.mean["ops"] - dense.mean["sops"])


def energy_gap() -> tuple[float, float, float, float]:
    """(level, GMP, S-LATS, GMP - S-LATS) at the lowest energy level both reach in the SNN sweep."""
    for level in SWEEPS["sew18"].at_energy:
        g, s = acc("sew18", "gmp", "energy", level), acc("sew18", "s-lats", "energy", level)
        if g is not None and s is not None:
            return level, g, s, g - s
    raise ValueError("GMP and S-LATS share no energy level")


def stem_scale(scale: int) -> Point:
    return one(list(points("sweep_fmnist_sew18_stem_scale.csv")), "s-lats", f"conv1={scale}")


# --- formats ------------------------------------------------------------------------------------------------


def e_notation(value: float, digits: int = 2) -> str:
    """6.5e5, 7e4, 1.4e5: ``digits`` significant digits, no '+' and no trailing zeros."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e{int(exponent)}"


def pct(fraction: float, spec: str = ".1f") -> str:
    return format(100 * fraction, spec)


def level_name(level: float) -> str:
    return f"{100 * level:g} %"


def spread_text(p: Point, column: str = "acc1", spec: str = ".2f") -> str:
    """'83.61 (83.07–84.13)': the mean and the range over seeds."""
    return f"{p.mean[column]:{spec}} ({p.low[column]:{spec}}–{p.high[column]:{spec}})"


def points_text(value: float) -> str:
    return f"{value:.1f} point" + ("" if f"{value:.1f}" == "1.0" else "s")


def listing(values: list[float | None], levels: tuple[float, ...], after: str = "") -> str:
    """'1.3 points{after} at 80 %, 3.3 at 90 % and 5.5 at 95 %', over the levels where a value exists."""
    pairs = [(v, lv) for v, lv in zip(values, levels, strict=True) if v is not None]
    parts = [f"{v:.1f} at {level_name(lv)}" for v, lv in pairs]
    parts[0] = f"{pairs[0][0]:.1f} points{after} at {level_name(pairs[0][1])}"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


WIDTH = 114  # the docs' line length
KEEP_TOGETHER = ((" = ", "\0=\0"), (" %", "\0%"), (" µJ", "\0µJ"), (" SOPs", "\0SOPs"))


def _fill(text: str, first: str, rest: str) -> str:
    """``text`` wrapped at WIDTH, never between a number and its unit or around an '='."""
    for plain, glued in KEEP_TOGETHER:
        text = text.replace(plain, glued)
    text = textwrap.fill(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                         break_on_hyphens=False)
    for plain, glued in KEEP_TOGETHER:
        text = text.replace(glued, plain)
    return text


def para(text: str, indent: str = "") -> str:
    """A paragraph wrapped at WIDTH, every line indented by ``indent``."""
    return _fill(text, indent, indent)


def item(text: str, depth: int = 0) -> str:
    """A bullet at list depth ``depth`` (0: top level), wrapped at WIDTH."""
    return _fill(text, "  " * depth + "- ", "  " * (depth + 1))


# --- README.md ----------------------------------------------------------------------------------------------


def demo() -> str:
    """The demo's headline, from the committed log and summary of one `make demo` run."""
    log = rows("demo_digits_log.csv")
    summary = json.loads((RESULTS / "demo_digits_summary.json").read_text())
    epochs = len(log)
    check(summary["epoch"] == epochs and float(log[-1]["acc1"]) == summary["acc1"],
          "the summary is the log's last epoch")
    best = max(log, key=lambda r: float(r["acc1"]))  # the first epoch with the best Acc@1: checkpoint_best
    check(float(best["acc1"]) == summary["best_acc1"], "the log's best epoch is the summary's best_acc1")
    lams = [float(r["l1_coefficient"]) for r in log]  # λ = Δd/lr of each epoch's last step
    drift = [abs(v - lams[0]) / lams[0] for v in lams]
    flat = next((i for i, d in enumerate(drift) if d >= 0.01), epochs)  # epochs 1..flat are within 1 %
    text = (f"A typical run ([its log](docs/results/demo_digits_log.csv)): **{summary['acc1']:.2f} % "
            f"held-out accuracy at {pct(summary['sparsity'])} % weight sparsity** after the last epoch "
            f"(best: {float(best['acc1']):.2f} % at {pct(float(best['sparsity']))} %, epoch {best['epoch']}; "
            f"D = {summary['config']['final_threshold']:g}, {epochs} epochs). λ is {e_notation(lams[0], 3)} "
            f"in epoch 1 and within 1 % of that through epoch {flat}")
    if flat < epochs - 1:
        text += f", {pct(drift[-2])} % lower by epoch {epochs - 1}"
    if flat < epochs:
        text += f", and {e_notation(lams[-1])} after the last step, where the per-step cosine LR reaches 0"
    return para(text + ".")


def demo_energy() -> str:
    """The spike-level figures of the demo's best checkpoint (experiments.benchmark_sparsity's JSON)."""
    total = json.loads((RESULTS / "demo_digits_sparsity.json").read_text())["total"]
    summary = json.loads((RESULTS / "demo_digits_summary.json").read_text())
    check(round(100 * total["accuracy"], 2) == round(summary["best_acc1"], 2),
          "the measured checkpoint is the demo's best")
    return para("prints the per-layer table and writes JSON, CSV and plots. On the demo's best checkpoint "
                f"([report](docs/results/demo_digits_sparsity.json): {pct(total['weight_sparsity'])} % of "
                "all weights zero, classifier included; firing rate "
                f"{total['firing_rate']:.3f}) the pruned SNN needs {pct(total['energy_ratio'])} % of the "
                f"dense ANN's energy on the {total['samples']} held-out digits. Details: "
                "[docs/metrics.md](docs/metrics.md).")


README_SPARSITY = (0.8, 0.9, 0.95, 0.985)
README_SOPS = (7e4, 1.4e5)


def readme_sweep_intro() -> str:
    runs = sum(len(rows(c)) for c in COMPARISON_CSVS)
    pruned = [p for p in sweep_points("sew18") + sweep_points("resnet18") if p.method != "dense"]
    return para(f"Every method here was trained from scratch with the same budget, {seeds_text(pruned)} "
                "each, on a small SEW ResNet-18 (×0.25, T = 4, LIF) and its ANN twin on Fashion-MNIST. That "
                f"makes {runs} CPU runs, each a row of a CSV in `docs/results/`, all reproducible with "
                "`experiments/sweep.py` (`apt-get install dataset-fashion-mnist` first).")


def readme_sweep_table() -> str:
    pts = sweep_points("sew18")
    dense = one(pts, "dense")
    header = [level_name(v) for v in README_SPARSITY] + [f"{e_notation(v)} SOPs" for v in README_SOPS]
    lines = [para("Acc@1 interpolated to equal weight sparsity and to equal SOPs per sample, as the mean "
                  f"over {seeds_text(pts)} (dense: {dense.mean['acc1']:.2f} % at "
                  f"{e_notation(dense.mean['sops'])} SOPs; – where a method did not reach the level):"), "",
             "| SNN Acc@1 (%) at | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for method in plot_sweep.by_method(pts):
        if method == "dense":
            continue
        cells = [acc("sew18", method, "sparsity", v) for v in README_SPARSITY]
        cells += [acc("sew18", method, "ops", v) for v in README_SOPS]
        lines.append(f"| {method} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def readme_sweep_bullets() -> str:
    wins = (margins("sew18", SCHEDULES, ("gmp", "ltp"), "sparsity", README_SPARSITY)
            + margins("resnet18", SCHEDULES, ("gmp", "ltp"), "sparsity", SWEEPS["resnet18"].at))
    check(min(wins) > 0, "the soft-threshold schedules beat GMP and LTP at every equal-sparsity level")
    ops_wins = (margins("sew18", SCHEDULES, ("gmp", "ltp"), "ops", SWEEPS["sew18"].at_ops)
                + margins("resnet18", SCHEDULES, ("gmp", "ltp"), "ops", SWEEPS["resnet18"].at_ops))
    check(min(ops_wins) > 0, "the soft-threshold schedules beat GMP and LTP at equal SOPs / MACs")
    level, gmp, slats, gap = energy_gap()
    check(gap > 0, "GMP is ahead at equal SNN energy")
    stem4 = stem_scale(4)
    stem_gmp = need(acc("sew18", "gmp", "energy", stem4.mean["energy_uj"]), "GMP at the stem-scaled energy")
    check(stem4.low["acc1"] <= stem_gmp <= stem4.high["acc1"], "the stem threshold ties GMP at equal energy")
    tie = pgh_tie(README_SPARSITY)
    pai_snn = need(acc("sew18", "pai", "sparsity", 0.985), "PaI at 98.5 %")
    pai_ann = min(method_points(sweep_points("resnet18"), "pai"), key=lambda p: p.mean["acc1"])
    check(pai_ann.mean["acc1"] < 11, "pruning at initialization ends at chance in the ANN")
    return "\n".join([
        item("**LATS against GMP and LTP.** At equal weight sparsity the soft-threshold schedules beat GMP "
             f"and LTP everywhere, by {min(wins):.1f}–{max(wins):.1f} points. They also win at equal SOPs."),
        item("**Energy.** At equal energy the SNN's real-valued stem decides the ranking, and plain GMP, "
             f"which prunes the stem hard, is ahead by {points_text(gap)} at {level:g} µJ ({gmp:.2f} % "
             f"against {slats:.2f} %). Giving the stem its own threshold (`--layer-scale conv1=4`) makes it "
             f"a tie ({stem4.mean['acc1']:.2f} % at {stem4.mean['energy_uj']:.2f} µJ, GMP "
             f"{stem_gmp:.2f} %)."),
        item("**Constant λ.** The constant-λ schedules (S-LATS, LATS, `lr`) tie with early pruning (PGH): at "
             f"every level above, PGH is within {tie:.2f} points of the best of them, inside the seed "
             "spreads of the two. They do not beat it, contrary to the paper's claim; the investigation is "
             "in the docs."),
        item(f"**Pruning at initialization** falls apart past 95 %: {pai_snn:.1f} % at 98.5 % in the SNN, "
             f"and {pai_ann.mean['acc1']:.0f} % (chance) in the ANN at {pct(pai_ann.mean['sparsity'])} %."),
    ])


def readme_spikformer() -> str:
    pts = sweep_points("spikformer")
    dense = one(pts, "dense")
    s80, g80 = (need(acc("spikformer", m, "sparsity", 0.8), f"{m} at 80 %") for m in ("s-lats", "gmp"))
    check(s80 > g80, "S-LATS beats GMP at 80 % in the Spikformer")
    check(min(margins("spikformer", ("s-lats",), ("gmp",), "ops", (1.5e5, 2e5))) > 0,
          "S-LATS beats GMP at equal SOPs in the Spikformer")
    cheapest = min(method_points(pts, "s-lats"), key=lambda p: p.mean["energy_uj"])
    g02 = need(acc("spikformer", "gmp", "energy", 0.2), "GMP at 0.2 µJ")
    check(cheapest.mean["energy_uj"] > 0.2 and cheapest.mean["acc1"] < g02,
          "only GMP reaches 0.2 µJ, and S-LATS's cheapest run is below it")
    s03, g03 = (need(acc("spikformer", m, "energy", 0.3), f"{m} at 0.3 µJ") for m in ("s-lats", "gmp"))
    return para(
        "**A spiking transformer.** On SpikingJelly's own Spikformer (32 dims, 1 block, T = 2; its Conv1d "
        "layers and attention matmuls pruned and counted), S-LATS again beats GMP at equal sparsity "
        f"(80 %: {s80:.1f} % against {g80:.1f} %) and at equal SOPs. GMP, which prunes the stem, again "
        f"reaches the lowest energies ({g02:.1f} % at 0.2 µJ; S-LATS's cheapest run, "
        f"{cheapest.mean['energy_uj']:.2f} µJ, collapsed to {cheapest.mean['acc1']:.1f} %), though at 0.3 µJ "
        f"S-LATS is ahead ({s03:.1f} % "
        f"against {g03:.1f} %). That model is undertrained (dense {dense.mean['acc1']:.1f} %) and its seeds "
        "spread widely: "
        "[docs/results.md](docs/results.md#a-spiking-transformer-spikformer-on-fashion-mnist).")


# --- docs/results.md ----------------------------------------------------------------------------------------


LTP_RUNS = (("dense, the starting checkpoint (6 epochs)", "ltp_vs_slats_dense.csv", False),
            ("dense fine-tune (6 more epochs)", "ltp_vs_slats_dense_ft.csv", False),
            ("S-LATS, D = 0.12", "ltp_vs_slats_slats_012.csv", False),
            ("S-LATS, D = 0.2", "ltp_vs_slats_slats_020.csv", False),
            ("LTP, l0_weight = 2", "ltp_vs_slats_ltp_2.csv", True),
            ("LTP, l0_weight = 5", "ltp_vs_slats_ltp_5.csv", True))


def ltp_vs_slats() -> str:
    lines = ["| run | final Acc@1 (%) | weight sparsity (%) | firing rate | best trail entry at ≥ 90 % "
             "sparsity |", "|---|---|---|---|---|"]
    for label, name, trail in LTP_RUNS:
        log = rows(name)
        last, entry = log[-1], ""
        if trail:  # every epoch's hard-masked network is a trail entry, with the epoch's logged Acc@1
            ok = [r for r in log if float(r["sparsity"]) >= 0.9]
            if ok:
                best = max(ok, key=lambda r: float(r["acc1"]))
                entry = (f"epoch {best['epoch']}: {float(best['acc1']):.2f} % at "
                         f"{pct(float(best['sparsity']))} %")
        sparsity = float(last["sparsity"])
        cells = [label, f"{float(last['acc1']):.2f}", "0" if sparsity == 0 else pct(sparsity),
                 f"{float(last['firing_rate']):.3f}", entry]
        lines.append(("| " + " | ".join(cells) + " |").replace("|  |", "| |"))
    return "\n".join(lines)


def sweep_dense(name: str, sops_digits: int = 2, energy: str = ".2g") -> str:
    pts = sweep_points(name)
    dense = one(pts, "dense")
    head = (f"Dense: **{dense.mean['acc1']:.2f} %** ({dense.low['acc1']:.2f}–{dense.high['acc1']:.2f}, "
            f"{dense.seeds} seeds)")
    if not plot_sweep.uses_sops(pts):
        return f"{head}, {e_notation(dense.mean['ops'], 3)} MACs per sample."
    text = (f"{head}, {e_notation(dense.mean['sops'], sops_digits)} SOPs and "
            f"{dense.mean['energy_uj']:{energy}} µJ per sample")
    if name == "sew18":
        ann = dense.mean["energy_uj"] / dense.mean["energy_ratio"]
        text += f" ({dense.mean['energy_ratio']:.2f} of the dense ANN's {ann:.1f} µJ)"
    return text + "."


def sweep_levels(name: str, axes: tuple[str, ...] = ("sparsity", "ops", "energy")) -> str:
    sweep, pts = SWEEPS[name], sweep_points(name)
    values = {"sparsity": sweep.at, "ops": sweep.at_ops, "energy": sweep.at_energy}
    return "\n\n".join(plot_sweep.level_table(pts, a, list(values[a])) for a in axes if values[a])


def where_lats_wins() -> str:
    """The bullets of "Where LATS wins, ties or loses": the SNN sweep, its ANN twin, the stem-scale runs."""
    snn, ann = sweep_points("sew18"), sweep_points("resnet18")
    snn_dense, ann_dense = one(snn, "dense"), one(ann, "dense")
    at, ann_at = SWEEPS["sew18"].at[:4], SWEEPS["resnet18"].at  # 80-98.5 %
    snn_ops, ann_ops = SWEEPS["sew18"].at_ops, SWEEPS["resnet18"].at_ops

    gmp_snn, gmp_ann = leads("sew18", "gmp", "sparsity", at), leads("resnet18", "gmp", "sparsity", ann_at)
    check(min(defined(gmp_snn + gmp_ann)) > 0, "S-LATS beats GMP at equal sparsity")
    check(gmp_snn == sorted(gmp_snn) and gmp_ann == sorted(gmp_ann), "the gap to GMP grows with sparsity")
    widest = {m: max(p.spread("acc1") for p in method_points(snn + ann, m)) for m in ("gmp", *SCHEDULES)}
    check(max(widest, key=widest.get) == "gmp", "GMP's seed spread is the widest")
    ops_snn = defined(leads("sew18", "gmp", "ops", snn_ops))
    ops_ann = defined(leads("resnet18", "gmp", "ops", ann_ops))
    check(min(ops_snn + ops_ann) > 0, "S-LATS beats GMP at equal SOPs / MACs")
    s90, g90, g80 = one(snn, "s-lats", "0.09"), one(snn, "gmp", "0.9"), one(snn, "gmp", "0.8")
    s7, g7 = acc("sew18", "s-lats", "ops", 7e4), acc("sew18", "gmp", "ops", 7e4)
    s14, g14 = acc("sew18", "s-lats", "ops", 1.4e5), acc("sew18", "gmp", "ops", 1.4e5)
    stem_uj = (s90.mean["ops"] - s90.mean["sops"]) * 4.6e-6  # the stem's MACs at 4.6 pJ, in µJ
    cheapest = min(method_points(snn, "s-lats"), key=lambda p: p.mean["energy_uj"])
    level, _, _, gap = energy_gap()
    base = one(snn, "s-lats", "0.13")
    stems = [(f"1× d (the main sweep, {base.seeds} seeds)", base)]
    stems += [(f"{k}× d", stem_scale(k)) for k in (2, 3, 4)]
    stem2, stem4 = stem_scale(2), stem_scale(4)
    stem_gmp = need(acc("sew18", "gmp", "energy", stem4.mean["energy_uj"]), "GMP at the stem-scaled energy")
    global_1uj = need(acc("sew18", "s-lats", "energy", 1), "S-LATS at 1 µJ")
    stem_table = "\n".join(
        ["    | stem threshold | stem MACs pruned | Acc@1 (%) | energy (µJ / sample) |",
         "    |---|---|---|---|"]
        + [f"    | {label} | {pct(stem_pruned(p, snn_dense), '.0f')} % | {spread_text(p)} | "
           f"{p.mean['energy_uj']:.2f} |" for label, p in stems])

    ltp_snn, ltp_ann = leads("sew18", "ltp", "sparsity", at), leads("resnet18", "ltp", "sparsity", ann_at)
    ltp_ops = defined(leads("sew18", "ltp", "ops", snn_ops))
    ltp_energy = defined(leads("sew18", "ltp", "energy", SWEEPS["sew18"].at_energy))
    check(min(defined(ltp_snn + ltp_ann) + ltp_ops + ltp_energy) > 0, "S-LATS beats LTP everywhere")
    band = (0.85, 0.97)
    ltp_stems, slats_stems = ([stem_pruned(p, snn_dense) for p in method_points(snn, m)
                               if band[0] <= p.mean["sparsity"] <= band[1]] for m in ("ltp", "s-lats"))
    check(max(ltp_stems) < min(slats_stems), "LTP leaves the stem denser than S-LATS")
    ltp_top = max(method_points(ann, "ltp"), key=lambda p: p.mean["sparsity"])
    slats_at_ltp_top = need(acc("resnet18", "s-lats", "sparsity", ltp_top.mean["sparsity"]), "S-LATS")
    ocs_snn, ocs_ann = leads("sew18", "ocs", "sparsity", at), leads("resnet18", "ocs", "sparsity", ann_at)
    check(min(defined(ocs_snn + ocs_ann)) > 0, "S-LATS beats OCS at equal sparsity")
    pai = leads("sew18", "pai", "sparsity", SWEEPS["sew18"].at)
    check(min(defined(pai)) > 0, "S-LATS beats pruning at initialization")
    ann_pai = sorted(method_points(ann, "pai"), key=lambda p: p.mean["sparsity"])
    ann_pai_fine = [p for p in ann_pai if p.mean["acc1"] >= ann_dense.mean["acc1"] - 0.5]
    ann_pai_next, ann_pai_dead = ann_pai[len(ann_pai_fine)], min(ann_pai, key=lambda p: p.mean["acc1"])
    below = {m: [snn_dense.mean["acc1"] - p.mean["acc1"] for p in method_points(snn, m)
                 if p.mean["sparsity"] < 0.97] for m in SCHEDULES}
    near = max(max(below[m]) for m in ("s-lats", "pgh", "lr"))
    at985 = [snn_dense.mean["acc1"] - p.mean["acc1"] for m in ("s-lats", "pgh", "lr")
             for p in method_points(snn, m) if 0.98 <= p.mean["sparsity"] < 0.99]
    top = max((p for p in method_points(snn, "s-lats") if p.mean["sparsity"] < 0.97),
              key=lambda p: p.mean["sparsity"])
    ann_top = max((p for p in method_points(ann, "s-lats") if p.mean["acc1"] > 50),
                  key=lambda p: p.mean["sparsity"])
    noise = ann_top.spread("acc1") + ann_dense.spread("acc1")
    check(abs(ann_top.mean["acc1"] - ann_dense.mean["acc1"]) <= noise,
          "the ANN's sparsest working S-LATS is within noise of dense")

    def up(value):
        return f"{math.ceil(value * 10) / 10:.1f}"

    return "\n".join([
        item("**Against GMP, at equal weight sparsity: LATS wins, and the gap grows with sparsity.**"),
        item(f"SNN: S-LATS leads by {listing(gmp_snn, at)}.", 1),
        item(f"ANN: the lead is {listing(gmp_ann, ann_at)}.", 1),
        item("GMP's seed spread is also the widest of all the methods.", 1),
        item("**Against GMP, at equal SOPs: LATS still wins.** The margin is smaller: "
             f"{min(ops_snn):.1f}–{max(ops_snn):.1f} points in the SNN, and {min(ops_ann):.1f}–"
             f"{max(ops_ann):.1f} points at equal MACs in the ANN. The reason is that GMP prunes every layer "
             "to the same ratio, so it thins the stem and the first stages, where each weight carries the "
             "most operations. At 90 % weight sparsity GMP has pruned "
             f"{pct(stem_pruned(g90, snn_dense), '.0f')} % of the stem's MACs, S-LATS "
             f"{pct(stem_pruned(s90, snn_dense), '.0f')} %, because a global threshold takes the deep, "
             "small-valued weights first. The result is about "
             f"{s90.mean['sops'] / g90.mean['sops']:.1f}× fewer SOPs for GMP at the same weight sparsity."),
        item(f"SNN: S-LATS reaches {s7:.1f} % at 7e4 SOPs, where GMP reaches {g7:.1f} %; at 1.4e5 SOPs it is "
             f"{s14:.1f} % against {g14:.1f} %.", 1),
        item("**Against GMP, at equal energy: LATS loses in the SNN.** In the SNN the stem conv sees "
             "real-valued pixels. Its MACs (4.6 pJ each) make up most of the energy of any sparse model "
             f"here: {stem_uj:.1f} of the {s90.mean['energy_uj']:.1f} µJ of S-LATS at 90 %."),
        item(f"GMP prunes the stem to the target, so it is at {g80.mean['energy_uj']:.2f} µJ already at 80 % "
             f"weight sparsity ({g80.mean['acc1']:.1f} %). S-LATS needs {pct(cheapest.mean['sparsity'])} % "
             f"weight sparsity to get down to {cheapest.mean['energy_uj']:.2f} µJ, and holds "
             f"{cheapest.mean['acc1']:.1f} % there. Interpolated at {level:g} µJ, GMP is {points_text(gap)} "
             "ahead.", 1),
        item(f"Below {cheapest.mean['energy_uj']:.2f} µJ there is no global-threshold run to compare.", 1),
        item("Giving the stem its own, larger threshold (`--layer-scale conv1=S`) closes the gap. This was "
             f"run at D = 0.13 ({pct(stem4.mean['sparsity'], '.0f')} %) with {stem4.seeds} seeds "
             "([sweep file](../experiments/configs/sweeps/sweep_fmnist_sew18_stem_scale.yaml)). The stem is "
             "the only layer whose operations are MACs, so the share of them pruned is 1 − MACs / dense "
             "MACs:", 1),
        "",
        stem_table,
        "",
        para(f"At {stem4.mean['energy_uj']:.2f} µJ this ties GMP ({stem_gmp:.2f} %) within the seed spread. "
             f"At {stem2.mean['energy_uj']:.0f} µJ it is {stem2.mean['acc1'] - global_1uj:.1f} points above "
             f"the global threshold's {global_1uj:.2f} %. GMP was not tuned in return.", "    "),
        item("In the ANN, energy is proportional to MACs, so the equal-MACs win above holds.", 1),
        item("**Against LTP: LATS wins at every comparison point.**"),
        item(f"SNN: by {listing(ltp_snn, at)}. At equal SOPs the margin is "
             f"{min(ltp_ops):.1f}–{max(ltp_ops):.1f} points, and at equal energy "
             f"{min(ltp_energy):.1f}–{max(ltp_energy):.1f} points. LTP's learned thresholds leave the stem "
             "even denser than the soft threshold does "
             f"({pct(min(ltp_stems), '.0f')}–{pct(max(ltp_stems), '.0f')} % of its MACs pruned at "
             f"{pct(band[0], '.0f')}–{pct(band[1], '.0f')} % weight sparsity, against "
             f"{pct(min(slats_stems), '.0f')}–{pct(max(slats_stems), '.0f')} % for S-LATS).", 1),
        item(f"ANN: by {listing(ltp_ann, ann_at)}. At {pct(ltp_top.mean['sparsity'])} % LTP holds "
             f"{ltp_top.mean['acc1']:.1f} %, {slats_at_ltp_top - ltp_top.mean['acc1']:.1f} below S-LATS.", 1),
        item("This confirms the one-seed fine-tuning comparison at the top of this page.", 1),
        item("**Against OCS: LATS wins on accuracy at equal sparsity.** OCS removes whole channels, so it "
             "trades accuracy for real speed on any hardware; unstructured sparsity gives none (see "
             "[structured.md](structured.md))."),
        item(f"SNN: OCS is {listing(ocs_snn, at, ' behind')}.", 1),
        item(f"ANN: {listing(ocs_ann, ann_at, ' behind')}.", 1),
        item("**Pruning at initialization loses, and collapses at high sparsity.**"),
        item(f"SNN: {min(defined(pai[:3])):.1f}–{max(defined(pai[:3])):.1f} points behind through 95 %, "
             f"{pai[3]:.1f} behind at 98.5 % and {pai[4]:.0f} behind at 99.3 %.", 1),
        item(f"ANN: fine to {pct(ann_pai_fine[-1].mean['sparsity'], '.0f')} %, then "
             f"{ann_pai_next.mean['acc1']:.1f} % at {pct(ann_pai_next.mean['sparsity'], '.0f')} % sparsity. "
             f"At D = {ann_pai_dead.strength} the network collapses to chance "
             f"({ann_pai_dead.mean['acc1']:.0f} %): whole layers lose every weight. The table's \"pai\" "
             f"values beyond {pct(ann_pai_next.mean['sparsity'], '.0f')} % interpolate towards that "
             "collapsed point.", 1),
        item(f"**Against dense.** S-LATS, PGH and `lr` stay within {up(near)} points of dense up to "
             f"{pct(top.mean['sparsity'], '.0f')} % weight sparsity in the SNN (LATS within "
             f"{up(max(below['lats']))}, under the per-step LR it was not designed for), and "
             f"{min(at985):.1f}–{max(at985):.1f} points below it at 98.5 %. The ANN twin is within noise of "
             f"dense even at {pct(ann_top.mean['sparsity'])} % ({ann_top.mean['acc1']:.2f} % against "
             f"{ann_dense.mean['acc1']:.2f} %). This network is large for Fashion-MNIST."),
    ])


def constant_lambda() -> str:
    """The SNN and ANN bullets of "Do the constant-λ schedules beat the others?"."""
    snn, ann = sweep_points("sew18"), sweep_points("resnet18")
    gaps, first, last, shown = [], [], [], []
    for level in SWEEPS["sew18"].at:
        got = {m: a for m in SCHEDULES if (a := acc("sew18", m, "sparsity", level)) is not None}
        if len(got) > 1:
            gaps.append(max(got.values()) - min(got.values()))
            first.append(NAMES[max(got, key=got.get)])
            last.append(NAMES[min(got, key=got.get)])
            shown.append(f"{100 * level:g}")
    check(len(set(first)) > 1, "the order of the schedules changes from one level to the next")
    tie = pgh_tie(SWEEPS["sew18"].at)
    schedule_points = [p for m in SCHEDULES for p in method_points(snn, m)]
    ann_dense = one(ann, "dense")
    ann_off = [abs(p.mean["acc1"] - ann_dense.mean["acc1"]) for m in SCHEDULES for p in method_points(ann, m)]
    check(max(ann_off) < 1, "the ANN's schedules are within noise of dense")
    lats_last = [lv for lv, name in zip(shown, last, strict=True) if name == "LATS"]
    text = (f"**SNN.** Across {pct(min(p.mean['sparsity'] for p in schedule_points), '.0f')}–"
            f"{pct(max(p.mean['sparsity'] for p in schedule_points), '.0f')} % sparsity, S-LATS, LATS, `lr` "
            f"and PGH are within {max(gaps):.2f} points of each other at every level of the table above, and "
            f"PGH is within {tie:.2f} points of the best constant-λ schedule, inside the seed spreads of the "
            f"two ({seeds_text(schedule_points)}). The order changes from one level to the next: first at "
            f"{' / '.join(shown)} % are {' / '.join(first)}, last {' / '.join(last)}.")
    if lats_last:
        text += (f" LATS, last at {' / '.join(lats_last)} %, runs under a per-step LR it was not designed "
                 "for (1. below).")
    return "\n".join([item(text), item("**ANN.** All four are within noise of dense, and of each other, over "
                                       "the whole range.")])


def long_runs() -> str:
    pts = list(points("sweep_fmnist_sew18_long.csv"))
    lines = ["| method | Acc@1 (%) | sparsity (%) |", "|---|---|---|"]
    for p in pts:
        sparsity = "0" if p.mean["sparsity"] == 0 else pct(p.mean["sparsity"])
        lines.append(f"| {NAMES[p.method]} | {spread_text(p)} | {sparsity} |")
    pgh = one(pts, "pgh")
    ahead = [pgh.mean["acc1"] - one(pts, m).mean["acc1"] for m in ("dense", "s-lats", "lr")]
    check(min(ahead) > 0, "PGH is ahead in the 12-epoch runs")
    less = one(pts, "s-lats").mean["sparsity"] - pgh.mean["sparsity"]
    return "\n".join(lines) + "\n\n" + para(
        f"PGH is ahead by {min(ahead):.1f}–{max(ahead):.2f} points. It is also {100 * less:.1f} points less "
        "sparse; near 95 % that is worth about 0.1 point, going by the sweep's slope. Longer training did "
        "not favour constant λ; if anything, early pruning gained.")


def paper_optimizer() -> str:
    name = "sweep_fmnist_resnet18_paper_optimizer.csv"
    pts = list(points(name))
    dense = one(pts, "dense")
    pairs = [[(p.mean["acc1"], p.mean["sparsity"]) for p in method_points(pts, m)] for m in ("lats", "lr")]
    check(pairs[0] == pairs[1], "LATS and lr are the same schedule under a per-epoch cosine")

    def ratio(method):
        r = max(float(x["lambda_ratio"]) for x in rows(name) if x["method"] == method)
        return f"{r:.3f}" if r < 10 else e_notation(r)

    def cell(method, strength):
        found = [p for p in method_points(pts, method) if p.strength == strength]
        return f"{found[0].mean['acc1']:.2f}" if found else "–"

    labels = {"s-lats": f"S-LATS (mismatched LR, λ ratio {ratio('s-lats')})",
              "lats": f"LATS = `lr` (λ ratio {ratio('lats')})", "pgh": "PGH", "gmp": "GMP"}
    lines = [f"It compares D = 0.09 / 0.13, {dense.seeds} seeds each, against dense at "
             f"{dense.mean['acc1']:.2f} %:", "", "| method | ≈ 90 % | ≈ 95 % |", "|---|---|---|"]
    for method, label in labels.items():
        low, high = ("0.9", "0.95") if method == "gmp" else ("0.09", "0.13")
        lines.append(f"| {label} | {cell(method, low)} | {cell(method, high)} |")
    return "\n".join(lines)


SPIKFORMER_STRENGTH = {"final_threshold": "D = {}", "pruning_ratio": "{:.0f} %",
                       "target_flops_reduction": "−{:.0f} % MACs"}
SPIKFORMER_LEVELS = (("sparsity", 0.7), ("sparsity", 0.8), ("sparsity", 0.9), ("ops", 1.5e5), ("ops", 2e5),
                     ("energy", 0.2), ("energy", 0.3))


def spikformer_runs() -> str:
    lines = ["| method | strength | Acc@1 (%) | weight sparsity (%) | SOPs / sample | energy (µJ) |",
             "|---|---|---|---|---|---|"]
    for p in sweep_points("spikformer"):
        if p.method == "dense":
            continue
        form = SPIKFORMER_STRENGTH[p.strength_key]
        strength = form.format(float(p.strength) * 100 if "%" in form else p.strength)
        sops = f"{p.mean['sops']:.2e}".replace("e+0", "e")
        lines.append(f"| {p.method} | {strength} | {spread_text(p)} | {pct(p.mean['sparsity'])} | {sops} | "
                     f"{p.mean['energy_uj']:.3f} |")
    return "\n".join(lines)


def spikformer_levels() -> str:
    header = {"sparsity": level_name, "ops": lambda v: f"{e_notation(v)} SOPs",
              "energy": lambda v: f"{v:g} µJ"}
    lines = ["Acc@1 (%) interpolated at equal weight sparsity, SOPs and energy (± half the seed range; – "
             "outside a method's", "range):", "",
             "| method | " + " | ".join(header[a](v) for a, v in SPIKFORMER_LEVELS) + " |",
             "|---|" + "---|" * len(SPIKFORMER_LEVELS)]
    for method in ("s-lats", "gmp"):
        cells = [acc_spread("spikformer", method, axis, value) for axis, value in SPIKFORMER_LEVELS]
        lines.append(f"| {method} | " + " | ".join("–" if c is None else f"{c[0]:.2f} ± {c[1]:.2f}"
                                                    for c in cells) + " |")
    return "\n".join(lines)


# --- the energy table (issue #26): docs/results.md and docs/metrics.md ------------------------------------


ENERGY_CSVS = ("energy_fmnist.csv", "energy_fmnist_spikingjelly.csv")  # experiments/energy_table.py
ENERGY_FAMILIES = {"sew_resnet18": "SEW ResNet-18", "spikformer": "Spikformer",
                   "resnet18": "ResNet-18 (ANN twin)"}
ENERGY_FORMATS = (("dense", 32), ("dense", 8), ("bitmask", 32), ("bitmask", 8), ("csr", 32), ("csr", 8))


def energy_rows(name: str = "energy_fmnist.csv") -> list[dict]:
    out = []
    for r in rows(name):
        out.append({k: (float(v) if v not in ("", None) and k not in ("model", "method", "strength") else v)
                    for k, v in r.items()})
    return out


def energy_run(r: dict) -> str:
    return "dense" if r["method"] == "dense" else f"S-LATS D = {r['strength']}"


def energy_pick(model: str, which: str) -> dict:
    """The dense run, or the sparsest pruned one that kept its accuracy within 2 points of dense."""
    runs = [r for r in energy_rows() if r["model"] == model]
    dense = next(r for r in runs if r["method"] == "dense")
    if which == "dense":
        return dense
    kept = [r for r in runs if r["method"] != "dense" and r["acc1"] >= dense["acc1"] - 2]
    return max(kept, key=lambda r: r["sparsity"])


def energy_table() -> str:
    head = ("| model | run | Acc@1 (%) | weight sparsity (%) | firing rate | proxy | Lemaire dense 32 | "
            "dense 8 | bitmask 32 | bitmask 8 | CSR 32 | CSR 8 | SpikingJelly's Lemaire |")
    lines = ["Energy per sample (µJ), 2,000 test images; weight sparsity over every conv and linear layer "
             "(the sweeps' figure leaves out the unpruned classifier, so it reads a little higher):", "",
             head, "|---|---|---|---|---|" + "---|" * 8]
    for r in energy_rows():
        rate = "–" if r["firing_rate"] in ("", None) else f"{r['firing_rate']:.3f}"
        sj = "–" if r["spikingjelly_uj"] in ("", None) else f"{r['spikingjelly_uj']:.0f}"
        cells = [ENERGY_FAMILIES[r["model"]], energy_run(r), f"{r['acc1']:.2f}", pct(r["sparsity"]), rate,
                 f"{r['proxy_uj']:.3f}"]
        cells += [f"{r[f'lemaire_{f}{b}_uj']:.2f}" for f, b in ENERGY_FORMATS] + [sj]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Weight footprint (kB: conv and linear weights; dense 32 is NeuroBench's `Footprint` less "
              "biases, BatchNorm and buffers):", "",
              "| model | run | dense 32 | dense 8 | bitmask 32 | bitmask 8 | CSR 32 | CSR 8 |",
              "|---|---|---|---|---|---|---|---|"]
    for r in energy_rows():
        cells = [ENERGY_FAMILIES[r["model"]], energy_run(r)] + [
            f"{r[f'footprint_{f}{b}_bytes'] / 1000:.1f}" for f, b in ENERGY_FORMATS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Where the Lemaire energy goes (µJ per sample):", "",
              "| model | run | weight format | compute | addressing | inputs/outputs | weights and biases | "
              "potentials |",
              "|---|---|---|---|---|---|---|---|"]
    for r in energy_rows():
        for prefix, label in (("dense32", "dense 32"), ("csr8", "CSR 8")):
            parts = [r[f"{prefix}_{p}_uj"] for p in ("ops", "addressing", "inout", "params", "potential")]
            lines.append("| " + " | ".join([ENERGY_FAMILIES[r["model"]], energy_run(r), label]
                                           + [f"{v:.2f}" for v in parts]) + " |")
    return "\n".join(lines)


def _times(a: float, b: float) -> str:
    return f"{a / b:.1f}×"


ENERGY_SWEEP_CSVS = {"sew_resnet18": ("sweep_fmnist_sew18.csv",), "resnet18": ("sweep_fmnist_resnet18.csv",),
                     "spikformer": ("sweep_fmnist_spikformer.csv", "sweep_fmnist_spikformer_extend.csv")}


def energy_reproduction() -> str:
    """Each energy run's Acc@1 beside the same (model, method, strength, seed) in the committed sweep CSVs."""
    same, differ, new = [], [], []
    for r in energy_rows():
        found = [row for name in ENERGY_SWEEP_CSVS[r["model"]] for row in rows(name)
                 if row["method"] == r["method"] and (row["strength"] or "") == (r["strength"] or "")
                 and int(row["seed"]) == int(r["seed"])]
        label = f"{ENERGY_FAMILIES[r['model']]} {energy_run(r)}"
        if not found:
            new.append(f"{label} ({r['acc1']:.2f} %)")
        elif abs(float(found[0]["acc1"]) - r["acc1"]) < 0.005:
            same.append(f"{label} {r['acc1']:.2f} %")
        else:
            differ.append(f"{label} {r['acc1']:.2f} % against {float(found[0]['acc1']):.2f} %")
    text = "The runs that reproduce their sweep's row to the hundredth of a point: " + ", ".join(same) + "."
    if differ:
        text += (" Those that do not: " + "; ".join(differ) + " (something in that model's training path "
                 "changed since its sweep was run; not chased here).")
    if new:
        text += " Not in any sweep: " + ", ".join(new) + "."
    return para(text)


def energy_pruning() -> str:
    out = []
    sew, sew_p = energy_pick("sew_resnet18", "dense"), energy_pick("sew_resnet18", "pruned")
    spk, spk_p = energy_pick("spikformer", "dense"), energy_pick("spikformer", "pruned")
    ann = energy_pick("resnet18", "dense")
    for d, q in ((sew, sew_p), (spk, spk_p)):
        check(abs(q["lemaire_dense32_uj"] / d["lemaire_dense32_uj"] - 1) < 0.15,
              f"dense weights: pruning moves {d['model']}'s Lemaire energy by less than 15 %")
        check(q["lemaire_csr8_uj"] < d["lemaire_csr8_uj"] / 2
              and q["lemaire_bitmask8_uj"] < d["lemaire_bitmask8_uj"] / 2,
              f"sparse formats: pruning halves {d['model']}'s Lemaire energy at least")
    check(sew["lemaire_csr8_uj"] > sew["lemaire_dense8_uj"],
          "on a dense model CSR costs more than dense weights")

    def change(d, q, key):
        return f"{d[key]:.2f} → {q[key]:.2f}"

    out.append(item(
        "**Dense weights: pruning buys almost nothing.** Every spike reads all its fan-out weights, zeros "
        "included (SpikingJelly's and NeuroBench's estimators assume this). Lemaire dense 32-bit, µJ per "
        f"sample: SEW ResNet-18 {change(sew, sew_p, 'lemaire_dense32_uj')} at {pct(sew_p['sparsity'])} % "
        f"weight sparsity ({100 * (sew_p['lemaire_dense32_uj'] / sew['lemaire_dense32_uj'] - 1):+.1f} %), "
        "Spikformer "
        f"{change(spk, spk_p, 'lemaire_dense32_uj')} at {pct(spk_p['sparsity'])} % "
        f"({100 * (spk_p['lemaire_dense32_uj'] / spk['lemaire_dense32_uj'] - 1):+.1f} %, from fewer spikes: "
        f"firing rate {spk['firing_rate']:.3f} → {spk_p['firing_rate']:.3f}). The compute proxy meanwhile "
        f"falls {_times(sew['proxy_uj'], sew_p['proxy_uj'])} and "
        f"{_times(spk['proxy_uj'], spk_p['proxy_uj'])}: "
        "it counts only the accumulates that meet a nonzero weight. This is the right assumption for "
        "dense-weight accelerators and for Speck/DYNAP-CNN, whose kernel memory is fixed by channels and "
        "kernel size: there only channel pruning saves memory."))
    out.append(item(
        "**Sparse weights: pruning pays.** With only nonzeros stored and read, the same runs cost, at 8 "
        f"bits: SEW ResNet-18 CSR {change(sew, sew_p, 'lemaire_csr8_uj')} "
        f"({_times(sew['lemaire_csr8_uj'], sew_p['lemaire_csr8_uj'])} less), bitmask "
        f"{change(sew, sew_p, 'lemaire_bitmask8_uj')} "
        f"({_times(sew['lemaire_bitmask8_uj'], sew_p['lemaire_bitmask8_uj'])}); "
        f"Spikformer CSR {change(spk, spk_p, 'lemaire_csr8_uj')} "
        f"({_times(spk['lemaire_csr8_uj'], spk_p['lemaire_csr8_uj'])}), bitmask "
        f"{change(spk, spk_p, 'lemaire_bitmask8_uj')} "
        f"({_times(spk['lemaire_bitmask8_uj'], spk_p['lemaire_bitmask8_uj'])}). "
        "CSR is what Loihi 2's sparse synapses and Lava's `Sparse` process store. On the dense models the "
        f"indices are pure overhead (SEW: CSR 8-bit {sew['lemaire_csr8_uj']:.2f} µJ against dense 8-bit "
        f"{sew['lemaire_dense8_uj']:.2f}); a sparse format pays only once the weights are sparse."))
    share = sew["dense32_params_uj"] / sew["lemaire_dense32_uj"]
    pshare = spk["dense32_potential_uj"] / spk["lemaire_dense32_uj"]
    compute = sew["dense32_ops_uj"] / sew["lemaire_dense32_uj"]
    check(compute < 0.2, "compute is a small part of the Lemaire energy")
    snn = [r for r in energy_rows() if r["model"] != "resnet18"]
    ratios = [r["lemaire_dense32_uj"] / r["proxy_uj"] for r in snn]
    out.append(item(
        "**Memory, not arithmetic.** Compute is "
        f"{100 * compute:.0f} % of the dense SEW ResNet-18's Lemaire energy (dense 32-bit); reading weights "
        f"is {100 * share:.0f} %, and membrane potentials are {100 * pshare:.0f} % of the Spikformer's (its "
        "potential buffers are read and written at every synaptic event). The SNNs' dense 32-bit Lemaire "
        f"figures are {min(ratios):.0f} to {max(ratios):.0f} times the proxy's."))
    check(ann["lemaire_dense32_uj"] > sew["lemaire_dense32_uj"],
          "the dense ANN twin costs more than the dense SEW")
    out.append(item(
        "**Against the ANN twin** (ResNet-18 ×0.25, dense, "
        f"{ann['acc1']:.2f} %): {ann['proxy_uj']:.2f} µJ under the proxy, "
        f"{ann['lemaire_dense32_uj']:.1f} µJ under Lemaire dense 32-bit, {ann['lemaire_dense8_uj']:.1f} µJ "
        "at 8 bits. The dense SEW ResNet-18 is "
        f"{sew['proxy_uj'] / ann['proxy_uj']:.2f}× of it under the proxy, "
        f"{sew['lemaire_dense32_uj'] / ann['lemaire_dense32_uj']:.2f}× under dense 32-bit Lemaire and "
        f"{sew['lemaire_dense8_uj'] / ann['lemaire_dense8_uj']:.2f}× at 8 bits (its potentials stay 32-bit); "
        "the pruned SEW with bitmask 8-bit weights is "
        f"{sew_p['lemaire_bitmask8_uj'] / ann['lemaire_dense8_uj']:.2f}×. "
        "The ANN row is dense only: a pruned ANN would gain from sparse formats too (its sweep reaches 95 % "
        "at no loss), so that last ratio credits pruning, not spiking."))
    out.append(item(
        "**Footprint.** SEW ResNet-18's weights take "
        f"{sew['footprint_dense32_bytes'] / 1e6:.2f} MB dense 32-bit and "
        f"{sew['footprint_dense8_bytes'] / 1e3:.0f} kB "
        f"dense 8-bit whatever the pruning; at {pct(sew_p['sparsity'])} % they take "
        f"{sew_p['footprint_csr8_bytes'] / 1e3:.1f} kB as CSR 8-bit "
        f"({_times(sew['footprint_dense32_bytes'], sew_p['footprint_csr8_bytes'])} less than dense 32-bit) "
        f"and {sew_p['footprint_bitmask8_bytes'] / 1e3:.1f} kB as bitmask 8-bit. NeuroBench's `Footprint` "
        "reports the dense bytes for both."))
    return "\n".join(out)


def energy_vs_spikingjelly() -> str:
    gaps = {(r["model"], r["method"], r["strength"]): r
            for r in energy_rows("energy_fmnist_spikingjelly.csv")}
    for r in gaps.values():
        total = (r["spikingjelly_uj"] + r["batch_buffers_uj"] + r["integer_inputs_uj"] + r["spike_fanout_uj"]
                 + r["real_inputs_uj"] + r["neurons_both_uj"] + r["neurons_omitted_uj"] + r["products_uj"])
        check(abs(total - r["exact_dense32_uj"]) <= 1e-3 * r["exact_dense32_uj"],
              "the rule-by-rule steps add up from SpikingJelly's figure to the exact one")
        check(abs(r["real_inputs_uj"]) + abs(r["neurons_both_uj"]) < 1e-6,
              "real-input layers and IF/LIF neurons follow the same rules in both")
    head = ("| µJ per sample | SpikingJelly | buffers sized by the batch of 250 | integer inputs as dense "
            "MACs | "
            "fan-out past the border, Π⌈k/s⌉ | neurons it omits | products it cannot see | "
            "**exact, dense 32** | zero weights not read (CSR 32) | CSR 8 |")
    lines = [head, "|---|" + "---|" * 9]
    for model in ("sew_resnet18", "spikformer"):
        for which in ("dense", "pruned"):
            pick = energy_pick(model, which)
            r = gaps[(model, pick["method"], pick["strength"])]
            label = f"{ENERGY_FAMILIES[model]}, " + (
                "dense" if which == "dense" else f"{energy_run(pick)} ({pct(pick['sparsity'])} %)")
            cells = [f"{r['spikingjelly_uj']:.1f}", f"{r['batch_buffers_uj']:+.1f}",
                     f"{r['integer_inputs_uj']:+.1f}", f"{r['spike_fanout_uj']:+.2f}",
                     f"{r['neurons_omitted_uj']:+.2f}", f"{r['products_uj']:+.3f}",
                     f"**{r['exact_dense32_uj']:.2f}**", f"{r['pruning_csr32_uj']:+.2f}",
                     f"{r['csr8_uj']:.2f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


REGIONS: dict[str, Callable[[], str]] = {
    # README.md
    "demo": demo,
    "demo-energy": demo_energy,
    "sweep-intro": readme_sweep_intro,
    "sweep-table": readme_sweep_table,
    "sweep-bullets": readme_sweep_bullets,
    "spikformer-summary": readme_spikformer,
    # docs/results.md
    "ltp-vs-slats": ltp_vs_slats,
    "sew18-dense": lambda: sweep_dense("sew18"),
    "sew18-levels": lambda: sweep_levels("sew18"),
    "resnet18-dense": lambda: sweep_dense("resnet18"),
    "resnet18-levels": lambda: sweep_levels("resnet18", ("sparsity", "ops")),
    "where-lats-wins": where_lats_wins,
    "constant-lambda": constant_lambda,
    "long-runs": long_runs,
    "paper-optimizer": paper_optimizer,
    "spikformer-dense": lambda: sweep_dense("spikformer", sops_digits=3, energy=".2f"),
    "spikformer-runs": spikformer_runs,
    "spikformer-levels": spikformer_levels,
    "energy-runs": energy_reproduction,
    "energy-table": energy_table,
    "energy-pruning": energy_pruning,
    # docs/metrics.md
    "energy-vs-spikingjelly": energy_vs_spikingjelly,
}


# --- the files ----------------------------------------------------------------------------------------------


def rewrite(text: str, path: str = "<text>") -> tuple[str, list[str]]:
    """``text`` with every generated region's body replaced by what REGIONS gives, and the regions' names in
    order. Unknown, unclosed or nested regions are errors."""
    lines = text.split("\n")
    out, names, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        begin = BEGIN.match(line)
        if not begin:
            if END.match(line):
                raise ValueError(f"{path}:{i}: '<!-- end generated -->' outside a region")
            continue
        name, indent = begin["name"], begin["indent"]
        if name not in REGIONS:
            raise ValueError(f"{path}:{i}: unknown generated region {name!r}; known: {sorted(REGIONS)}")
        while i < len(lines) and not END.match(lines[i]):
            if BEGIN.match(lines[i]):
                raise ValueError(f"{path}:{i + 1}: region {name!r} is not closed before the next one opens")
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}: region {name!r} has no '<!-- end generated -->'")
        out += [indent + body if body else "" for body in REGIONS[name]().split("\n")]
        out.append(lines[i])
        names.append(name)
        i += 1
    return "\n".join(out), names


def generated_files() -> dict[str, str]:
    """Whole files this script owns: each sweep's table.md (every (method, strength) and every level)."""
    return {f"{s.img}/table.md": plot_sweep.tables(list(points(*s.csvs)), list(s.at), list(s.at_ops),
                                                   list(s.at_energy)) + "\n" for s in SWEEPS.values()}


def expected(root: Path = ROOT) -> dict[str, str]:
    """Every doc and generated file as this script writes it, by path relative to ``root``."""
    out = {doc: rewrite((root / doc).read_text(), doc)[0] for doc in DOCS}
    out.update(generated_files())
    return out


def differences(root: Path = ROOT) -> dict[str, str]:
    """path -> unified diff, for each file whose text is not what this script generates."""
    diffs = {}
    for path, want in expected(root).items():
        have = (root / path).read_text() if (root / path).exists() else ""
        if have != want:
            diffs[path] = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                                       f"{path} (now)", f"{path} (generated)"))
    return diffs


def redraw() -> list[Path]:
    written = []
    for sweep in SWEEPS.values():
        out = ROOT / sweep.img
        out.mkdir(parents=True, exist_ok=True)
        written += plot_sweep.plot(list(points(*sweep.csvs)), out, sweep.title, sweep.ymin)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the generated regions and files in place")
    mode.add_argument("--check", action="store_true", help="exit 1, with a diff, if any file differs")
    p.add_argument("--plots", action="store_true", help="with --write: also redraw the sweeps' PNGs")
    p.add_argument("regions", nargs="*", help="print only these regions (default: all)")
    args = p.parse_args(argv)
    if args.plots and not args.write:
        p.error("--plots needs --write")
    unknown = sorted(set(args.regions) - set(REGIONS))
    if unknown:
        p.error(f"unknown regions {unknown}; known: {sorted(REGIONS)}")
    if args.check:
        diffs = differences()
        print("".join(diffs.values()), end="")
        print(f"{len(diffs)} file(s) differ from what docs/results/ gives: python -m "
              "experiments.build_docs_figures --write" if diffs else "every generated figure is up to date")
        return 1 if diffs else 0
    if args.write:
        for path, text in expected().items():
            if not (ROOT / path).exists() or (ROOT / path).read_text() != text:
                (ROOT / path).write_text(text)
                print(f"wrote {path}")
        for path in redraw() if args.plots else []:
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    for name in args.regions or REGIONS:
        print(f"<!-- generated: {name} -->\n{REGIONS[name]()}\n<!-- end generated -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
