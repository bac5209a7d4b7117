"""snn-lats-measure: spike-level sparsity of a (pruned) model: weight sparsity, firing rates, exact SOPs, MACs
and energy.

    snn-lats-measure --model my_pkg.nets:build_csnn --model-kwargs '{"width": 8}' \\
        --checkpoint pruned.pth --data fashion-mnist --out runs/sparsity
    snn-lats-measure --checkpoint runs/demo/checkpoint_best.pth --data digits      # inside the repository

(``python -m snn_lats.cli.measure`` is the same, and so is ``python -m experiments.benchmark_sparsity`` in
the repository.) --data NAME and --data-path DIR are experiments.train's (NAME one of digits, fashion-mnist,
cifar10, cifar100, imagenet; DIR the root training took, e.g. the ImageNet folder that holds val/): it
measures on the validation split training evaluates on, with the same transforms
(snn_lats.cli.data.eval_split). The old NAME:DIR forms (cifar10:DIR, imagefolder:DIR) are a one-line error
naming the new spelling. digits needs scikit-learn, the others torchvision, and the plots matplotlib: the
[experiments] extra.

Any model: --model is PACKAGE.MODULE:FACTORY, a callable importable from sys.path (PYTHONPATH; ``python -m``
puts the working directory there) that returns the nn.Module, called with --model-kwargs. A registry name
(sew_resnet18, resnet50, ...) works inside the snn_lats repository, where the ``models`` package is. Models on
SpikingJelly's older clock_driven API (0.0.0.0.12-0.0.0.0.14) are measured as they are; a forward that returns
a tuple, list or dict is read at its first tensor, or at --output INDEX|KEY.

The checkpoint may be a training checkpoint (model under "model"), a prepared or a squashed state_dict. When
it stores "model_name" and "model_kwargs" (as the training pipeline's checkpoints do) --model is not needed; a
channel-pruned model's "structure" rebuilds its widths. A bad import path, a missing
factory, kwargs the factory does not take, or a checkpoint that does not fit the model is a one-line error
(exit code 2). Prints a per-layer table and writes sparsity.json, sparsity.csv and plots (per-layer weight
density, firing rate, operations and energy by component, pruned against dense) into --out.

Energy: --energy proxy (default; E_AC·SOPs + E_MAC·MACs, compute only), lemaire (memory-aware, after Lemaire
et al. 2022: compute, addressing and SRAM traffic of inputs, weights, potentials and outputs) with
--weight-format dense|bitmask|csr and --weight-bits 32|16|8, or lemaire-spikingjelly (SpikingJelly 2.0's
estimate_lemaire_energy, reproduced). The footprint (weight bytes under every format and width) and the
per-sample figures are always reported. --neurobench adds NeuroBench 2.3's metrics under its definitions
(neurobench.json: MetricsReport.to_neurobench) for a SpikingJelly model; docs/metrics.md has every formula.

--dense-checkpoint adds a dense model's firing rates, SOPs and energy to the plots. For a channel-pruned (OCS)
checkpoint the report adds weight sparsity and energy against the unpruned architecture.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from snn_lats import spiking
from snn_lats.checkpoint import load_checkpoint, load_plain_weights, model_state_from_checkpoint
from snn_lats.cli.data import DATASETS, EXTRA, MissingExtraError, eval_split, require
from snn_lats.cli.factory import UsageError, create, json_object, output_selector, registry
from snn_lats.cli.types import finite_float
from snn_lats.io import atomic_write
from snn_lats.metrics import (
    E_AC_PJ,
    E_MAC_PJ,
    ENERGY_MODELS,
    WEIGHT_BITS,
    WEIGHT_FORMATS,
    MetricsReport,
    measure,
)

PROG = "snn-lats-measure"


def build_model(checkpoint: dict, model_name: str | None, model_kwargs: dict | None) -> torch.nn.Module:
    saved = checkpoint.get("model_name") if isinstance(checkpoint, dict) else None
    if model_name is not None and saved is not None and model_name != saved:  # the user's choice, but said
        warnings.warn(f"--model {model_name} overrides the checkpoint's model {saved!r}", stacklevel=2)
    saved_kwargs = checkpoint.get("model_kwargs") if isinstance(checkpoint, dict) else None
    if model_kwargs is not None and saved_kwargs is not None and model_kwargs != saved_kwargs:
        warnings.warn(f"--model-kwargs {model_kwargs} override the checkpoint's {saved_kwargs}", stacklevel=2)
    name = model_name or saved
    if name is None:
        raise UsageError("the checkpoint does not name its model: pass --model (and --model-kwargs)")
    kwargs = model_kwargs if model_kwargs is not None else (checkpoint.get("model_kwargs") or {})
    structure = checkpoint.get("structure") if isinstance(checkpoint, dict) else None  # channel-pruned (OCS)
    model = create(name, kwargs, structure)
    load_plain_weights(model, model_state_from_checkpoint(checkpoint))
    return model


def unpruned_architecture(checkpoint: dict, model_name: str | None, model_kwargs: dict | None):
    """For a channel-pruned checkpoint (one with a "structure"), the registry model it was pruned from."""
    if not isinstance(checkpoint, dict) or checkpoint.get("structure") is None:
        return None
    kwargs = model_kwargs if model_kwargs is not None else (checkpoint.get("model_kwargs") or {})
    return create(model_name or checkpoint["model_name"], kwargs)


def run(model: torch.nn.Module, loader: DataLoader, args: argparse.Namespace, desc: str,
        reference: torch.nn.Module | None = None) -> MetricsReport:
    batches = loader
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:  # a progress bar only
            pass
        else:
            batches = tqdm(loader, desc=desc, total=min(len(loader), args.max_batches or len(loader)))
    return measure(model, batches, e_ac_pj=args.e_ac, e_mac_pj=args.e_mac, per_channel=args.per_channel,
                   max_batches=args.max_batches, reference=reference, output=args.output, energy=args.energy,
                   weight_format=args.weight_format, weight_bits=args.weight_bits,
                   neurobench=args.neurobench)


def plot(report: MetricsReport, dense: MetricsReport | None, out: Path) -> list[Path]:
    """The three PNGs (weight density, operations, firing rate per layer); none, said on stderr, without
    matplotlib."""
    try:
        matplotlib = require("matplotlib", "matplotlib", "plotting")
    except MissingExtraError as exc:
        print(f"plots skipped: {exc}", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    syn = {n: r for n, r in report.layers.items() if r["type"] != "neuron"}
    neurons = {n: r for n, r in report.layers.items() if r["type"] == "neuron"}
    written = []

    def bars(ax, names, pruned, reference, labels, ylabel, log=False):
        idx = range(len(names))
        ax.bar([i - 0.2 for i in idx], reference, width=0.4, label=labels[0], color="#bbbbbb")
        ax.bar([i + 0.2 for i in idx], pruned, width=0.4, label=labels[1], color="#1f77b4")
        ax.set_xticks(list(idx), names, rotation=90, fontsize=7)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.legend()

    weighted = {n: r for n, r in syn.items() if r["weights"]}  # spike matmuls, masks and sums hold none
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(weighted)), 4))
    bars(ax, list(weighted), [1 - r["weight_sparsity"] for r in weighted.values()], [1.0] * len(weighted),
         ("dense", "pruned"), "weight density")
    ax.set_title("weight density per layer")
    fig.tight_layout()
    written.append(out / "weight_density.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(syn)), 4))
    ref = ([dense.layers[n]["sops"] + dense.layers[n]["macs"] for n in syn] if dense
           else [r["dense_macs"] for r in syn.values()])
    bars(ax, list(syn), [max(r["sops"] + r["macs"], 1) for r in syn.values()], [max(v, 1) for v in ref],
         ("dense model SOPs+MACs" if dense else "dense ANN MACs", "pruned SOPs+MACs"), "operations", log=True)
    ax.set_title("synaptic operations per layer")
    fig.tight_layout()
    written.append(out / "operations.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    written.append(_plot_energy(plt, report, dense, out))

    if neurons:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(neurons)), 4))
        if dense:
            bars(ax, list(neurons), [r["firing_rate"] for r in neurons.values()],
                 [dense.layers[n]["firing_rate"] for n in neurons], ("dense model", "pruned"), "firing rate")
        else:
            ax.bar(range(len(neurons)), [r["firing_rate"] for r in neurons.values()], color="#1f77b4")
            ax.set_xticks(range(len(neurons)), list(neurons), rotation=90, fontsize=7)
            ax.set_ylabel("firing rate")
        ax.set_title("firing rate per spiking layer")
        fig.tight_layout()
        written.append(out / "firing_rate.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


ENERGY_PARTS = (("ops_pj", "compute"), ("addressing_pj", "addressing"), ("inout_pj", "inputs/outputs"),
                ("params_pj", "weights and biases"), ("potential_pj", "potentials"))


def _plot_energy(plt, report: MetricsReport, dense: MetricsReport | None, out: Path) -> Path:
    """energy.png: each row's energy by component (the proxy's: compute only), and the dense model's total
    beside it when there is one."""
    rows = {n: r for n, r in report.layers.items() if r.get("energy") or r["type"] != "neuron"}
    names = list(rows)
    model = report.total["energy"]["model"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4.5))
    idx = range(len(names))
    width = 0.4 if dense else 0.8
    shift = 0.2 if dense else 0.0
    if model == "proxy":
        ax.bar([i + shift for i in idx], [r["energy_pj"] / 1e6 for r in rows.values()], width=width,
               label="compute (proxy)", color="#1f77b4")
    else:
        bottom = [0.0] * len(names)
        for key, label in ENERGY_PARTS:
            values = [r["energy"][key] / 1e6 if r.get("energy") else 0.0 for r in rows.values()]
            ax.bar([i + shift for i in idx], values, width=width, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if dense:
        def total(name):
            r = dense.layers.get(name) or {}
            return (r.get("energy") or {}).get("total_pj", r.get("energy_pj", 0.0)) / 1e6
        ax.bar([i - shift for i in idx], [total(n) for n in names], width=width, label="dense model",
               color="#bbbbbb")
    ax.set_xticks(list(idx), names, rotation=90, fontsize=7)
    ax.set_ylabel("energy (uJ, all samples)")
    e = report.total["energy"]
    what = model if model == "proxy" else f"{model}, {e['weight_format']} {e['weight_bits']}-bit weights"
    ax.set_title(f"energy per layer by component ({what})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "energy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def get_args_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    models = registry()
    names = f"one of {models.list_models()} (the repository's registry), or " if models is not None else ""
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--model", default=None,
                        help=f"{names}PACKAGE.MODULE:FACTORY for any model")
    parser.add_argument("--model-kwargs", type=json_object, default=None,
                        help="JSON object of the model's kwargs")
    parser.add_argument("--output", type=output_selector, default=None,
                        help="for a model whose forward returns a tuple, list or dict: the index or key of "
                             "the logits (default: the first tensor)")
    parser.add_argument("--dense-checkpoint", type=Path, default=None,
                        help="a dense model to compare against")
    parser.add_argument("--data", default="digits",
                        help=f"one of {', '.join(DATASETS)}, as experiments.train takes it ({EXTRA})")
    parser.add_argument("--data-path", default=None,
                        help="the data set's root, as experiments.train takes it (imagenet: the folder "
                             "that holds val/)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--per-channel", action="store_true", help="also record per-channel firing rates")
    parser.add_argument("--e-ac", type=finite_float, default=E_AC_PJ,
                        help="pJ per accumulate (default 45 nm)")
    parser.add_argument("--e-mac", type=finite_float, default=E_MAC_PJ,
                        help="pJ per multiply-accumulate (default 45 nm)")
    parser.add_argument("--energy", choices=ENERGY_MODELS, default="proxy",
                        help="energy model: proxy (compute only), lemaire (memory-aware, with "
                             "--weight-format and --weight-bits) or lemaire-spikingjelly (SpikingJelly 2.0's "
                             "estimate)")
    parser.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="dense",
                        help="how weights are stored and read: dense (every weight, zeros included), bitmask "
                             "(nonzeros + 1 bit per weight) or csr (nonzeros + indices + row pointers)")
    parser.add_argument("--weight-bits", type=int, choices=WEIGHT_BITS, default=32,
                        help="bits per stored weight value")
    parser.add_argument("--neurobench", action="store_true",
                        help="also report NeuroBench 2.3's metrics under its definitions (neurobench.json); "
                             "a SpikingJelly model only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/sparsity"))
    return parser


def measure_command(argv: list[str] | None = None, prog: str = PROG) -> MetricsReport:
    """The whole command: parse ``argv``, measure, print the table, write the files; returns the report.
    The user's errors exit with code 2 and one line on stderr (``SystemExit``)."""
    parser = get_args_parser(prog)
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be > 0, got {args.batch_size}")
    if args.max_batches is not None and args.max_batches <= 0:
        parser.error(f"--max-batches must be > 0, got {args.max_batches}")
    if args.workers < 0 or args.e_ac < 0 or args.e_mac < 0:
        parser.error(f"--workers, --e-ac and --e-mac must be >= 0, got {args.workers}, {args.e_ac}, "
                     f"{args.e_mac}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        parser.error(f"--device must be a torch device such as cpu or cuda, got {args.device!r}")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device {args.device}: not a device this machine has (cpu, or cuda with a GPU)")
    if args.energy == "lemaire-spikingjelly" and (args.weight_format, args.weight_bits) != ("dense", 32):
        parser.error("--energy lemaire-spikingjelly reproduces SpikingJelly's estimate, which reads dense "
                     "32-bit weights: use --energy lemaire for --weight-format/--weight-bits")

    try:  # the user's errors as one line, exit code 2 (what argparse does for its own)
        loader = DataLoader(eval_split(args.data, args.data_path), batch_size=args.batch_size,
                            num_workers=args.workers)
        checkpoint = load_checkpoint(args.checkpoint)
        model = build_model(checkpoint, args.model, args.model_kwargs).to(args.device)
        reference = unpruned_architecture(checkpoint, args.model, args.model_kwargs)
        dense_model = None
        if args.dense_checkpoint is not None:
            dense_model = build_model(load_checkpoint(args.dense_checkpoint), args.model, args.model_kwargs)
    except (ValueError, OSError, MissingExtraError) as exc:  # UsageError, bad checkpoint, missing file/extra
        what = f"{type(exc).__name__}: " if isinstance(exc, OSError) else ""
        parser.exit(2, f"{parser.prog}: error: {what}{' '.join(str(exc).split())}\n")
    if args.neurobench and not spiking.is_spiking(model):
        parser.exit(2, f"{parser.prog}: error: --neurobench: the model has no SpikingJelly neuron; "
                       "NeuroBench measures an ANN itself (neurobench.models.TorchModel)\n")
    try:  # a batch the model cannot run, a reference that does not fit: one line, as above
        report = run(model, loader, args, "pruned", None if reference is None else reference.to(args.device))
        dense = None
        if dense_model is not None:
            dense = run(dense_model.to(args.device), loader, args, "dense")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")

    print(report)
    try:  # a read-only or full disk: one line naming the file (the reports are written atomically)
        args.out.mkdir(parents=True, exist_ok=True)
        report.to_json(args.out / "sparsity.json")
        report.to_csv(args.out / "sparsity.csv")
        written = [args.out / "sparsity.json", args.out / "sparsity.csv"]
        if args.neurobench:
            atomic_write(args.out / "neurobench.json", json.dumps(report.to_neurobench(), indent=2))
            written.append(args.out / "neurobench.json")
        if dense is not None:
            dense.to_json(args.out / "sparsity_dense.json")
            written.append(args.out / "sparsity_dense.json")
        written += plot(report, dense, args.out)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write the report in --out {args.out}: "
                       f"{exc.strerror or exc}\n")
    if args.neurobench:
        print(neurobench_summary(report))
    for path in written:
        print(f"wrote {path}")
    return report


def neurobench_summary(report: MetricsReport) -> str:
    """NeuroBench's metrics (its definitions) beside snn_lats's, per sample, in a few lines."""
    nb = report.to_neurobench()
    b, o = nb["neurobench"], nb["snn_lats"]
    ops = b["SynapticOperations"]
    updates = "n/a" if b["MembraneUpdates"] is None else f"{b['MembraneUpdates']:.6g}"
    return "\n".join([
        "NeuroBench 2.3 (its definitions, per sample): "
        f"ConnectionSparsity {b['ConnectionSparsity']}, ActivationSparsity {b['ActivationSparsity']}, "
        f"Effective_ACs {ops['Effective_ACs']:.6g}, Effective_MACs {ops['Effective_MACs']:.6g}, "
        f"Dense {ops['Dense']:.6g}, MembraneUpdates {updates}, Footprint {b['Footprint']:,} B, "
        f"ParameterCount {b['ParameterCount']:,}",
        f"snn_lats (per sample): SOPs {o['sops_per_sample']:.6g}, MACs {o['macs_per_sample']:.6g}, "
        f"dense MACs {o['dense_macs_per_sample']:.6g}, neuron updates {o['neuron_updates_per_sample']:.6g}, "
        f"energy ({o['energy_model']}) {o['energy_per_sample_pj'] / 1e6:.4g} uJ, footprint "
        f"{o['footprint_bytes']:,} B ({o['weight_format']} {o['weight_bits']}-bit)",
    ])


def main(argv: list[str] | None = None) -> int:
    """The console script ``snn-lats-measure``: 0 on success; the user's errors exit with code 2."""
    measure_command(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
