"""Deployment figures of an exported NIR graph, per layer: what a neuromorphic chip has to hold.

For each weight layer (``nir.Conv1d``/``nir.Conv2d``/``nir.Affine``/``nir.Linear``), for one sample and one
time step:

- ``inputs``/``neurons``: the neurons it reads from and the outputs it drives (``C·H·W``, or features);
- ``weights``/``nonzero_weights``: the stored weight entries (a convolution's kernel, shared across
  positions) and how many of them are nonzero;
- ``synapses``: the nonzero connections once a convolution is unrolled: every output neuron's kernel taps
  that land on an input neuron (taps on the zero padding connect nothing), counting only nonzero weights.
  This is what a chip that does not share kernels (one synapse per connection) stores;
- ``fan_in``/``fan_out``: nonzero synapses into each output neuron and out of each input neuron, max and
  mean (mean fan-in = synapses / neurons, mean fan-out = synapses / inputs), counted exactly by convolving
  the nonzero pattern with ones;
- weight memory: the stored weights under ``snn_lats.metrics.storage``'s formats (dense, bitmask, CSR) at 32,
  16 and 8 bits.

``limits`` (max fan-in, fan-out, synapses per layer, neurons per neuron layer) names every layer beyond them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_int, check_type
from ..io import atomic_write
from ..metrics.storage import WEIGHT_BITS, WEIGHT_FORMATS, LayerStorage, layer_storage


@dataclass(frozen=True)
class Limits:
    """A chip's per-layer limits (None: no limit). ``max_neurons`` applies to each neuron layer, the others to
    each weight layer. docs/deploy.md lists public figures of Loihi, Xylo and Speck with their sources."""

    max_fan_in: int | None = None
    max_fan_out: int | None = None
    max_synapses: int | None = None
    max_neurons: int | None = None

    def __post_init__(self):
        for f in fields(self):
            check_int(f.name, getattr(self, f.name), minimum=1, optional=True)


def _limits(value: Any) -> Limits:
    if value is None or isinstance(value, Limits):
        return value or Limits()
    if isinstance(value, dict):
        known = {f.name for f in fields(Limits)}
        unknown = sorted(set(value) - known, key=str)
        if unknown:
            raise ValueError(f"limits: unknown keys {unknown}; allowed: {sorted(known)}")
        return Limits(**value)
    raise TypeError(f"limits must be a Limits, a dict with keys {[f.name for f in fields(Limits)]} or None, "
                    f"got {type(value).__name__}")


@dataclass(frozen=True)
class LayerFigures:
    node: str
    module: str
    kind: str
    inputs: int
    neurons: int
    weights: int
    nonzero_weights: int
    synapses: int
    fan_in_max: int
    fan_in_mean: float
    fan_out_max: int
    fan_out_mean: float
    storage: LayerStorage

    def bytes(self, format: str, bits: int) -> int:
        return self.storage.bytes(format, bits)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "storage"}
        out["bytes"] = self.storage.to_dict()["bytes"]
        return out


@dataclass
class DeploymentReport:
    """``layers``: :class:`LayerFigures` per weight node; ``neuron_layers``: {neuron node: (type, neurons)};
    ``exceeding``: one line per layer and limit it exceeds."""

    layers: dict[str, LayerFigures] = field(default_factory=dict)
    neuron_layers: dict[str, tuple[str, int]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    exceeding: list[str] = field(default_factory=list)

    @property
    def neurons(self) -> int:
        return sum(n for _, n in self.neuron_layers.values())

    @property
    def synapses(self) -> int:
        return sum(layer.synapses for layer in self.layers.values())

    def bytes(self, format: str, bits: int) -> int:
        return sum(layer.bytes(format, bits) for layer in self.layers.values())

    def to_dict(self) -> dict:
        return {"layers": {n: f.to_dict() for n, f in self.layers.items()},
                "neuron_layers": {n: {"type": t, "neurons": k} for n, (t, k) in self.neuron_layers.items()},
                "total": {"neurons": self.neurons, "synapses": self.synapses,
                          "nonzero_weights": sum(f.nonzero_weights for f in self.layers.values()),
                          "weights": sum(f.weights for f in self.layers.values()),
                          "bytes": {f"{fmt}{bits}": self.bytes(fmt, bits) for fmt in WEIGHT_FORMATS
                                    for bits in WEIGHT_BITS}},
                "limits": asdict(self.limits), "exceeding": list(self.exceeding)}

    def to_json(self, path: str | os.PathLike) -> None:
        """Write atomically (:func:`snn_lats.io.atomic_write`)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2))

    def __str__(self) -> str:
        width = max([len(n) for n in self.layers] + [5])
        head = (f"{'layer':<{width}}  {'neurons':>9}  {'synapses':>11}  {'fan-in max/mean':>16}  "
                f"{'fan-out max/mean':>16}  {'nnz/weights':>17}")
        rows = []
        for n, f in self.layers.items():
            fan_in, fan_out = f"{f.fan_in_max}/{f.fan_in_mean:.1f}", f"{f.fan_out_max}/{f.fan_out_mean:.1f}"
            rows.append(f"{n:<{width}}  {f.neurons:>9,}  {f.synapses:>11,}  {fan_in:>16}  {fan_out:>16}  "
                        f"{f'{f.nonzero_weights:,}/{f.weights:,}':>17}")
        columns = [(fmt, bits) for fmt in WEIGHT_FORMATS for bits in WEIGHT_BITS]
        memory = [f"{'layer':<{width}}" + "".join(f"  {fmt + str(bits):>10}" for fmt, bits in columns)]
        memory += [f"{n:<{width}}" + "".join(f"  {f.bytes(fmt, bits):>10,}" for fmt, bits in columns)
                   for n, f in self.layers.items()]
        memory.append(f"{'total':<{width}}"
                      + "".join(f"  {self.bytes(fmt, bits):>10,}" for fmt, bits in columns))
        lines = ["per weight layer, one sample, one time step", head, *rows,
                 f"{len(self.neuron_layers)} neuron layers, {self.neurons:,} neurons; "
                 f"{self.synapses:,} synapses",
                 "", "weight memory in bytes (format + bits per value)", *memory]
        if any(v is not None for v in asdict(self.limits).values()):
            lines += ["", f"limits {asdict(self.limits)}: "
                      + (f"{len(self.exceeding)} exceeded" if self.exceeding else "all layers within")]
            lines += [f"  {line}" for line in self.exceeding]
        return "\n".join(lines)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shape(types: dict) -> tuple[int, ...]:
    value = next(iter(types.values()))
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def _conv_fans(weight: np.ndarray, input_shape: tuple[int, ...], stride, padding, dilation, groups):
    """(fan-in per output neuron, fan-out per input neuron, output shape) of a 1-d or 2-d convolution, exact
    counts of nonzero synapses (computed in float64)."""
    dims = weight.ndim - 2
    conv = F.conv1d if dims == 1 else F.conv2d
    transposed = F.conv_transpose1d if dims == 1 else F.conv_transpose2d
    mask = torch.from_numpy(weight != 0).double()

    def tup(v):
        return tuple(int(x) for x in np.broadcast_to(np.asarray(v), (dims,)))

    stride, padding, dilation = tup(stride), tup(padding), tup(dilation)
    groups = int(np.asarray(groups).reshape(-1)[0])
    ones = torch.ones(1, *input_shape, dtype=torch.float64)
    fan_in = conv(ones, mask, None, stride, padding, dilation, groups)[0]
    fan_out = transposed(torch.ones(1, *fan_in.shape, dtype=torch.float64), mask, None, stride, padding, 0,
                         groups, dilation)[0]
    # input positions past the last window get no synapse: pad the transposed result back to the input size
    pad = []
    for have, want in zip(reversed(fan_out.shape[1:]), reversed(input_shape[1:]), strict=True):
        pad += [0, want - have]
    fan_out = F.pad(fan_out, pad)
    return fan_in, fan_out, tuple(fan_in.shape)


def _layer_figures(name: str, node, nir) -> LayerFigures:
    weight = np.asarray(node.weight)
    module = _text((node.metadata or {}).get("module", name))
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        # channels from the weight: nir 1.0.8 types a grouped convolution's input with C_in/groups of them
        groups = int(np.asarray(node.groups).reshape(-1)[0])
        input_shape = (weight.shape[1] * groups, *_shape(node.input_type)[1:])
        fan_in, fan_out, output_shape = _conv_fans(weight, input_shape, node.stride, node.padding,
                                                   node.dilation, node.groups)
    else:
        mask = torch.from_numpy(weight != 0).double()
        fan_in, fan_out = mask.sum(1), mask.sum(0)
        input_shape, output_shape = (weight.shape[1],), (weight.shape[0],)
    inputs, neurons = math.prod(input_shape), math.prod(output_shape)
    synapses = int(fan_in.sum())
    return LayerFigures(
        node=name, module=module, kind=type(node).__name__, inputs=inputs, neurons=neurons,
        weights=int(weight.size), nonzero_weights=int(np.count_nonzero(weight)), synapses=synapses,
        fan_in_max=int(fan_in.max()) if fan_in.numel() else 0,
        fan_in_mean=synapses / neurons if neurons else 0.0,
        fan_out_max=int(fan_out.max()) if fan_out.numel() else 0,
        fan_out_mean=synapses / inputs if inputs else 0.0,
        storage=layer_storage(torch.from_numpy(weight)))


def _in_order(graph) -> list[str]:
    """The graph's nodes in topological order, ties by name: the same order for a graph and for the same
    graph read back from a file (which lists nodes alphabetically)."""
    import heapq

    incoming = {name: 0 for name in graph.nodes}
    following: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target in set(map(tuple, graph.edges)):
        incoming[target] += 1
        following[source].append(target)
    ready = [name for name, n in incoming.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for target in following[name]:
            incoming[target] -= 1
            if incoming[target] == 0:
                heapq.heappush(ready, target)
    return order + sorted(set(graph.nodes) - set(order))  # a cycle's nodes last


def deployment_report(graph, limits: Limits | dict | None = None) -> DeploymentReport:
    """The deployment figures of ``graph`` (a ``nir.NIRGraph`` from :func:`to_nir`, or the path of a NIR
    file), per weight layer, and every layer beyond ``limits``."""
    from .graph import require_nir

    nir, _ = require_nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(graph)
    check_type("graph", graph, nir.NIRGraph, "a nir.NIRGraph or the path of a NIR file")
    limits = _limits(limits)
    report = DeploymentReport(limits=limits)
    for name in _in_order(graph):
        node = graph.nodes[name]
        if isinstance(node, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)):
            report.layers[name] = _layer_figures(name, node, nir)
        elif isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            report.neuron_layers[name] = (type(node).__name__, int(np.asarray(node.v_threshold).size))
        elif isinstance(node, nir.NIRGraph):
            raise ValueError(f"graph: node {name!r} is a subgraph; the figures are for flat graphs (as "
                             "to_nir writes them)")
    for name, f in report.layers.items():
        where = f"{name} ({f.module})"
        for value, limit, what in ((f.fan_in_max, limits.max_fan_in, "fan-in"),
                                   (f.fan_out_max, limits.max_fan_out, "fan-out"),
                                   (f.synapses, limits.max_synapses, "synapses")):
            if limit is not None and value > limit:
                report.exceeding.append(f"{where}: {what} {value:,} > {limit:,}")
    if limits.max_neurons is not None:
        for name, (_, count) in report.neuron_layers.items():
            if count > limits.max_neurons:
                module = _text((graph.nodes[name].metadata or {}).get("module", name))
                report.exceeding.append(f"{name} ({module}): neurons {count:,} > {limits.max_neurons:,}")
    return report
