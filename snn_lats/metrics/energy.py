"""Energy of one measured pass: the compute proxy, a memory-aware model after Lemaire et al. 2022 with weight
storage formats, and SpikingJelly 2.0's reading of that model, all from the counts ``measure`` keeps.

Lemaire et al. 2022 (ICONIP, arXiv 2210.13107) charge every layer for compute (adds, multiply-accumulates),
addressing (locating each spike's targets) and SRAM accesses (inputs, weights and biases, membrane potentials,
outputs), each byte at a cost that grows with the size of the buffer it is read from or written to:

    E = e_add·adds + (e_mul + e_add)·MACs                                              (compute)
      + e_add·acc_addr + (e_mul + e_add)·mac_addr                                     (addressing)
      + Σ_accesses bytes · c(buffer bytes)                                            (memory)

with c() piecewise linear through (0, 0), (8 KiB, 2.5), (32 KiB, 5), (1 MiB, 25) pJ per byte (10/20/100 pJ
per 32-bit access), held at 25 beyond 1 MiB. The costs are SpikingJelly 2.0's ``LemaireEnergyCostConfig``
defaults (45 nm, e_add 0.1 pJ, e_mul 3.1 pJ), and spikes travel through FIFOs of 1,000 32-bit messages.

Two settings (``energy=`` of :func:`snn_lats.metrics.measure`):

- ``"lemaire"`` (exact): the fan-out a spike reaches is counted on the output grid (border taps do not
  exist), an integer input n is n spikes, every buffer holds one sample, and the weights are read in the
  chosen storage format (see :func:`synapse_energy` and docs/metrics.md);
- ``"lemaire-spikingjelly"``: SpikingJelly 2.0's ``estimate_lemaire_energy`` reproduced rule for rule (dense
  32-bit weights only), so that its figures can be compared with the exact ones.

Every module neither setting models is listed (:func:`not_modeled`), never dropped silently.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Any

from torch import nn

from .._checks import check_choice, check_int, check_type
from .firing import FiringCounter
from .products import ProductRow
from .storage import WEIGHT_BITS, WEIGHT_FORMATS, csr_index_bits, matrix_shape, storage_bytes
from .synops import CONV_TYPES, SynapseCounter

ENERGY_MODELS = ("proxy", "lemaire", "lemaire-spikingjelly")
WORD_BYTES = 4  # activations, potentials and spike messages are 32-bit words (Lemaire et al.)
COMPONENTS = ("ops_pj", "addressing_pj", "memory_pj", "inout_pj", "params_pj", "potential_pj")
ACCESSES = {  # access -> the buffer (energy component) it goes to
    "input_read": "inout", "output_write": "inout", "weight_read": "params", "index_read": "params",
    "bias_read": "params", "potential_read": "potential", "potential_write": "potential",
}
BUFFERS = ("inout", "params", "potential")
# modules that compute nothing at inference: no cost, not listed as unmodeled
FREE_TYPES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d,
                                          nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass(frozen=True)
class LemaireCosts:
    """Costs of the Lemaire model; the defaults are SpikingJelly 2.0's ``LemaireEnergyCostConfig``.

    ``memory_breakpoints``: four (buffer bytes, pJ per byte) points, x strictly increasing from 0; the cost of
    a byte is interpolated linearly between them and held at the last beyond it. ``fifo_elements``: the spike
    FIFO's capacity in 32-bit messages (1,000, the paper's setting)."""

    e_add_pj: float = 0.1
    e_mul_pj: float = 3.1
    memory_breakpoints: tuple[tuple[float, float], ...] = (
        (0.0, 0.0), (8.0 * 1024, 10.0 / 4), (32.0 * 1024, 20.0 / 4), (1024.0 * 1024, 100.0 / 4))
    fifo_elements: int = 1000

    def __post_init__(self):
        for name in ("e_add_pj", "e_mul_pj"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        points = self.memory_breakpoints
        ok = isinstance(points, tuple) and len(points) == 4 and all(
            isinstance(p, tuple) and len(p) == 2 and all(
                isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in p)
            for p in points)
        if not ok or points[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(points, points[1:], strict=False)):
            raise ValueError("memory_breakpoints must be 4 (bytes, pJ per byte) pairs of finite numbers "
                             f">= 0, starting at 0 bytes with bytes strictly increasing, got {points!r}")
        check_int("fifo_elements", self.fifo_elements, minimum=1)

    def memory_pj_per_byte(self, buffer_bytes: float) -> float:
        """The cost of one byte read from or written to a buffer of ``buffer_bytes``."""
        points = self.memory_breakpoints
        x = min(max(buffer_bytes, points[0][0]), points[-1][0])
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            if x <= x1:
                return y0 + (y1 - y0) / (x1 - x0) * (x - x0)
        return points[-1][1]  # unreachable: x is clamped to the last point

    @property
    def fifo_bytes(self) -> int:
        return self.fifo_elements * WORD_BYTES


@dataclass
class Tally:
    """Counts and energy of one row (layer, neuron, product) or of the whole model."""

    adds: float = 0.0
    macs: float = 0.0
    synops: float = 0.0  # synaptic events the model counts (its own SOP definition)
    acc_addr: float = 0.0
    mac_addr: float = 0.0
    bytes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACCESSES, 0.0))
    memory_pj: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUFFERS, 0.0))
    buffers: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUFFERS, 0.0))

    def access(self, what: str, nbytes: float, buffer_bytes: float, costs: LemaireCosts) -> None:
        """``nbytes`` read or written at a buffer of ``buffer_bytes`` (counted among the buffer sizes even
        when nothing is accessed, as in SpikingJelly)."""
        component = ACCESSES[what]
        self.bytes[what] += nbytes
        self.memory_pj[component] += nbytes * costs.memory_pj_per_byte(buffer_bytes)
        self.buffers[component] = max(self.buffers[component], buffer_bytes)

    def add(self, other: Tally) -> None:
        for name in ("adds", "macs", "synops", "acc_addr", "mac_addr"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.bytes.items():
            self.bytes[key] += value
        for key, value in other.memory_pj.items():
            self.memory_pj[key] += value
            self.buffers[key] = max(self.buffers[key], other.buffers[key])

    def result(self, costs: LemaireCosts) -> dict[str, Any]:
        ops = self.adds * costs.e_add_pj + self.macs * (costs.e_mul_pj + costs.e_add_pj)
        addressing = self.acc_addr * costs.e_add_pj + self.mac_addr * (costs.e_mul_pj + costs.e_add_pj)
        memory = sum(self.memory_pj.values())
        return {
            "total_pj": ops + addressing + memory,
            "ops_pj": ops, "addressing_pj": addressing, "memory_pj": memory,
            "inout_pj": self.memory_pj["inout"], "params_pj": self.memory_pj["params"],
            "potential_pj": self.memory_pj["potential"],
            "counts": {"adds": self.adds, "macs": self.macs, "synops": self.synops, "acc_addr": self.acc_addr,
                       "mac_addr": self.mac_addr, **{f"{k}_bytes": v for k, v in self.bytes.items()}},
            "buffers_bytes": dict(self.buffers),
        }


def check_energy(energy: str, weight_format: str, weight_bits: int, costs: LemaireCosts | None) -> None:
    """The energy arguments of ``measure``, checked before anything runs."""
    check_choice("energy", energy, ENERGY_MODELS)
    check_choice("weight_format", weight_format, WEIGHT_FORMATS)
    if isinstance(weight_bits, bool) or weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS} (bits per stored weight value), got "
                         f"{weight_bits!r}")
    check_type("energy_costs", costs, LemaireCosts, "a snn_lats.metrics.LemaireCosts", optional=True)
    if energy == "lemaire-spikingjelly" and (weight_format, weight_bits) != ("dense", 32):
        raise ValueError("energy='lemaire-spikingjelly' reproduces SpikingJelly's estimate, which reads "
                         f"dense 32-bit weights: weight_format={weight_format!r} and "
                         f"weight_bits={weight_bits} are not part of it (use energy='lemaire')")


# ---------------------------------------------------------------------------------------------------------
# The exact setting


def _kernel_elements(module: nn.Module) -> int:
    return math.prod(module.kernel_size) if isinstance(module, CONV_TYPES) else 1


def fanout_shape(module: nn.Module) -> tuple[int, int]:
    """(lists, list length) of the layer's fan-out view: one list per input channel and kernel tap (per input
    feature of a linear layer) holding the outputs it feeds, ``C_out / groups`` (``out_features``) long: the
    layout an event-driven core reads a spike's targets from."""
    if isinstance(module, CONV_TYPES):
        return module.in_channels * _kernel_elements(module), module.out_channels // module.groups
    return module.in_features, module.out_features


def synapse_energy(c: SynapseCounter, weight_format: str, weight_bits: int, costs: LemaireCosts,
                   writes_output: bool) -> Tally:
    """The exact Lemaire energy of one conv/linear layer over every call measure saw.

    Spike or integer input (E events, each of its ``taps`` a list of ``C_out/g`` targets, F = taps·C_out/g
    weights reached, S of them nonzero: the SOPs): the synapses visited are V = F for dense weights (every
    weight read, zeros included) and V = S for bitmask and CSR (only nonzeros); each is one add, one address
    add, one weight read and one potential read and write; each conv spike takes 2 address multiplies; each
    spike is read from the FIFO. Weight bytes: dense F·b/8; bitmask S·b/8 + F/8 (the mask bits of the
    fan-out); CSR S·(b + i)/8 + 2·taps·p/8 (a pointer pair per list), with i, p the index widths of
    :func:`snn_lats.metrics.storage.csr_index_bits` on the fan-out view. Buffers: the layer's weights in that
    format, its potentials for one sample and step.

    Real input (the encoding layer, an ANN): V = the dense MACs (every weight at every output position,
    padding included) for dense weights, the MACs on nonzero weights otherwise; each a multiply-accumulate; a
    conv reads one input per MAC, a linear layer its input once; addressing X + O (+ C_out·k per call for a
    conv), as SpikingJelly; weights per output row (storage.py's layout): dense V·b/8, bitmask MACs·b/8 +
    dense/8, CSR MACs·(b + i)/8 + 2·O·p/8. Outputs are written only when no neuron takes them
    (``writes_output``, an ANN). Biases: one add and one read per output element, in both cases.
    """
    m = c.module
    conv = isinstance(m, CONV_TYPES)
    dense = weight_format == "dense"
    value_bytes = weight_bits / 8
    lists, per_list = fanout_shape(m)
    rows, cols = matrix_shape(m.weight.shape)
    bias = getattr(m, "bias", None)
    bias_bytes = bias.numel() * value_bytes if bias is not None else 0.0
    t = Tally()
    for g in c.groups.values():
        outputs, inputs = g.out_elements * g.calls, g.in_elements * g.calls
        per_pass = g.time_steps * g.samples  # one sample, one step
        if g.kind != "real":
            reached = g.taps * per_list
            visited = reached if dense else g.sops
            buffer = storage_bytes(lists, per_list, c.nonzero, weight_format, weight_bits) + bias_bytes
            index_bits, pointer_bits = csr_index_bits(per_list, c.nonzero)
            index = {"dense": 0.0, "bitmask": reached / 8,
                     "csr": g.sops * index_bits / 8 + 2 * g.taps * pointer_bits / 8}[weight_format]
            t.adds += visited
            t.synops += g.sops
            t.acc_addr += visited
            t.mac_addr += 2 * g.events if conv else 0
            t.access("input_read", g.events * WORD_BYTES, costs.fifo_bytes, costs)
            t.access("weight_read", visited * value_bytes, buffer, costs)
            t.access("index_read", index, buffer, costs)
            potentials = g.out_elements / per_pass * WORD_BYTES
            t.access("potential_read", visited * WORD_BYTES, potentials, costs)
            t.access("potential_write", visited * WORD_BYTES, potentials, costs)
        else:
            visited = g.dense_macs if dense else g.macs
            buffer = storage_bytes(rows, cols, c.nonzero, weight_format, weight_bits) + bias_bytes
            index_bits, pointer_bits = csr_index_bits(cols, c.nonzero)
            index = {"dense": 0.0, "bitmask": g.dense_macs / 8,
                     "csr": g.macs * index_bits / 8 + 2 * outputs * pointer_bits / 8}[weight_format]
            t.macs += visited
            t.acc_addr += inputs + outputs + (m.out_channels * _kernel_elements(m) * g.calls if conv else 0)
            t.access("input_read", (visited if conv else inputs) * WORD_BYTES,
                     g.in_elements / per_pass * WORD_BYTES, costs)
            t.access("weight_read", visited * value_bytes, buffer, costs)
            t.access("index_read", index, buffer, costs)
            if writes_output:
                t.access("output_write", outputs * WORD_BYTES, g.out_elements / per_pass * WORD_BYTES, costs)
        if bias is not None:
            t.adds += outputs
            t.access("bias_read", outputs * value_bytes, buffer, costs)
    return t


def _types(module: str, names: Iterable[str]) -> tuple[type, ...]:
    try:
        found = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(getattr(found, n) for n in names if isinstance(getattr(found, n, None), type))


def _charge_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(leaky neurons: one multiply-accumulate per update, non-leaky IF neurons), both namespaces and
    snn_lats's fused nodes."""
    lif = ("LIFNode", "ParametricLIFNode", "MultiStepLIFNode", "MultiStepParametricLIFNode")
    integrate = ("IFNode", "MultiStepIFNode")
    modules = ("spikingjelly.activation_based.neuron", "spikingjelly.clock_driven.neuron",
               "snn_lats.snn.neurons")
    return (tuple(t for mod in modules for t in _types(mod, lif)),
            tuple(t for mod in modules for t in _types(mod, integrate)))


def neuron_charge(module: nn.Module) -> str | None:
    """``"lif"`` (a leak: one multiply-accumulate per update), ``"if"`` (none) or None (a neuron whose charge
    the model does not know: its compute is not modeled, its memory traffic is)."""
    lif, integrate = _charge_types()
    if isinstance(module, lif):
        return "lif"
    if isinstance(module, integrate):
        return "if"
    return None


def neuron_energy(c: FiringCounter, costs: LemaireCosts) -> Tally:
    """A spiking neuron layer: every update reads and writes its potential (buffer: the layer's neurons for
    one sample and step), every spike is one add (the reset) and one FIFO write; a leaky neuron adds one
    multiply-accumulate per update (Lemaire et al.; SpikingJelly's rule)."""
    t = Tally()
    leaky = neuron_charge(c.module) == "lif"
    for (shape, multi), (calls, spikes) in c.groups.items():
        updates = math.prod(shape) * calls
        per_pass = math.prod(shape[2:] if multi else shape[1:]) * WORD_BYTES
        t.access("potential_read", updates * WORD_BYTES, per_pass, costs)
        t.access("potential_write", updates * WORD_BYTES, per_pass, costs)
        t.access("output_write", spikes * WORD_BYTES, costs.fifo_bytes, costs)
        t.adds += spikes
        t.macs += updates if leaky else 0
    return t


def product_energy(row: ProductRow, samples: int, steps: float, costs: LemaireCosts) -> Tally:
    """A product outside layers (spiking attention), by the same rules as a spike-driven layer whose weights
    are the other operand.

    matmul with a spike or integer operand: its events are read from the FIFO; each SOP reads one value of the
    other operand and reads and writes its accumulator (one add). real × real: each MAC reads both operands
    and the output is written once. mask (a spike selecting values): no arithmetic; each selected value is
    read and written. sum of spikes or integers: each unit summed is read from the FIFO and added; the output
    is written once. Buffers hold one sample and step of the operand or output (executed elements over
    samples × steps)."""
    t = Tally()
    per_pass = max(samples * steps, 1)
    out_buffer = row.executed_out_elements / per_pass * WORD_BYTES
    if row.type == "matmul":
        operand_buffer = row.executed_operand_elements / per_pass * WORD_BYTES
        t.adds += row.sops
        t.synops += row.sops
        t.macs += row.macs
        t.access("input_read", row.events * WORD_BYTES, costs.fifo_bytes, costs)
        t.access("input_read", (row.sops + 2 * row.macs) * WORD_BYTES, operand_buffer, costs)
        t.access("potential_read", row.sops * WORD_BYTES, out_buffer, costs)
        t.access("potential_write", row.sops * WORD_BYTES, out_buffer, costs)
        if row.macs:
            t.access("output_write", row.executed_out_elements * WORD_BYTES, out_buffer, costs)
    elif row.type == "mask":
        buffer = row.executed_dense_ops / per_pass * WORD_BYTES
        t.access("input_read", row.selected * WORD_BYTES, buffer, costs)
        t.access("output_write", row.selected * WORD_BYTES, buffer, costs)
    else:  # sum
        t.adds += row.sops
        t.synops += row.sops
        t.access("input_read", row.sops * WORD_BYTES, costs.fifo_bytes, costs)
        t.access("output_write", row.executed_out_elements * WORD_BYTES, out_buffer, costs)
    return t


# ---------------------------------------------------------------------------------------------------------
# SpikingJelly 2.0's estimate_lemaire_energy, rule for rule


def _sj(name: str):
    return importlib.import_module(f"spikingjelly.activation_based.{name}")


def spikingjelly_scope() -> tuple[tuple[type, ...], tuple[type, ...], type | None]:
    """(the neurons SpikingJelly's Lemaire rules cover, IF and LIF with subclasses; its leaky ones; its
    BaseNode) from SpikingJelly 2.x's activation_based namespace, empty where it has none."""
    try:
        neuron = _sj("neuron")
    except ImportError:
        return (), (), None
    lif = getattr(neuron, "LIFNode", None)
    covered = tuple(t for t in (getattr(neuron, "IFNode", None), lif) if t is not None)
    return covered, ((lif,) if lif is not None else ()), getattr(neuron, "BaseNode", None)


def synapse_energy_spikingjelly(c: SynapseCounter, costs: LemaireCosts, model_has_neurons: bool,
                                buffers: str = "batch") -> Tally:
    """SpikingJelly 2.0's ``synaptic_rule`` for one layer: only 0/1 inputs are spikes (integers are dense
    inputs); a spike reaches C_out/g·Πk weights and potentials whatever the border, and Π⌈k/s⌉ of them count
    as synops and adds; buffers are the whole batch's (outputs over T for potentials), the parameters' (every
    parameter of the module, 32-bit) and the FIFO's. ``buffers="sample"`` sizes the input, output and
    potential buffers for one sample instead, as the exact setting does (to tell the two rules apart)."""
    check_choice("buffers", buffers, ("batch", "sample"))
    m = c.module
    conv = isinstance(m, CONV_TYPES)
    params_buffer = sum(p.numel() for p in m.parameters(recurse=False)) * WORD_BYTES
    bias = getattr(m, "bias", None) is not None
    if conv:
        per_spike = m.out_channels // m.groups
        event_per_spike = per_spike * math.prod(math.ceil(k / s) for k, s in zip(m.kernel_size, m.stride,
                                                                                         strict=True))
        fanout_per_spike = per_spike * _kernel_elements(m)
        fan_in = math.prod(m.weight.shape[1:])
    else:
        event_per_spike = fanout_per_spike = m.out_features
        fan_in = m.in_features
    multi = getattr(m, "step_mode", "s") == "m"
    t = Tally()
    for g in c.groups.values():
        out_bytes = g.out_elements * WORD_BYTES
        in_bytes = g.in_elements * WORD_BYTES
        n = g.calls
        per_pass = g.time_steps * g.samples if buffers == "sample" else 1
        if g.kind == "binary":
            active = g.events  # 0/1 values: the nonzero count
            fanout = active * fanout_per_spike
            t.adds += active * event_per_spike
            t.synops += active * event_per_spike
            t.acc_addr += fanout
            t.mac_addr += 2 * active if conv else 0
            t.access("input_read", active * WORD_BYTES, costs.fifo_bytes, costs)
            t.access("weight_read", fanout * WORD_BYTES, params_buffer, costs)
            steps = g.in_shape[0] if multi else 1
            potentials = out_bytes // max(steps, 1) if buffers == "batch" else out_bytes / per_pass
            t.access("potential_read", fanout * WORD_BYTES, potentials, costs)
            t.access("potential_write", fanout * WORD_BYTES, potentials, costs)
        else:
            uses = g.out_elements * fan_in * n
            t.macs += uses
            t.acc_addr += (g.in_elements + g.out_elements + (m.out_channels * _kernel_elements(m)
                                                             if conv else 0)) * n
            t.access("input_read", (uses * WORD_BYTES) if conv else in_bytes * n, in_bytes / per_pass,
                     costs)
            t.access("weight_read", uses * WORD_BYTES, params_buffer, costs)
            if not model_has_neurons:
                t.access("output_write", out_bytes * n, out_bytes / per_pass, costs)
        if bias:
            t.adds += g.out_elements * n
            t.access("bias_read", g.out_elements * n * WORD_BYTES, params_buffer, costs)
    return t


def neuron_energy_spikingjelly(c: FiringCounter, costs: LemaireCosts, buffers: str = "batch") -> Tally:
    """SpikingJelly 2.0's ``neuron_rule`` (IFNode, LIFNode and their subclasses): potentials read and written
    once per update, the buffer the whole batch's neurons of one step (one sample's with
    ``buffers="sample"``); spikes written to the FIFO and one add each; one multiply-accumulate per LIF
    update."""
    check_choice("buffers", buffers, ("batch", "sample"))
    _, leaky_types, _ = spikingjelly_scope()
    leaky = isinstance(c.module, leaky_types)
    multi = getattr(c.module, "step_mode", "s") == "m"
    t = Tally()
    for (shape, _), (calls, spikes) in c.groups.items():
        steps = shape[0] if multi else 1
        numel = math.prod(shape)
        buffer = numel // max(steps, 1) * WORD_BYTES
        size = buffer if buffers == "batch" else buffer / (shape[1] if multi else shape[0])
        t.access("potential_read", buffer * steps * calls, size, costs)
        t.access("potential_write", buffer * steps * calls, size, costs)
        t.access("output_write", spikes * WORD_BYTES, costs.fifo_bytes, costs)
        t.adds += spikes
        t.macs += numel * calls if leaky else 0
    return t


# ---------------------------------------------------------------------------------------------------------
# What neither setting models


def not_modeled(model: nn.Module, energy: str, counted: set[int], neuron_names: Iterable[str],
                product_rows: Iterable[str]) -> list[dict[str, Any]]:
    """Every module (and product row) whose energy the setting leaves out, one entry per module type:
    ``{"type", "count", "names" (up to 5), "why"}``.

    Exact setting: leaf modules that are not counted layers, spiking neurons or free (Identity, Flatten,
    Dropout): normalization, pooling, ANN activations, ...; neurons whose charge it does not know (their
    compute only). SpikingJelly's setting: what its ``validate_model`` omits (every leaf that is not a
    Linear/Conv, every neuron but IF/LIF), and the products outside layers, which it never sees."""
    by_type: dict[tuple[str, str], dict[str, Any]] = {}

    def add(kind: str, name: str, why: str) -> None:
        entry = by_type.setdefault((kind, why), {"type": kind, "count": 0, "names": [], "why": why})
        entry["count"] += 1
        if len(entry["names"]) < 5:
            entry["names"].append(name or "(model)")

    neuron_set = set(neuron_names)
    inside_neurons = {id(c) for n, m in model.named_modules() if n in neuron_set for c in m.modules()
                      if c is not m}
    covered, _, _ = spikingjelly_scope()
    for name, m in model.named_modules():
        if id(m) in inside_neurons or id(m) in counted:
            continue
        if name in neuron_set:
            if energy == "lemaire" and neuron_charge(m) is None:
                add(type(m).__name__, name, "its charge is not modeled (its potentials and spikes are)")
            elif energy == "lemaire-spikingjelly" and not isinstance(m, covered):
                add(type(m).__name__, name, "SpikingJelly's rules cover IFNode and LIFNode only")
            continue
        if any(True for _ in m.children()):
            continue  # a container: its leaves are visited
        if energy == "lemaire" and isinstance(m, FREE_TYPES):
            continue
        if energy != "lemaire":
            why = "SpikingJelly omits modules outside the paper's scope"
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            why = "no Lemaire rule: folded into the conv before deployment, its cost is the bias's"
        else:
            why = "no Lemaire rule for it: its compute and memory traffic are left out"
        add(type(m).__name__, name, why)
    if energy == "lemaire-spikingjelly":
        for row in product_rows:
            add("product", row, "SpikingJelly counts module calls only: products outside layers are not seen")
    return list(by_type.values())


def costs_dict(costs: LemaireCosts) -> dict[str, Any]:
    d = asdict(costs)
    d["memory_breakpoints"] = [list(p) for p in costs.memory_breakpoints]
    return d
