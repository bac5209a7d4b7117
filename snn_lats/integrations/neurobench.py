"""NeuroBench 2.3 for SpikingJelly networks (``pip install snn_lats[neurobench]``).

    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations
    from snn_lats.integrations.neurobench import Benchmark, Energy, ExactSynapticOperations, SpikingJellyModel

    model = SpikingJellyModel(net, energy="lemaire", weight_format="csr", weight_bits=8)
    benchmark = Benchmark(model, loader, [], [lambda logits: logits.argmax(-1)],
                          [[ConnectionSparsity, Footprint, ParameterCount, WeightFootprint],
                           [ActivationSparsity, SynapticOperations, MembraneUpdates,
                            ExactSynapticOperations, Energy]])
    results = benchmark.run()

NeuroBench as shipped gets SpikingJelly models wrong: it finds activations only through ``nn.ReLU``,
``nn.Sigmoid`` and snnTorch's neurons (activation sparsity 0.0, membrane updates 0), and it never resets
neuron state between batches (SpikingJelly then carries membranes from one batch into the next).
:class:`SpikingJellyModel` resets every stateful module before each batch, registers SpikingJelly's neurons
(both namespaces) as activations, and hands NeuroBench each time step's membrane (``v``, or ``v_seq`` for a
multi-step neuron, recorded for the call), so NeuroBench's own ``ActivationSparsity``, ``MembraneUpdates``
and ``SynapticOperations`` give right answers. A model prepared by an snn_lats pruner (parametrized weights)
is miscounted by NeuroBench (its binarized layer copies ignore the parametrization, and ConnectionSparsity
skips parametrized layers): the wrapper refuses it, or with ``squash=True`` measures a squashed copy.

The wrapper also runs snn_lats's counters in the same forward (``count=True``), which back the metric
classes here: :class:`ExactSynapticOperations` (SOPs by snn_lats's rules, with the spike matrix products that
NeuroBench's module hooks cannot see), :class:`Energy` (the energy model the wrapper was given, per sample,
by component), :class:`FiringRate` and the static :class:`WeightFootprint`. They need a
:class:`SpikingJellyModel` with counting on; :class:`Benchmark` (NeuroBench's, checked) refuses any other
model before anything runs, where NeuroBench's own would print the error and report 0.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

try:
    from neurobench.benchmarks import Benchmark as _NeuroBenchBenchmark
    from neurobench.hooks.layer import LayerHook
    from neurobench.hooks.neuron import NeuronHook
    from neurobench.metrics.abstract import AccumulatedMetric, StaticMetric
    from neurobench.models import NeuroBenchModel
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("snn_lats.integrations.neurobench needs NeuroBench 2.3: pip install "
                      "'snn_lats[neurobench]'") from exc

from .. import spiking
from .._checks import check_bool, check_type
from ..metrics.energy import LemaireCosts
from ..metrics.measure import MeasureSession, MetricsReport
from ..metrics.membrane import current_v, membrane_steps, storing_v_seq
from ..outputs import OutputSelector, select_output

__all__ = ["Benchmark", "Energy", "ExactSynapticOperations", "FiringRate", "SpikingJellyModel",
           "WeightFootprint"]

# the per-batch figures the metric classes accumulate (differences of the session's totals)
_ENERGY_PARTS = ("ops_pj", "addressing_pj", "inout_pj", "params_pj", "potential_pj")
_COUNTS = ("samples", "sops", "macs", "dense_macs", "spikes", "neuron_updates")
_BATCH_FIELDS = (*_COUNTS, "energy_pj", *_ENERGY_PARTS)


class SpikingJellyNeuronHook(NeuronHook):
    """NeuroBench's neuron hook for a SpikingJelly neuron: its output, and its membrane before and after each
    time step (what NeuroBench's ``MembraneUpdates`` compares; it reads snnTorch's ``mem`` otherwise)."""

    def __init__(self, layer: nn.Module, name: str | None = None):
        super().__init__(layer, name)
        self.spiking = True
        self._before: list = []

    def pre_hook_fn(self, layer, input):
        self.activation_inputs.append(input)
        self._before.append(current_v(layer))

    def hook_fn(self, layer, input, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        self.activation_outputs.append(out)
        steps = membrane_steps(layer, self._before.pop() if self._before else None, out)
        if steps is not None:
            before, after = steps
            self.pre_fire_mem_potential += before
            self.post_fire_mem_potential += after

    def reset(self):
        super().reset()
        self._before.clear()


class SpikingJellyModel(NeuroBenchModel):
    """A SpikingJelly network (either namespace) as a NeuroBench model; see the module docstring.

    ``net`` takes NeuroBench's batch (``[B, ...]``, the data loader's first tensor) and returns logits or a
    tuple/list/dict whose ``output`` tensor they are (:func:`snn_lats.outputs.select_output`); ``[T, B, C]``
    logits are averaged over T. ``energy``, ``weight_format``, ``weight_bits`` and ``energy_costs`` configure
    the snn_lats counters (those of :func:`snn_lats.metrics.measure`); ``count=False`` runs none of them (the
    snn_lats metric classes then refuse the model).
    """

    def __init__(self, net: nn.Module, *, squash: bool = False, output: OutputSelector = None,
                 energy: str = "proxy", weight_format: str = "dense", weight_bits: int = 32,
                 energy_costs: LemaireCosts | None = None, count: bool = True):
        check_type("net", net, nn.Module, "a torch.nn.Module (a SpikingJelly network)")
        squash = check_bool("squash", squash)
        count = check_bool("count", count)
        if not spiking.is_spiking(net):
            raise ValueError(f"net ({type(net).__name__}) has no SpikingJelly neuron: SpikingJellyModel is "
                             "for spiking networks; wrap an ANN in neurobench.models.TorchModel")
        prepared = sorted(n for n, m in net.named_modules() if parametrize.is_parametrized(m))
        if prepared and not squash:
            raise ValueError(f"net is prepared by a pruner (parametrized weights in {prepared[:3]}): "
                             "NeuroBench's binarized layer copies ignore the parametrization and miscount "
                             "it. Squash it first (pruner.squash()) or pass squash=True to benchmark a "
                             "squashed copy")
        self.squashed = bool(prepared)
        if prepared:
            from ..export.step_graph import squashed_copy
            net = squashed_copy(net)
        super().__init__()
        self.net = net.eval()
        self.output = output
        for neuron_type in spiking.NEURON_TYPES:
            self.add_activation_module(neuron_type)
        self.session = (MeasureSession(net, output=output, energy=energy, weight_format=weight_format,
                                       weight_bits=weight_bits, energy_costs=energy_costs, neurobench=True)
                        if count else None)
        self.last_batch: dict[str, float] | None = None  # snn_lats's figures of the last batch
        self._totals = dict.fromkeys(_BATCH_FIELDS, 0.0)

    def __net__(self) -> nn.Module:
        return self.net

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        spiking.reset_state(self.net)  # NeuroBench runs batch after batch with no reset
        if self.session is not None:
            with self.session:
                out = self.session.run(batch)
            self._batch_done()
        else:
            with storing_v_seq(self.net.modules()):
                out = self.net(batch)
            spiking.reset_state(self.net)
        logits = select_output(out, self.output)
        return logits.mean(0) if logits.dim() == 3 else logits

    def _batch_done(self) -> None:
        t = self.report().total
        energy = t["energy"]
        totals = {k: float(t[k]) for k in _COUNTS}
        totals["energy_pj"] = float(energy["total_pj"])
        totals |= {k: float(energy.get(k, 0.0)) for k in _ENERGY_PARTS}
        self.last_batch = {k: totals[k] - self._totals[k] for k in _BATCH_FIELDS}
        self._totals = totals

    def report(self) -> MetricsReport:
        """snn_lats's report of every batch this wrapper has run (needs ``count=True``)."""
        if self.session is None:
            raise ValueError("this SpikingJellyModel was made with count=False: it keeps no snn_lats counts")
        return self.session.report()

    def register_hooks(self):
        for entry in self.activation_layers():
            hook = SpikingJellyNeuronHook if spiking.is_neuron(entry["layer"]) else NeuronHook
            self.activation_hooks.append(hook(entry["layer"], entry["layer_name"]))
        for layer in self.connection_layers():
            self.connection_hooks.append(LayerHook(layer))


def _counting_model(model: Any, metric: str) -> SpikingJellyModel:
    if not isinstance(model, SpikingJellyModel) or model.session is None:
        raise TypeError(f"{metric} is backed by snn_lats's counters: it needs a "
                        "snn_lats.integrations.neurobench.SpikingJellyModel with count=True, got "
                        f"{type(model).__name__}"
                        + (" with count=False" if isinstance(model, SpikingJellyModel) else ""))
    return model


class _SnnLatsMetric(AccumulatedMetric):
    """Accumulates the wrapper's per-batch figures; reports them per sample."""

    def __init__(self):
        super().__init__(requires_hooks=False)
        self.reset()

    def reset(self):
        self.sums = dict.fromkeys(_BATCH_FIELDS, 0.0)
        self.report: MetricsReport | None = None

    def __call__(self, model, preds, data):
        model = _counting_model(model, type(self).__name__)
        for k, v in model.last_batch.items():
            self.sums[k] += v
        self.report = model.report()
        return self.compute()


class ExactSynapticOperations(_SnnLatsMetric):
    """Per sample, by snn_lats's rules: ``SOPs`` (a spike one accumulate per nonzero weight it reaches, an
    integer n counted n times, the spike matrix products, masks and sums outside layers included),
    ``MACs`` (real inputs, nonzero weights, every output position), ``Dense_MACs`` (one dense ANN pass)."""

    def compute(self):
        n = self.sums["samples"]
        if not n:
            return {"SOPs": 0.0, "MACs": 0.0, "Dense_MACs": 0.0}
        return {"SOPs": self.sums["sops"] / n, "MACs": self.sums["macs"] / n,
                "Dense_MACs": self.sums["dense_macs"] / n}


class Energy(_SnnLatsMetric):
    """Per sample energy in pJ under the wrapper's energy model (``"proxy"``, ``"lemaire"`` with its weight
    format and width, or ``"lemaire-spikingjelly"``), with its components for the Lemaire settings."""

    def compute(self):
        n = self.sums["samples"]
        if not n or self.report is None:
            return {"total_pj": 0.0}
        e = self.report.total["energy"]
        per_sample = {"model": e["model"], "total_pj": self.sums["energy_pj"] / n}
        if e["model"] != "proxy":
            per_sample |= {k: self.sums[k] / n for k in _ENERGY_PARTS}
            per_sample |= {"weight_format": e["weight_format"], "weight_bits": e["weight_bits"]}
        return per_sample


class FiringRate(_SnnLatsMetric):
    """Spikes over neuron updates (time steps included), all spiking layers: 1 − NeuroBench's
    ActivationSparsity for 0/1 spikes."""

    def compute(self):
        updates = self.sums["neuron_updates"]
        return self.sums["spikes"] / updates if updates else 0.0


class WeightFootprint(StaticMetric):
    """Bytes of the model's conv and linear weights under every storage format and bit width
    (:func:`snn_lats.metrics.storage.weight_footprint`), and under the wrapper's (``"chosen"``)."""

    def __call__(self, model):
        model = _counting_model(model, "WeightFootprint")
        from ..metrics.storage import weight_footprint

        fp = weight_footprint(model.net)
        s = model.session
        table = {f"{f}{b}": fp.bytes(f, b) for f in ("dense", "bitmask", "csr") for b in (32, 16, 8)}
        return {"chosen": fp.bytes(s.weight_format, s.weight_bits), **table}


_SNN_LATS_METRICS = (_SnnLatsMetric, WeightFootprint)


class Benchmark(_NeuroBenchBenchmark):
    """NeuroBench's ``Benchmark``, checked first: the snn_lats metric classes in ``metric_list`` need a
    :class:`SpikingJellyModel` with counting on, and a spiking ``model`` that is not one (NeuroBench's
    ``TorchModel`` around a SpikingJelly network) is refused, since NeuroBench alone miscounts it.
    NeuroBench's own Benchmark would print such errors per batch and report 0."""

    def __init__(self, model, dataloader, preprocessors, postprocessors, metric_list):
        check_type("model", model, NeuroBenchModel, "a neurobench.models.NeuroBenchModel")
        if not (isinstance(metric_list, (list, tuple)) and len(metric_list) == 2):
            raise ValueError("metric_list must be [static metric classes, workload metric classes], got "
                             f"{metric_list!r}")
        ours = [m.__name__ for group in metric_list for m in group
                if isinstance(m, type) and issubclass(m, _SNN_LATS_METRICS)]
        if ours:
            _counting_model(model, ", ".join(ours))
        if not isinstance(model, SpikingJellyModel) and spiking.is_spiking(model.__net__()):
            raise ValueError(f"model is a {type(model).__name__} around a SpikingJelly network: NeuroBench "
                             "finds none of its neurons and never resets their state; wrap the network in "
                             "snn_lats.integrations.neurobench.SpikingJellyModel")
        super().__init__(model, dataloader, preprocessors, postprocessors, metric_list)
