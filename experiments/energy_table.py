"""The energy table of docs/results.md: dense and S-LATS-pruned SEW ResNet-18 and Spikformer, and the dense
ANN twin, on Fashion-MNIST, under every energy model snn_lats has, from one measurement pass per checkpoint.

    python -m experiments.sweep -c experiments/configs/sweeps/energy_fmnist_sew18.yaml --jobs 2
    python -m experiments.sweep -c experiments/configs/sweeps/energy_fmnist_spikformer.yaml --jobs 2
    python -m experiments.sweep -c experiments/configs/sweeps/energy_fmnist_resnet18.yaml
    python -m experiments.energy_table            # -> docs/results/energy_fmnist*.csv
    python -m experiments.build_docs_figures --write

Each run's final checkpoint (checkpoint_last.pth, what the sweep measured) is measured on the sweeps' test
images (8 batches of 250, as their ``measure`` setting) with ``MeasureSession``; its report is then priced
under the proxy, the Lemaire model with dense, bitmask and CSR weights at 32 and 8 bits, and SpikingJelly's
``estimate_lemaire_energy`` rules (its buffers sized by the batch of 250). energy_fmnist.csv has one row per
run (per-sample figures: µJ and bytes); energy_fmnist_spikingjelly.csv splits each SNN's gap between
SpikingJelly's figure and the exact dense 32-bit one rule by rule (see docs/metrics.md).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from snn_lats.checkpoint import load_checkpoint
from snn_lats.cli.data import eval_split
from snn_lats.cli.measure import build_model
from snn_lats.io import atomic_write
from snn_lats.metrics import MeasureSession
from snn_lats.metrics.energy import (
    Tally,
    neuron_energy_spikingjelly,
    spikingjelly_scope,
    synapse_energy_spikingjelly,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ("energy_fmnist_sew18", "energy_fmnist_spikformer", "energy_fmnist_resnet18")
SETTINGS = [("lemaire", f, b) for f in ("dense", "bitmask", "csr") for b in (32, 8)]
PARTS = ("ops_pj", "addressing_pj", "inout_pj", "params_pj", "potential_pj")
COLUMNS = (["model", "method", "strength", "seed", "acc1", "sparsity", "firing_rate", "samples", "sops",
            "macs", "proxy_uj", "spikingjelly_uj"]
           + [f"lemaire_{f}{b}_uj" for _, f, b in SETTINGS]
           + [f"dense32_{p.removesuffix('_pj')}_uj" for p in PARTS]
           + [f"csr8_{p.removesuffix('_pj')}_uj" for p in PARTS]
           + [f"footprint_{f}{b}_bytes" for f in ("dense", "bitmask", "csr") for b in (32, 8)])
GAP_COLUMNS = ["model", "method", "strength", "seed", "spikingjelly_uj", "batch_buffers_uj",
               "integer_inputs_uj", "spike_fanout_uj", "real_inputs_uj", "neurons_both_uj",
               "neurons_omitted_uj", "products_uj",
               "exact_dense32_uj", "pruning_csr32_uj", "csr8_uj"]


def spikingjelly_gap(session: MeasureSession, exact) -> dict[str, float]:
    """SpikingJelly's figure → the exact dense 32-bit one, one rule at a time (pJ, all samples): its
    buffers sized by the batch, then per kind of row the exact rules against SpikingJelly's with one-sample
    buffers."""
    costs = session.costs
    covered, _, base = spikingjelly_scope()
    has_neurons = any(isinstance(m, base) for m in session.model.modules())
    sj = session.report(energy="lemaire-spikingjelly")
    gap = {"spikingjelly": sj.total["energy"]["total_pj"]}
    sample = {}
    for name, c in session.synapses.items():
        sample[name] = synapse_energy_spikingjelly(c, costs, has_neurons, buffers="sample")
    for name, c in session.neurons.items():
        if isinstance(c.module, covered):
            sample[name] = neuron_energy_spikingjelly(c, costs, buffers="sample")
    total = Tally()
    for tally in sample.values():
        total.add(tally)
    gap["batch_buffers"] = total.result(costs)["total_pj"] - gap["spikingjelly"]
    keys = dict.fromkeys(("integer_inputs", "spike_fanout", "real_inputs", "neurons_both", "neurons_omitted",
                          "products"), 0.0)
    for name, row in exact.layers.items():
        mine = row["energy"]["total_pj"]
        theirs = sample[name].result(costs)["total_pj"] if name in sample else 0.0
        if row["type"] == "neuron":
            keys["neurons_both" if name in sample else "neurons_omitted"] += mine - theirs
        elif row["type"] in ("matmul", "mask", "sum"):
            keys["products"] += mine
        else:
            kinds = {g.kind for g in session.synapses[name].groups.values()}
            key = ("integer_inputs" if "integer" in kinds else "spike_fanout" if "binary" in kinds
                   else "real_inputs")
            keys[key] += mine - theirs
    gap |= keys
    gap["exact_dense32"] = exact.total["energy"]["total_pj"]
    return gap


def measure_run(run: Path, batches: int, batch_size: int) -> tuple[dict, dict | None]:
    result = json.loads((run / "result.json").read_text())
    checkpoint = load_checkpoint(run / "checkpoint_last.pth")
    model = build_model(checkpoint, None, None)
    loader = DataLoader(eval_split(result.get("data", "fashion-mnist"), None), batch_size=batch_size)
    session = MeasureSession(model, energy="lemaire")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coverage is 100 % on these models; the report says what it leaves
        with session:
            for i, (x, y) in enumerate(loader):
                if i == batches:
                    break
                session.run(x, y)
    base = session.report(energy="proxy")
    t = base.total
    n = t["samples"]
    row = {"model": result["model"], "method": result["method"], "strength": result.get("strength") or "",
           "seed": result["seed"], "acc1": result["acc1"], "sparsity": t["weight_sparsity"],
           "firing_rate": t["firing_rate"], "samples": n, "sops": t["sops"] / n, "macs": t["macs"] / n,
           "proxy_uj": t["energy_pj"] / n / 1e6}
    spiking = t["firing_rate"] is not None
    reports = {}
    for energy, fmt, bits in SETTINGS:
        reports[(fmt, bits)] = r = session.report(energy=energy, weight_format=fmt, weight_bits=bits)
        row[f"lemaire_{fmt}{bits}_uj"] = r.total["energy"]["total_pj"] / n / 1e6
    for key, prefix in (((("dense", 32)), "dense32"), (("csr", 8), "csr8")):
        e = reports[key].total["energy"]
        row |= {f"{prefix}_{p.removesuffix('_pj')}_uj": e[p] / n / 1e6 for p in PARTS}
    table = t["footprint"]["table"]
    row |= {f"footprint_{f}{b}_bytes": table[f"{f}{b}"] for f in ("dense", "bitmask", "csr") for b in (32, 8)}
    gap = None
    if spiking:
        sj = session.report(energy="lemaire-spikingjelly").total["energy"]["total_pj"]
        row["spikingjelly_uj"] = sj / n / 1e6
        gap_pj = spikingjelly_gap(session, reports[("dense", 32)])
        gap = {k: row[k] for k in ("model", "method", "strength", "seed")}
        gap |= {f"{k}_uj": v / n / 1e6 for k, v in gap_pj.items()}
        gap["pruning_csr32_uj"] = row["lemaire_csr32_uj"] - row["lemaire_dense32_uj"]
        gap["csr8_uj"] = row["lemaire_csr8_uj"]
    else:
        row["spikingjelly_uj"] = ""
    return row, gap


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(path, text.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the sweeps wrote their runs")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=250)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows, gaps = [], []
    for sweep in SWEEPS:
        runs = sorted((args.runs / sweep / "runs").glob("*/result.json"))
        if not runs:
            p.error(f"no finished run in {args.runs / sweep}: run its sweep first (see --help)")
        for result in runs:
            print(f"measuring {result.parent.relative_to(args.runs)}", flush=True)
            row, gap = measure_run(result.parent, args.batches, args.batch_size)
            rows.append(row)
            if gap is not None:
                gaps.append(gap)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "energy_fmnist.csv", COLUMNS, rows)
    write_csv(args.out / "energy_fmnist_spikingjelly.csv", GAP_COLUMNS, gaps)
    print(f"wrote {args.out / 'energy_fmnist.csv'} and {args.out / 'energy_fmnist_spikingjelly.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
