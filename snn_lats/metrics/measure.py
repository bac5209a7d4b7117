"""One pass over data: weight sparsity, firing rates, exact SOPs, MACs, dense-equivalent MACs and energy."""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import spiking
from .._checks import check_bool, check_choice, check_classes, check_int, check_number, check_type, shown
from ..io import atomic_write
from ..outputs import OutputSelector, check_output_selector, select_output
from ..training_flags import preserved_training_flags
from .energy import (
    LemaireCosts,
    Tally,
    check_energy,
    costs_dict,
    neuron_energy,
    neuron_energy_spikingjelly,
    not_modeled,
    product_energy,
    spikingjelly_scope,
    synapse_energy,
    synapse_energy_spikingjelly,
)
from .firing import SPIKING_NEURON_TYPES, firing_counters, new_batch, recording
from .membrane import MembraneCounter, new_membrane_batch, recording_membranes
from .products import ProductCounter, counted_layer_weight, synaptic_weights
from .storage import WEIGHT_BITS, WEIGHT_FORMATS, weight_footprint
from .synops import CONV_TYPES, LAYER_TYPES, SynapseCounter

# Energy per operation in pJ at 45 nm (Horowitz, ISSCC 2014), the values SNN papers use.
E_AC_PJ = 0.9
E_MAC_PJ = 4.6

SYNAPSE_FIELDS = ("weight_sparsity", "input_kind", "sops", "macs", "dense_macs", "energy_pj",
                  "dense_energy_pj", "ops_ratio", "energy_ratio")


@dataclass
class MetricsReport:
    """``layers[name]`` and ``total`` are plain dicts; see :func:`measure` for the fields."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "layers": self.layers, "notes": self.notes}

    def to_json(self, path: str | os.PathLike) -> None:
        """Write atomically (:func:`snn_lats.io.atomic_write`)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2))

    def to_csv(self, path: str | os.PathLike) -> None:
        """One row per layer plus a ``total`` row; list-valued fields are left out; ``model_energy_pj`` and
        its components are the report's energy model's (the proxy's ``energy_pj`` where that is the model).
        Written atomically (:func:`snn_lats.io.atomic_write`)."""
        columns = ["layer", "type", *SYNAPSE_FIELDS, "selected", "dense_ops", "firing_rate", "spikes",
                   "neuron_updates", "weight_coverage", "mac_coverage", "sops_per_sample", "macs_per_sample",
                   "energy_per_sample_pj", "model_energy_pj", *ENERGY_PARTS, "footprint_bytes"]
        cover = self.total.get("coverage") or {}
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, columns, extrasaction="ignore")
        writer.writeheader()
        for name, row in self.layers.items():
            writer.writerow({"layer": name, **row, **_energy_columns(row)})
        t = self.total
        per_sample = t.get("per_sample") or {}
        energy = t.get("energy") or {}
        writer.writerow({"layer": "total", "type": "total", **t,
                         "weight_coverage": cover.get("weights"), "mac_coverage": cover.get("macs"),
                         "sops_per_sample": per_sample.get("sops"), "macs_per_sample": per_sample.get("macs"),
                         "energy_per_sample_pj": energy.get("per_sample_pj"),
                         "model_energy_pj": energy.get("total_pj"),
                         **{k: energy.get(k) for k in ENERGY_PARTS},
                         "footprint_bytes": (t.get("footprint") or {}).get("bytes")})
        atomic_write(path, text.getvalue())

    def to_neurobench(self) -> dict[str, Any]:
        """NeuroBench 2.3's metrics, by its names and under its definitions, per sample, next to snn_lats's
        own figures under their labels (``measure(..., neurobench=True)`` records what this needs).

        ``neurobench``: ``ConnectionSparsity`` (zero weights of the conv/linear layers, rounded as NeuroBench
        rounds it), ``ActivationSparsity`` (zero neuron outputs), ``SynapticOperations`` (``Effective_ACs``:
        nonzero input × nonzero weight pairs of calls whose inputs are all in {-1, 0, 1}, ``Effective_MACs``
        the same for other calls (a SEW ADD 2 counts once), ``Dense``: NeuroBench's all-ones pass, padding
        taps skipped, modules only), ``MembraneUpdates`` (membranes that changed, each batch's first step
        counting all), ``Footprint`` (bytes of every parameter and buffer of the deployed, squashed model)
        and ``ParameterCount``. ``snn_lats``: SOPs and MACs by snn_lats's rules (integer inputs by value, the
        products outside layers included), dense MACs, neuron updates, the energy and footprint of the
        report's model and format. ``definitions`` says where the two differ (docs/metrics.md has the table).
        """
        nb = self.total.get("neurobench")
        if nb is None:
            raise ValueError("this report has no NeuroBench counts: measure the model with neurobench=True")
        t = self.total
        n = t["samples"]
        zeros, weights = nb["connection_zeros"], nb["connection_weights"]
        # NeuroBench divides an int64 tensor by an int (float32 in torch) and rounds to 4 decimals
        connection = round(float(torch.tensor(zeros) / weights), 4) if weights else None
        updates = t["neuron_updates"]
        energy, footprint = t["energy"], t["footprint"]
        return {
            "neurobench": {
                "ConnectionSparsity": connection,
                # without spiking neurons (an ANN) NeuroBench counts ReLU zeros, which measure does not see
                "ActivationSparsity": 1 - t["spikes"] / updates if updates else None,
                "SynapticOperations": {"Effective_MACs": nb["effective_macs"] / n,
                                       "Effective_ACs": nb["effective_acs"] / n, "Dense": nb["dense"] / n},
                "MembraneUpdates": (None if nb["membrane_updates"] is None or not updates
                                    else nb["membrane_updates"] / n),
                "Footprint": nb["footprint"],
                "ParameterCount": nb["parameter_count"],
            },
            "snn_lats": {
                "weight_sparsity": t["weight_sparsity"],
                "firing_rate": t["firing_rate"],
                "sops_per_sample": t["sops"] / n,
                "macs_per_sample": t["macs"] / n,
                "dense_macs_per_sample": t["dense_macs"] / n,
                "neuron_updates_per_sample": updates / n,
                "energy_model": energy["model"],
                "energy_per_sample_pj": energy["per_sample_pj"],
                "proxy_energy_per_sample_pj": t["energy_pj"] / n,
                "weight_format": footprint["weight_format"],
                "weight_bits": footprint["weight_bits"],
                "footprint_bytes": footprint["bytes"],
            },
            "definitions": NEUROBENCH_DIFFERENCES,
        }

    def __str__(self) -> str:
        model = (self.total.get("energy") or {}).get("model", "proxy")
        extra = model != "proxy"
        lines = [f"{'layer':<28} {'kind':<8} {'w.sparsity':>10} {'fire rate':>9} {'SOPs':>12} {'MACs':>12} "
                 f"{'dense MACs':>12} {'proxy uJ':>10}" + (f" {model + ' uJ':>22}" if extra else "")]
        for name, r in self.layers.items():
            energy = f" {r['energy']['total_pj'] / 1e6:22.4g}" if extra and "energy" in r else ""
            if r["type"] == "neuron":
                lines.append(f"{name:<28} {'neuron':<8} {'':>10} {r['firing_rate']:9.4f} {'':>12} {'':>12} "
                             f"{'':>12} {'':>10}{energy}" if energy else
                             f"{name:<28} {'neuron':<8} {'':>10} {r['firing_rate']:9.4f}")
            else:
                sparsity = "" if r["weight_sparsity"] is None else f"{r['weight_sparsity']:10.4f}"
                lines.append(f"{name:<28} {r['input_kind'] or '-':<8} {sparsity:>10} {'':>9} "
                             f"{r['sops']:12.4g} {r['macs']:12.4g} {r['dense_macs']:12.4g} "
                             f"{r['energy_pj'] / 1e6:10.4g}{energy}")
        t = self.total
        rate = "" if t["firing_rate"] is None else f"{t['firing_rate']:9.4f}"
        total_energy = f" {t['energy']['total_pj'] / 1e6:22.4g}" if extra and "energy" in t else ""
        lines.append(f"{'total':<28} {'':<8} {t['weight_sparsity']:10.4f} {rate:>9} {t['sops']:12.4g} "
                     f"{t['macs']:12.4g} {t['dense_macs']:12.4g} {t['energy_pj'] / 1e6:10.4g}{total_energy}")
        lines.append(f"proxy energy {t['energy_pj'] / 1e6:.4g} uJ = {t['energy_ratio']:.4f} x the dense ANN "
                     f"({t['dense_energy_pj'] / 1e6:.4g} uJ) over {t['samples']} samples")
        per = t.get("per_sample")
        if per:
            lines.append(f"per sample: {per['sops']:.6g} SOPs, {per['macs']:.6g} MACs, {per['spikes']:.6g} "
                         f"spikes, proxy energy {per['energy_pj'] / 1e6:.4g} uJ")
        e = t.get("energy")
        if e and extra:
            lines.append(
                f"energy ({e['model']}, {e['weight_format']} {e['weight_bits']}-bit weights): "
                f"{e['total_pj'] / 1e6:.4g} uJ, {e['per_sample_pj'] / 1e6:.4g} uJ per sample = compute "
                f"{e['ops_pj'] / 1e6:.4g} + addressing {e['addressing_pj'] / 1e6:.4g} + memory "
                f"{e['memory_pj'] / 1e6:.4g} (inputs/outputs {e['inout_pj'] / 1e6:.4g}, weights "
                f"{e['params_pj'] / 1e6:.4g}, potentials {e['potential_pj'] / 1e6:.4g}) uJ")
            lines += [f"energy not modeled: {m['type']} x{m['count']} ({', '.join(m['names'])}): {m['why']}"
                      for m in e["not_modeled"]]
        fp = t.get("footprint")
        if fp:
            table = fp["table"]
            lines.append(f"weight footprint: {fp['bytes']:,} bytes as {fp['weight_format']} "
                         f"{fp['weight_bits']}-bit ({fp['nnz']:,} of {fp['weights']:,} weights nonzero; "
                         f"dense 32-bit {table['dense32']:,}, bitmask 8-bit {table['bitmask8']:,}, CSR 8-bit "
                         f"{table['csr8']:,})")
        ref = t.get("reference")
        if ref:
            lines.append(f"against the unpruned architecture ({ref['weights']:,} weights, "
                         f"{ref['dense_macs'] / t['samples']:.4g} MACs per sample): weight sparsity "
                         f"{ref['weight_sparsity']:.4f}, energy {ref['energy_ratio']:.4f} x its dense ANN "
                         f"({ref['dense_energy_pj'] / 1e6:.4g} uJ)")
        cover = t.get("coverage")
        if cover:
            macs = "not measured" if cover["macs"] is None else f"{100 * cover['macs']:.2f} %"
            lines.append(f"coverage: {100 * cover['weights']:.2f} % of {cover['synaptic_weights']:,} "
                         f"synaptic weights, {macs} of the model's dense MACs")
            lines += [f"not counted: {u['name']} ({u['type']}, {u['weights']:,} weights, "
                      f"{u['dense_macs']:.4g} dense MACs)" for u in cover["uncounted"]]
            listed = {u["name"] for u in cover["uncounted"]}  # their ops are on their line already
            lines += [f"not counted: {u['op']} in {u['module']} ({u['dense_macs']:.4g} dense MACs)"
                      for u in cover["uncounted_ops"] if u["module"] not in listed]
        lines += [f"note: {n}" for n in self.notes if not n.startswith("energy model ")]
        return "\n".join(lines)


ENERGY_PARTS = ("ops_pj", "addressing_pj", "inout_pj", "params_pj", "potential_pj")
NEUROBENCH_DIFFERENCES = {
    "spiking": "NeuroBench: a call whose inputs are all in {-1, 0, 1}; snn_lats: binary / integer / real "
               "per layer",
    "integer inputs": "NeuroBench: Effective_MACs, one per nonzero pair (a 2 counts once); snn_lats: SOPs "
                      "by value (a 2 counts twice)",
    "real inputs": "NeuroBench: nonzero input x nonzero weight, padding skipped; snn_lats: output positions "
                   "x nonzero weights, padding included",
    "dense": "NeuroBench: an all-ones pass, padding taps skipped, modules only; snn_lats: one dense ANN "
             "pass, padding included, products outside layers included",
    "products outside layers": "NeuroBench's module hooks cannot see them; snn_lats counts them as rows",
    "membrane updates": "NeuroBench: membranes that changed; snn_lats: neurons x time steps",
    "footprint": "NeuroBench: dense bytes of every parameter and buffer; snn_lats: the weights under a "
                 "storage format and bit width",
}


def _energy_columns(row: dict[str, Any]) -> dict[str, Any]:
    energy = row.get("energy")
    if energy is None:
        return {"model_energy_pj": row.get("energy_pj")}
    return {"model_energy_pj": energy["total_pj"], **{k: energy[k] for k in ENERGY_PARTS}}


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        target = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], target
    raise TypeError(f"batches must yield tensors or (input, target) pairs, got {shown(batch)}")


@torch.no_grad()
def measure(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    e_ac_pj: float = E_AC_PJ,
    e_mac_pj: float = E_MAC_PJ,
    per_channel: bool = False,
    neuron_types: Sequence[type[nn.Module]] = SPIKING_NEURON_TYPES,
    max_batches: int | None = None,
    reference: nn.Module | None = None,
    products: bool = True,
    sample_dim: int | None = None,
    output: OutputSelector = None,
    energy: str = "proxy",
    weight_format: str = "dense",
    weight_bits: int = 32,
    energy_costs: LemaireCosts | None = None,
    neurobench: bool = False,
) -> MetricsReport:
    """Run ``model`` in eval mode over ``batches`` and count, per layer and in total:

    - ``weight_sparsity`` of every ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` / ``nn.Linear``
      (SpikingJelly's ``layer.*`` included; pruned or not; parametrized weights are read through the
      parametrization);
    - ``sops``: accumulates that reach a nonzero weight, for layers fed by spikes (each spike one accumulate)
      or by integer values such as SEW ADD's 0/1/2 (each unit one accumulate; ``input_kind`` says which);
    - ``macs``: multiply-accumulates with nonzero weights, for layers fed by real values (the encoding layer,
      and every layer of an ANN); every output position counts, zero padding included, as in dense MAC counts;
    - ``dense_macs``: the same network dense and non-spiking: one pass per sample with every weight;
    - ``energy_pj`` = ``e_ac_pj``·SOPs + ``e_mac_pj``·MACs, and ``dense_energy_pj`` = ``e_mac_pj``·dense MACs:
      the compute-only proxy (Horowitz 2014), reported whatever ``energy`` is;
    - ``ops_ratio`` = (SOPs + MACs) / dense MACs and ``energy_ratio`` (the proxy's);
    - ``firing_rate`` of every spiking neuron layer: overall, ``firing_rate_per_step``, and with
      ``per_channel=True`` ``firing_rate_per_channel``.

    ``energy`` picks the energy model of ``total["energy"]`` and of each row's ``"energy"``: ``"proxy"`` (the
    fields above), ``"lemaire"`` (memory-aware, after Lemaire et al. 2022: compute, addressing and SRAM
    accesses of inputs, weights and biases, membrane potentials and outputs, each byte priced by its buffer's
    size; see :mod:`snn_lats.metrics.energy`) with the weights stored as ``weight_format`` (``"dense"``: every
    fan-out weight read, zeros included; ``"bitmask"``: nonzeros plus one bit per weight; ``"csr"``: nonzeros
    plus indices and row pointers) at ``weight_bits`` (32, 16 or 8) bits per value, or
    ``"lemaire-spikingjelly"`` (SpikingJelly 2.0's ``estimate_lemaire_energy``, rule for rule, dense 32-bit).
    ``energy_costs`` (a :class:`~snn_lats.metrics.energy.LemaireCosts`) overrides the Lemaire costs. The
    modules a Lemaire setting does not model are listed in ``total["energy"]["not_modeled"]``.
    ``total["footprint"]`` gives the weights' bytes under every format and bit width
    (:func:`snn_lats.metrics.storage.weight_footprint`), and ``total["per_sample"]`` the per-sample figures.

    ``neurobench=True`` also counts what NeuroBench 2.3's definitions need (nonzero input × weight pairs,
    its all-ones pass, membranes that changed; :meth:`MetricsReport.to_neurobench`).

    With ``products=True`` (the default) a torch dispatch mode also counts the matrix products that belong to
    no counted layer (spiking attention's spike @ spike and counts @ spike), one row each, named
    ``"<module>/matmul.<n>"`` (``type`` ``"matmul"``), the elementwise spike masks (``k * v``: ``type``
    ``"mask"``, no arithmetic, their ``selected`` results and ``dense_ops``) and the sums of spikes or
    integers (``kv.sum(-2)``: ``type`` ``"sum"``, one accumulate per unit summed), named
    ``"<module>/mask.<n>"`` and
    ``"<module>/sum.<n>"`` (see :mod:`snn_lats.metrics.products` for the rules), and
    measures ``total["coverage"]``: the fraction of the model's synaptic weights (parameters with >= 2 dims)
    and of its dense MACs (every product and convolution torch's flop counter knows) that the report counts,
    with the modules and ops it does not count. ``products=False`` skips the dispatch mode (for models it
    cannot run, e.g. compiled ones): no product rows, and ``coverage["macs"]`` is None.

    ``reference`` is the unpruned architecture a channel-pruned ``model`` came from (weights need not be
    trained: only shapes count). ``total["reference"]`` then restates weight sparsity, ``ops_ratio`` and
    ``energy_ratio`` against its weights and its dense MACs, because the fields above treat the thin model's
    own dense form as the baseline.

    ``batches`` yields inputs or (input, target) pairs; with targets, ``total["accuracy"]`` is top-1 of the
    tensor that ``output`` selects from the model's output (default: the first tensor of a tuple, list or dict
    output, e.g. the logits of the Spike-Driven Transformer's ``(logits, hook)``; or an index, a key or a
    callable; see :func:`snn_lats.outputs.select_output`). The
    input's sample dimension is ``sample_dim``: by default 1 for a 5-D input (``[T, B, C, H, W]``) and 0
    otherwise; set it for other layouts (0 for a Conv3d ANN's ``[B, C, D, H, W]``, 1 for a 1-D SNN's
    ``[T, B, C, L]``). Counters reduce on the fly through forward hooks, so memory does not grow with the
    number of batches.

    Spiking neurons are found by what they are, in SpikingJelly's ``activation_based`` and ``clock_driven``
    namespaces alike (:mod:`snn_lats.spiking`). Stateful modules are reset through their own ``reset()``
    before the first batch and after every batch, so no state passes from one batch to the next and none is
    left behind; every module's own training flag is restored afterwards, also on error.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("batches", batches, Iterable, "an iterable of inputs or (input, target) pairs")
    max_batches = check_int("max_batches", max_batches, minimum=1, optional=True)
    check_type("reference", reference, nn.Module, "a torch.nn.Module", optional=True)
    session = MeasureSession(model, e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj, per_channel=per_channel,
                             neuron_types=neuron_types, products=products, sample_dim=sample_dim,
                             output=output, energy=energy, weight_format=weight_format,
                             weight_bits=weight_bits, energy_costs=energy_costs, neurobench=neurobench)
    if reference is not None:  # before anything runs
        _check_reference(reference, session.synapses)
    one_sample = None  # the reference's dense MACs are counted on it
    with session:
        for batch in batches:
            if max_batches is not None and session.batches >= max_batches:
                break
            x, y = _split_batch(batch)
            session.run(x, y)
            if reference is not None and one_sample is None:
                one_sample = session.last_input.narrow(session.last_sample_dim, 0, 1)
    if session.batches == 0:
        raise ValueError("batches is empty: nothing to measure (check the data loader and its batch size)")
    report = session.report()
    if reference is not None:
        ref = measure(reference, [one_sample.to(next(reference.parameters()).device)], e_ac_pj=e_ac_pj,
                      e_mac_pj=e_mac_pj, neuron_types=neuron_types, products=products,
                      sample_dim=sample_dim, output=output).total
        t = report.total
        nonzero = sum(r["nonzero_weights"] for r in report.layers.values() if r["type"] != "neuron")
        dense = ref["dense_macs"] * session.samples
        t["reference"] = {
            "weights": ref["weights"], "weight_sparsity": 1 - nonzero / ref["weights"], "dense_macs": dense,
            "dense_energy_pj": e_mac_pj * dense, "ops_ratio": (t["sops"] + t["macs"]) / dense,
            "energy_ratio": t["energy_pj"] / (e_mac_pj * dense) if e_mac_pj else None,
        }
    return report


class MeasureSession:
    """The counters of one measurement, fed batch by batch: what :func:`measure` runs, and what the NeuroBench
    wrapper keeps across its calls (:mod:`snn_lats.integrations.neurobench`).

    Built from ``measure``'s options (checked here, before anything is hooked). While open (``with session``)
    the model is in eval mode with every counting hook in place; :meth:`run` measures one batch (state reset
    before and after) and returns the model's output; on close, hooks go, and every training flag and
    ``store_v_seq`` is restored. Counts accumulate across openings; :meth:`report` reads them at any time.
    """

    def __init__(self, model: nn.Module, *, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ,
                 per_channel: bool = False, neuron_types: Sequence[type[nn.Module]] = SPIKING_NEURON_TYPES,
                 products: bool = True, sample_dim: int | None = None, output: OutputSelector = None,
                 energy: str = "proxy", weight_format: str = "dense", weight_bits: int = 32,
                 energy_costs: LemaireCosts | None = None, neurobench: bool = False):
        check_type("model", model, nn.Module, "a torch.nn.Module")
        self.e_ac_pj = check_number("e_ac_pj", e_ac_pj, minimum=0)
        self.e_mac_pj = check_number("e_mac_pj", e_mac_pj, minimum=0)
        self.per_channel = check_bool("per_channel", per_channel)
        self.neuron_types = check_classes("neuron_types", neuron_types, nn.Module, "nn.Module")
        self.products = check_bool("products", products)
        self.sample_dim = check_choice("sample_dim", sample_dim, (None, 0, 1))
        self.output = check_output_selector("output", output)
        check_energy(energy, weight_format, weight_bits, energy_costs)
        self.energy, self.weight_format, self.weight_bits = energy, weight_format, weight_bits
        self.costs = energy_costs or LemaireCosts()
        self.neurobench = check_bool("neurobench", neurobench)
        self.model = model
        self.synapses = {n: SynapseCounter.for_module(m) for n, m in model.named_modules()
                         if isinstance(m, LAYER_TYPES)}
        if not self.synapses and not self.products:
            raise ValueError("model has no nn.Conv1d, nn.Conv2d, nn.Conv3d or nn.Linear layer to measure")
        both = [n for n in self.synapses if isinstance(self.synapses[n].module, self.neuron_types)]
        if both:  # its neuron row would replace its synapse row, and the totals lose its weights
            raise ValueError(f"neuron_types {tuple(t.__name__ for t in self.neuron_types)} match layers that "
                             f"are counted as synapses ({both[:3]}): a layer is a neuron or a conv/linear "
                             "layer, not both")
        for c in self.synapses.values():
            c.neurobench = self.neurobench
        self.counter = (ProductCounter(model, {id(c.module) for c in self.synapses.values()})
                        if self.products else None)
        self.weights = synaptic_weights(model)
        if self.counter is not None:  # weights seen as an operand of a counted product count (x @ weight)
            self.counter.operand_params = {p.untyped_storage().data_ptr(): k
                                           for k, (_, _, _, p) in self.weights.items() if p is not None}
        self.neurons = firing_counters(model, self.neuron_types, self.per_channel)
        self.membranes = ({n: MembraneCounter(c.module) for n, c in self.neurons.items()}
                          if self.neurobench else {})
        self.stateful = spiking.has_state(model)
        self.device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
        self.samples = self.correct = self.labelled = self.batches = 0
        self.last_input: torch.Tensor | None = None
        self.last_sample_dim = 0
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> MeasureSession:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(preserved_training_flags(self.model))
            guard = self.counter.paused if self.counter is not None else contextlib.nullcontext
            stack.enter_context(recording(self.neurons, guard=guard))
            if self.membranes:
                stack.enter_context(recording_membranes(self.membranes, guard=guard))
            # the layers' hooks go before the op counter's: they run while it still sees the layer running,
            # so their own sums are not counted as the model's
            hooks = [c.module.register_forward_hook(lambda m, i, o, c=c: c.update(i[0], o))
                     for c in self.synapses.values()]
            stack.callback(lambda: [h.remove() for h in hooks])
            if self.counter is not None:
                stack.enter_context(self.counter.tracking(self.model))
            from ..structured.flops import LayerTrace  # lazily: snn_lats.structured imports torch-pruning

            self._trace = LayerTrace(self.model)  # names the layer a failing forward was in
            stack.callback(self._trace.remove)
            if self.stateful:  # none left behind on exit, also after an error
                stack.callback(spiking.reset_state, self.model)
            self.model.eval()
            if self.stateful:
                spiking.reset_state(self.model)  # state the caller's last forward left
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def run(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """Measure one batch (the session must be open); returns the model's output."""
        if self._stack is None:
            raise RuntimeError("MeasureSession.run needs an open session: use `with session:`")
        x = x.to(self.device)
        dim = (1 if x.dim() == 5 else 0) if self.sample_dim is None else self.sample_dim
        _check_batch(x, dim, self.batches)
        for c in self.synapses.values():
            c.batch_samples = x.shape[dim]
        out = _forward(self.model, x, self.batches, self._trace)
        if self.stateful:
            spiking.reset_state(self.model)
        new_batch(self.neurons)
        new_membrane_batch(self.membranes)
        self.last_input, self.last_sample_dim = x, dim
        self.samples += x.shape[dim]
        self.batches += 1
        if self.batches == 1 and not self.synapses and not self.counter.rows:
            raise ValueError("model has no nn.Conv1d, nn.Conv2d, nn.Conv3d or nn.Linear layer and ran no "
                             "matrix product: nothing to measure")
        if y is not None:
            logits = select_output(out, self.output)
            logits = logits.mean(0) if logits.dim() == 3 else logits
            self.correct += int((logits.argmax(-1).cpu() == y.cpu()).sum())
            self.labelled += len(y)
        return out

    def report(self, *, energy: str | None = None, weight_format: str | None = None,
               weight_bits: int | None = None) -> MetricsReport:
        """The report of every batch run so far (see :func:`measure` for the fields), under the session's
        energy model or, given here, another one: the counts do not depend on it, so one pass prices every
        model, format and width."""
        if self.batches == 0:
            raise ValueError("no batch was measured: nothing to report")
        energy = self.energy if energy is None else energy
        weight_format = self.weight_format if weight_format is None else weight_format
        weight_bits = self.weight_bits if weight_bits is None else weight_bits
        check_energy(energy, weight_format, weight_bits, self.costs)
        report = _report(self.synapses, self.counter, self.neurons, self.samples, self.e_ac_pj,
                         self.e_mac_pj, self.correct / self.labelled if self.labelled else None)
        _coverage(report, self.synapses, self.counter, self.weights)
        _energy(report, self, energy, weight_format, weight_bits)
        _footprint(report, self, weight_format, weight_bits)
        _per_sample(report)
        if self.neurobench:
            _neurobench(report, self)
        return report


def _check_batch(x: torch.Tensor, dim: int, index: int) -> None:
    """A batch measure can count: the sample dimension exists and holds samples, the values are finite."""
    if x.dim() <= dim:
        raise ValueError(f"sample_dim {dim} is out of range for batch {index}'s input of shape "
                         f"{tuple(x.shape)}")
    if x.shape[dim] == 0:
        raise ValueError(f"batch {index} has no samples (input of shape {tuple(x.shape)}, sample dimension "
                         f"{dim}): nothing to measure in it")
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"batch {index}'s input holds NaN or inf values: operation counts of a non-finite "
                         "input mean nothing")


def _forward(model: nn.Module, x: torch.Tensor, index: int, trace) -> Any:
    """``model(x)``; a failure becomes one sentence that names the batch, its shape and the layer (``trace``,
    a ``LayerTrace`` the session keeps on the model)."""
    from ..structured.flops import describe_layer

    try:
        return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        where = describe_layer(model, trace.innermost())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the model's forward failed on batch {index} (input of shape {tuple(x.shape)}) in "
                         f"{where}: {first}") from exc


def _check_reference(reference: nn.Module, synapses: dict[str, SynapseCounter]) -> None:
    """``reference`` must be the unpruned architecture ``model`` came from: each counted layer of the model is
    a layer of the same name and type there, with at least as many weights."""
    named = dict(reference.named_modules())
    for name, c in synapses.items():
        ref, kind = named.get(name), type(c.module).__name__
        if ref is None or type(ref).__name__ != kind:
            there = f" ({type(ref).__name__} there)" if ref is not None else ""
            raise ValueError(f"reference is not the architecture the model was pruned from: it has no {kind} "
                             f"{name!r}{there}")
        if ref.weight.numel() < c.weights:
            raise ValueError(f"reference is not the architecture the model was pruned from: its {name!r} has "
                             f"{ref.weight.numel():,} weights, fewer than the model's {c.weights:,}")


def _row(kind, sops, macs, dense, e_ac, e_mac, **fields) -> dict[str, Any]:
    energy = e_ac * sops + e_mac * macs
    return {**fields, "input_kind": kind, "sops": sops, "macs": macs, "dense_macs": dense,
            "energy_pj": energy, "dense_energy_pj": e_mac * dense,
            "ops_ratio": (sops + macs) / dense if dense else None,
            "energy_ratio": energy / (e_mac * dense) if dense and e_mac else None}


def _time_steps(synapses, samples) -> tuple[float | None, dict[float, int]]:
    """How many passes per sample the counted layers ran: their executed dense MACs over their one-pass ones.

    T for an SNN (every layer runs once per time step), 1 for an ANN. Where layers differ (a head that runs
    once on the time-averaged features) the count that carries most of the executed dense MACs is taken.
    Returns it and every count with the executed dense MACs behind it. A product row's dense MACs are its
    executed I·K·J divided by this, so that, like a layer's, they are one pass per sample.
    """
    passes: dict[float, int] = {}
    for c in synapses.values():
        if c.calls and c.dense_macs_per_sample:
            ratio = c.executed_dense_macs / (c.dense_macs_per_sample * samples)
            passes[ratio] = passes.get(ratio, 0) + c.executed_dense_macs
    return (max(passes, key=passes.get) if passes else None), passes


def _report(synapses, counter, neurons, samples, e_ac, e_mac, accuracy) -> MetricsReport:
    report = MetricsReport()
    for name, c in synapses.items():
        dense = (c.dense_macs_per_sample or 0) * samples
        report.layers[name] = _row(
            c.kind, c.sops, c.macs, dense, e_ac, e_mac,
            type="conv" if isinstance(c.module, CONV_TYPES) else "linear",
            module_type=type(c.module).__name__, weight_sparsity=1 - c.nonzero / c.weights,
            nonzero_weights=c.nonzero, weights=c.weights)
        if c.calls == 0:
            report.notes.append(f"layer {name} never ran: its counts are 0")
    steps, passes = _time_steps(synapses, samples)
    rows = counter.rows if counter is not None else {}
    if rows and steps is None:
        steps = 1.0
        report.notes.append("no counted layer ran, so the time steps are unknown: product rows' dense MACs "
                            "count every executed product (as for one time step)")
    elif rows and len(passes) > 1:
        counts = ", ".join(f"{k:.4g}" for k in sorted(passes))
        report.notes.append(f"counted layers ran {counts} passes per sample: product rows' dense MACs are "
                            f"per {steps:.4g} passes, the count that carries most of the layers' MACs")
    for name, r in rows.items():
        kind = {"matmul": "@", "mask": "*", "sum": ""}[r.type].join(k or "-" for k in r.kinds)
        extra = {} if r.type == "matmul" else {"dense_ops": r.executed_dense_ops / steps}
        if r.type == "mask":
            extra["selected"] = r.selected
        report.layers[name] = _row(
            kind, r.sops, r.macs, r.executed_dense_macs / steps, e_ac, e_mac, type=r.type,
            module=r.module, module_type=r.module_type, op=",".join(r.ops), weight_sparsity=None,
            nonzero_weights=0, weights=0, **extra)
    for name, c in neurons.items():
        report.layers[name] = {"type": "neuron", **c.summary()}
    syn = [r for r in report.layers.values() if r["type"] != "neuron"]
    weights = sum(r["weights"] for r in syn)
    sops, macs = sum(r["sops"] for r in syn), sum(r["macs"] for r in syn)
    dense = sum(r["dense_macs"] for r in syn)
    energy = e_ac * sops + e_mac * macs
    spikes = sum(c.spikes for c in neurons.values())
    updates = sum(c.elements for c in neurons.values())
    report.total = {
        "weights": weights,
        "weight_sparsity": 1 - sum(r["nonzero_weights"] for r in syn) / weights if weights else None,
        "firing_rate": spikes / updates if updates else None,
        "spikes": spikes,
        "neuron_updates": updates,
        "sops": sops,
        "macs": macs,
        "dense_macs": dense,
        "energy_pj": energy,
        "dense_energy_pj": e_mac * dense,
        "ops_ratio": (sops + macs) / dense if dense else None,
        "energy_ratio": energy / (e_mac * dense) if dense and e_mac else None,
        "samples": samples,
        "time_steps": steps,
        "accuracy": accuracy,
        "e_ac_pj": e_ac,
        "e_mac_pj": e_mac,
    }
    if not neurons:
        report.notes.append("no spiking neuron layer found: SOPs are 0 and every layer counts MACs (an ANN)")
    return report


def _coverage(report, synapses, counter, weights) -> None:
    """``total["coverage"]``: the shares of synaptic weights and dense MACs counted, and what is missed."""
    seen = counter.seen_params if counter is not None else set()
    # a layer that never ran counts nothing (a fused kernel may use its weight: MultiheadAttention's out_proj)
    counted_weights = set().union(*(counted_layer_weight(n, c.module) for n, c in synapses.items()
                                    if c.calls))
    by_module: dict[str, dict[str, Any]] = {}
    counted = total = 0
    for key, (module, module_type, size, _) in weights.items():
        total += size
        if key in counted_weights or key in seen:
            counted += size
            continue
        name = module or "(model)"
        entry = by_module.setdefault(name, {"name": name, "type": module_type, "weights": 0, "dense_macs": 0})
        entry["weights"] += size
    ops, unknown = [], []
    if counter is not None:
        for (module, op), macs in counter.uncounted_ops.items():
            ops.append({"module": module, "op": op, "dense_macs": macs})
            if module in by_module:
                by_module[module]["dense_macs"] += macs
        unknown = [{"module": m, "op": op, "calls": n} for (m, op), n in counter.unknown_ops.items()]
    counted_macs = sum(c.executed_dense_macs for c in synapses.values())
    model_macs = None
    if counter is not None:
        counted_macs += sum(r.executed_dense_macs for r in counter.rows.values())
        model_macs = counter.model_dense_macs
    cover = {
        "weights": counted / total if total else 1.0,
        "macs": (counted_macs / model_macs if model_macs else 1.0) if counter is not None else None,
        "counted_weights": counted,
        "synaptic_weights": total,
        "counted_dense_macs": counted_macs,
        "model_dense_macs": model_macs,
        "uncounted": list(by_module.values()),
        "uncounted_ops": ops,
        "unknown_ops": unknown,
    }
    report.total["coverage"] = cover
    for u in unknown:
        report.notes.append(f"{u['op']} in {u['module']} takes a synaptic weight and has no MAC formula: its "
                            f"MACs are in neither coverage figure")
    if counter is None:
        report.notes.append("products=False: matrix products outside layers are not counted and the MAC "
                            "coverage is not measured")
    if cover["weights"] < 1 or (cover["macs"] is not None and cover["macs"] < 1):
        listed = {u["name"] for u in cover["uncounted"]}
        missed = [f"{u['name']} ({u['type']})" for u in cover["uncounted"]]
        missed += [f"{u['op']} in {u['module']}" for u in ops if u["module"] not in listed]
        missed = ", ".join(missed) or "none"
        macs = ("the dense MACs are not measured" if cover["macs"] is None
                else f"{100 * cover['macs']:.2f} % of the dense MACs")
        message = (f"the report counts {100 * cover['weights']:.2f} % of the synaptic weights and {macs}; "
                   f"not counted: {missed}")
        report.notes.append(message)
        warnings.warn(message, stacklevel=4)  # the caller of measure


def _energy(report: MetricsReport, s: MeasureSession, energy: str, weight_format: str,
            weight_bits: int) -> None:
    """``total["energy"]`` and each row's ``"energy"`` under an energy model."""
    t = report.total
    if energy == "proxy":
        t["energy"] = {"model": "proxy", "total_pj": t["energy_pj"],
                       "per_sample_pj": t["energy_pj"] / t["samples"], "e_ac_pj": s.e_ac_pj,
                       "e_mac_pj": s.e_mac_pj,
                       "formula": "e_ac_pj * SOPs + e_mac_pj * MACs (compute only; Horowitz 2014, 45 nm)"}
        return
    costs, exact = s.costs, energy == "lemaire"
    if exact:
        writes_output = not spiking.is_spiking(s.model)
    else:
        covered, _, base = spikingjelly_scope()
        has_neurons = base is not None and any(isinstance(m, base) for m in s.model.modules())
    total = Tally()
    for name, c in s.synapses.items():
        tally = (synapse_energy(c, weight_format, weight_bits, costs, writes_output) if exact
                 else synapse_energy_spikingjelly(c, costs, has_neurons))
        report.layers[name]["energy"] = tally.result(costs)
        total.add(tally)
    rows = s.counter.rows if s.counter is not None else {}
    if exact:
        for name, row in rows.items():
            tally = product_energy(row, t["samples"], t["time_steps"] or 1.0, costs)
            report.layers[name]["energy"] = tally.result(costs)
            total.add(tally)
    for name, c in s.neurons.items():
        if not exact and not isinstance(c.module, covered):
            continue  # listed in not_modeled, as SpikingJelly omits it
        tally = neuron_energy(c, costs) if exact else neuron_energy_spikingjelly(c, costs)
        report.layers[name]["energy"] = tally.result(costs)
        total.add(tally)
    result = total.result(costs)
    missing = not_modeled(s.model, energy, {id(c.module) for c in s.synapses.values()}, s.neurons,
                          rows if not exact else ())
    t["energy"] = {"model": energy, "weight_format": weight_format, "weight_bits": weight_bits,
                   **result, "per_sample_pj": result["total_pj"] / t["samples"], "costs": costs_dict(costs),
                   "not_modeled": missing}
    if missing:
        listed = ", ".join(f"{m['type']} x{m['count']}" for m in missing)
        report.notes.append(f"energy model {energy!r} leaves out: {listed} (total['energy']['not_modeled'] "
                            "says why)")


def _footprint(report: MetricsReport, s: MeasureSession, weight_format: str, weight_bits: int) -> None:
    """``total["footprint"]``: the weights' bytes under every format and width; the chosen ones per layer."""
    fp = weight_footprint(s.model)
    fmt, bits = weight_format, weight_bits
    report.total["footprint"] = {
        "weight_format": fmt, "weight_bits": bits, "bytes": fp.bytes(fmt, bits), "nnz": fp.nnz,
        "weights": fp.numel,
        "table": {f"{f}{b}": fp.bytes(f, b) for f in WEIGHT_FORMATS for b in WEIGHT_BITS},
    }
    for name, layer in fp.layers.items():
        if name in report.layers:
            report.layers[name]["footprint_bytes"] = layer.bytes(fmt, bits)


PER_SAMPLE_FIELDS = ("sops", "macs", "dense_macs", "energy_pj", "dense_energy_pj", "spikes", "neuron_updates")


def _per_sample(report: MetricsReport) -> None:
    t = report.total
    n = t["samples"]
    t["per_sample"] = {k: t[k] / n for k in PER_SAMPLE_FIELDS}
    t["per_sample"]["model_energy_pj"] = t["energy"]["per_sample_pj"]
    for row in report.layers.values():
        energy = row.get("energy")
        if energy is not None:
            row["energy_per_sample_pj"] = energy["total_pj"] / n
        elif row["type"] != "neuron":
            row["energy_per_sample_pj"] = row["energy_pj"] / n
        if row["type"] != "neuron":
            row["sops_per_sample"] = row["sops"] / n
            row["macs_per_sample"] = row["macs"] / n


def _deployed_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, bytes of parameters and buffers) of ``model`` as squashed: a parametrized tensor counts as
    one plain parameter of its value; its parametrization's own tensors (original, mask, threshold) vanish."""
    count = size = 0
    for name, m in model.named_modules():
        if "parametrizations" in name.split("."):
            continue
        tensors = list(m.named_parameters(recurse=False))
        if parametrize.is_parametrized(m):
            tensors += [(p, getattr(m, p)) for p in m.parametrizations]
        for _, p in tensors:
            count += p.numel()
            size += p.numel() * p.element_size()
        size += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return count, size


def _neurobench(report: MetricsReport, s: MeasureSession) -> None:
    """What NeuroBench 2.3's definitions need (:meth:`MetricsReport.to_neurobench`)."""
    acs = macs = dense = 0.0
    for c in s.synapses.values():
        for g in c.groups.values():
            if g.nb_spiking:
                acs += g.nb_pairs
            else:
                macs += g.nb_pairs
            dense += g.nb_dense
    unsupported = [n for n, c in s.membranes.items() if not c.supported]
    if unsupported:
        report.notes.append("NeuroBench's MembraneUpdates needs each step's membrane, which "
                            f"{unsupported[:3]} do not keep: it is left out")
    parameters, footprint = _deployed_parameters(s.model)
    syn = [r for r in report.layers.values() if r["type"] in ("conv", "linear")]
    report.total["neurobench"] = {
        "effective_acs": acs, "effective_macs": macs, "dense": dense,
        "membrane_updates": None if unsupported else sum(c.updates for c in s.membranes.values()),
        "connection_zeros": sum(r["weights"] - r["nonzero_weights"] for r in syn),
        "connection_weights": sum(r["weights"] for r in syn),
        "footprint": footprint, "parameter_count": parameters,
    }
