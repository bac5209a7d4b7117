"""One pass over data: weight sparsity, firing rates, exact SOPs, MACs, dense-equivalent MACs and energy."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based import functional
from torch import nn

from .firing import SPIKING_NEURON_TYPES, new_batch, recording_firing
from .synops import SynapseCounter

# Energy per operation in pJ at 45 nm (Horowitz, ISSCC 2014), the values SNN papers use.
E_AC_PJ = 0.9
E_MAC_PJ = 4.6

SYNAPSE_FIELDS = ("weight_sparsity", "input_kind", "sops", "macs", "dense_macs", "energy_pj", "dense_energy_pj",
                  "ops_ratio", "energy_ratio")


@dataclass
class MetricsReport:
    """``layers[name]`` and ``total`` are plain dicts; see :func:`measure` for the fields."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "layers": self.layers, "notes": self.notes}

    def to_json(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)

    def to_csv(self, path: str | os.PathLike) -> None:
        """One row per layer plus a ``total`` row; list-valued fields are left out."""
        path = Path(path)
        columns = ["layer", "type", *SYNAPSE_FIELDS, "firing_rate", "spikes", "neuron_updates"]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for name, row in self.layers.items():
                writer.writerow({"layer": name, **row})
            writer.writerow({"layer": "total", "type": "total", **self.total})
        os.replace(tmp, path)

    def __str__(self) -> str:
        lines = [f"{'layer':<28} {'kind':<8} {'w.sparsity':>10} {'fire rate':>9} {'SOPs':>12} {'MACs':>12} "
                 f"{'dense MACs':>12} {'energy uJ':>10}"]
        for name, r in self.layers.items():
            if r["type"] == "neuron":
                lines.append(f"{name:<28} {'neuron':<8} {'':>10} {r['firing_rate']:9.4f}")
            else:
                lines.append(f"{name:<28} {r['input_kind'] or '-':<8} {r['weight_sparsity']:10.4f} {'':>9} "
                             f"{r['sops']:12.4g} {r['macs']:12.4g} {r['dense_macs']:12.4g} {r['energy_pj'] / 1e6:10.4g}")
        t = self.total
        rate = "" if t["firing_rate"] is None else f"{t['firing_rate']:9.4f}"
        lines.append(f"{'total':<28} {'':<8} {t['weight_sparsity']:10.4f} {rate:>9} {t['sops']:12.4g} "
                     f"{t['macs']:12.4g} {t['dense_macs']:12.4g} {t['energy_pj'] / 1e6:10.4g}")
        lines.append(f"energy {t['energy_pj'] / 1e6:.4g} uJ = {t['energy_ratio']:.4f} x the dense ANN "
                     f"({t['dense_energy_pj'] / 1e6:.4g} uJ) over {t['samples']} samples")
        ref = t.get("reference")
        if ref:
            lines.append(f"against the unpruned architecture ({ref['weights']:,} weights, "
                         f"{ref['dense_macs'] / t['samples']:.4g} MACs per sample): weight sparsity "
                         f"{ref['weight_sparsity']:.4f}, energy {ref['energy_ratio']:.4f} x its dense ANN "
                         f"({ref['dense_energy_pj'] / 1e6:.4g} uJ)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        target = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], target
    raise TypeError(f"batches must yield tensors or (input, target) pairs, got {type(batch).__name__}")


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
) -> MetricsReport:
    """Run ``model`` in eval mode over ``batches`` and count, per layer and in total:

    - ``weight_sparsity`` of every ``nn.Conv2d`` / ``nn.Linear`` (pruned or not; parametrized weights are read
      through the parametrization);
    - ``sops``: accumulates that reach a nonzero weight, for layers fed by spikes (each spike one accumulate) or
      by integer values such as SEW ADD's 0/1/2 (each unit one accumulate; ``input_kind`` says which);
    - ``macs``: multiply-accumulates with nonzero weights, for layers fed by real values (the encoding layer, and
      every layer of an ANN); every output position counts, zero padding included, as in dense MAC counts;
    - ``dense_macs``: the same network dense and non-spiking: one pass per sample with every weight;
    - ``energy_pj`` = ``e_ac_pj``·SOPs + ``e_mac_pj``·MACs, and ``dense_energy_pj`` = ``e_mac_pj``·dense MACs;
    - ``ops_ratio`` = (SOPs + MACs) / dense MACs and ``energy_ratio``;
    - ``firing_rate`` of every spiking neuron layer: overall, ``firing_rate_per_step``, and with
      ``per_channel=True`` ``firing_rate_per_channel``.

    ``reference`` is the unpruned architecture a channel-pruned ``model`` came from (weights need not be
    trained: only shapes count). ``total["reference"]`` then restates weight sparsity, ``ops_ratio`` and
    ``energy_ratio`` against its weights and its dense MACs, because the fields above treat the thin model's
    own dense form as the baseline.

    ``batches`` yields inputs or (input, target) pairs; with targets, ``total["accuracy"]`` is top-1. A 5-D input
    is read as ``[T, B, ...]``. Counters reduce on the fly through forward hooks, so memory does not grow with
    the number of batches. SpikingJelly networks are reset with ``functional.reset_net`` after every batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("e_ac_pj", e_ac_pj), ("e_mac_pj", e_mac_pj)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    synapses = {n: SynapseCounter.for_module(m) for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not synapses:
        raise ValueError("model has no nn.Conv2d or nn.Linear layer to measure")

    hooks = [c.module.register_forward_hook(lambda m, i, o, c=c: c.update(i[0], o)) for c in synapses.values()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    samples = correct = labelled = seen = 0
    one_sample = None  # the reference's dense MACs are counted on it
    try:
        with recording_firing(model, neuron_types, per_channel) as neurons:
            for batch in batches:
                if max_batches is not None and seen >= max_batches:
                    break
                x, y = _split_batch(batch)
                x = x.to(device)
                out = model(x)
                if neurons:
                    functional.reset_net(model)
                    new_batch(neurons)
                batch_size = x.shape[1] if x.dim() == 5 else x.shape[0]
                if reference is not None and one_sample is None:
                    one_sample = x[:, :1] if x.dim() == 5 else x[:1]
                samples += batch_size
                seen += 1
                if y is not None:
                    logits = out.mean(0) if out.dim() == 3 else out
                    correct += int((logits.argmax(-1).cpu() == y.cpu()).sum())
                    labelled += len(y)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("batches is empty: nothing to measure (check the data loader and its batch size)")
    report = _report(synapses, neurons, samples, e_ac_pj, e_mac_pj, correct / labelled if labelled else None)
    if reference is not None:
        ref = measure(reference, [one_sample.to(next(reference.parameters()).device)], e_ac_pj=e_ac_pj,
                      e_mac_pj=e_mac_pj, neuron_types=neuron_types).total
        t = report.total
        nonzero = sum(r["nonzero_weights"] for r in report.layers.values() if r["type"] != "neuron")
        dense = ref["dense_macs"] * samples
        t["reference"] = {
            "weights": ref["weights"], "weight_sparsity": 1 - nonzero / ref["weights"], "dense_macs": dense,
            "dense_energy_pj": e_mac_pj * dense, "ops_ratio": (t["sops"] + t["macs"]) / dense,
            "energy_ratio": t["energy_pj"] / (e_mac_pj * dense) if e_mac_pj else None,
        }
    return report


def _report(synapses, neurons, samples, e_ac, e_mac, accuracy) -> MetricsReport:
    report = MetricsReport()
    for name, c in synapses.items():
        dense = (c.dense_macs_per_sample or 0) * samples
        energy = e_ac * c.sops + e_mac * c.macs
        report.layers[name] = {
            "type": "conv" if isinstance(c.module, nn.Conv2d) else "linear",
            "weight_sparsity": 1 - c.nonzero / c.weights,
            "nonzero_weights": c.nonzero,
            "weights": c.weights,
            "input_kind": c.kind,
            "sops": c.sops,
            "macs": c.macs,
            "dense_macs": dense,
            "energy_pj": energy,
            "dense_energy_pj": e_mac * dense,
            "ops_ratio": (c.sops + c.macs) / dense if dense else None,
            "energy_ratio": energy / (e_mac * dense) if dense and e_mac else None,
        }
        if c.calls == 0:
            report.notes.append(f"layer {name} never ran: its counts are 0")
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
        "weight_sparsity": 1 - sum(r["nonzero_weights"] for r in syn) / weights,
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
        "accuracy": accuracy,
        "e_ac_pj": e_ac,
        "e_mac_pj": e_mac,
    }
    if not neurons:
        report.notes.append("no spiking neuron layer found: SOPs are 0 and every layer counts MACs (an ANN)")
    return report
