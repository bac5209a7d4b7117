"""The energy models of measure: Lemaire et al. 2022's memory-aware model with weight storage formats (against
per-synapse loops), SpikingJelly 2.0's estimate_lemaire_energy (run side by side), the footprint, per-sample
figures, what is not modeled, and bad input."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import models
from snn_lats.metrics import LemaireCosts, measure, weight_footprint
from tests.zoo_reference import loop_fanout, loop_output_rows

FORMATS = ("dense", "bitmask", "csr")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread is faster


def test_memory_cost_is_the_piecewise_line_through_the_breakpoints():
    c = LemaireCosts()
    assert c.memory_pj_per_byte(0) == 0
    assert c.memory_pj_per_byte(4096) == pytest.approx(1.25)  # half of 8 KiB -> half of 10 pJ / 4 bytes
    assert c.memory_pj_per_byte(8192) == pytest.approx(2.5)
    assert c.memory_pj_per_byte(16384) == pytest.approx(2.5 + 2.5 * 8192 / 24576)
    assert c.memory_pj_per_byte(32768) == pytest.approx(5.0)
    assert c.memory_pj_per_byte(2 ** 20) == pytest.approx(25.0)
    assert c.memory_pj_per_byte(2 ** 30) == pytest.approx(25.0)  # held beyond 1 MiB
    assert c.fifo_bytes == 4000


@pytest.mark.parametrize("kwargs, match", [
    (dict(e_add_pj=-1.0), "e_add_pj must be a finite number >= 0"),
    (dict(e_mul_pj=float("nan")), "e_mul_pj must be a finite number >= 0"),
    (dict(memory_breakpoints=((0.0, 0.0), (1.0, 1.0))), "memory_breakpoints must be 4"),
    (dict(memory_breakpoints=((0.0, 0.0), (2.0, 1.0), (1.0, 2.0), (3.0, 3.0))), "strictly increasing"),
    (dict(fifo_elements=0), "fifo_elements"),
])
def test_costs_refuse_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LemaireCosts(**kwargs)


def _pruned(module: nn.Module, keep: float = 0.5) -> nn.Module:
    with torch.no_grad():
        module.weight.mul_((torch.rand_like(module.weight) < keep).float())
    return module


class ConvThenNeuron(nn.Module):
    def __init__(self, stride=1, padding=1, dilation=1, groups=1):
        super().__init__()
        self.conv = _pruned(layer.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation,
                                         groups=groups, step_mode="m"))
        self.sn = neuron.IFNode(step_mode="m")

    def forward(self, x):
        return self.sn(self.conv(x))


class LinearThenNeuron(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = _pruned(layer.Linear(20, 7, step_mode="m"))
        self.sn = neuron.IFNode(step_mode="m")

    def forward(self, x):
        return self.sn(self.fc(x))


def _expected_spike_layer(loop, fmt, bits, per_list, outputs, bias_elements):
    """The exact setting's rules for a spike-driven layer, from the loop's counts (docs/metrics.md)."""
    visited = loop["reached"] if fmt == "dense" else loop["nonzero"]
    index_bits, pointer_bits = 8, 16  # lists of <= 256 outputs, < 65,536 nonzeros: the narrowest widths
    index = {"dense": 0.0, "bitmask": loop["reached"] / 8,
             "csr": loop["nonzero"] * index_bits / 8 + 2 * loop["lists"] * pointer_bits / 8}[fmt]
    return {"adds": visited + outputs, "synops": loop["nonzero"], "acc_addr": visited,
            "input_read_bytes": 4 * loop["events"], "weight_read_bytes": visited * bits / 8,
            "index_read_bytes": index, "bias_read_bytes": outputs * bits / 8,
            "potential_read_bytes": 4 * visited, "potential_write_bytes": 4 * visited, "macs": 0.0}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bits", [32, 8])
@pytest.mark.parametrize("kind", ["binary", "integer"])
@pytest.mark.parametrize("geometry", [dict(), dict(stride=2), dict(padding=2, dilation=2, groups=2)])
def test_conv_reads_equal_per_synapse_loops(fmt, bits, kind, geometry):
    torch.manual_seed(1)
    net = ConvThenNeuron(**geometry)
    x = ((torch.rand(2, 2, 4, 5, 5) > 0.6).float() if kind == "binary"
         else torch.randint(0, 3, (2, 2, 4, 5, 5)).float())
    report = measure(net, [x], energy="lemaire", weight_format=fmt, weight_bits=bits)
    conv = net.conv
    g = dict(stride=1, padding=1, dilation=1, groups=1) | geometry
    loop = loop_fanout(x.flatten(0, 1), conv.weight, **g)
    outputs = report.layers["sn"]["neuron_updates"]  # the conv's output elements, every step
    counts = report.layers["conv"]["energy"]["counts"]
    expected = _expected_spike_layer(loop, fmt, bits, conv.out_channels // conv.groups, outputs, 6)
    expected["mac_addr"] = 2 * loop["events"]
    for key, value in expected.items():
        assert counts[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key
    # buffers: the weights in the fan-out layout of the format, the potentials of one sample and step
    lists, nnz, numel = 4 * 9, int((conv.weight != 0).sum()), conv.weight.numel()
    weights = {"dense": numel * bits // 8, "bitmask": nnz * bits // 8 + math.ceil(numel / 8),
               "csr": nnz * (bits + 8) // 8 + (lists + 1) * 16 // 8}[fmt]
    buffers = report.layers["conv"]["energy"]["buffers_bytes"]
    assert buffers["params"] == weights + 6 * bits / 8
    assert buffers["potential"] == 4 * outputs / 4  # [T=2, B=2] -> one sample, one step
    assert buffers["inout"] == 4000


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bits", [16, 8])
def test_linear_reads_equal_per_synapse_loops(fmt, bits):
    torch.manual_seed(2)
    net = LinearThenNeuron()
    x = (torch.rand(3, 2, 20) > 0.5).float()
    report = measure(net, [x], energy="lemaire", weight_format=fmt, weight_bits=bits)
    loop = loop_fanout(x.flatten(0, 1), net.fc.weight)
    counts = report.layers["fc"]["energy"]["counts"]
    expected = _expected_spike_layer(loop, fmt, bits, 7, 3 * 2 * 7, 7)
    expected["mac_addr"] = 0.0  # a linear layer's targets need no address multiply
    for key, value in expected.items():
        assert counts[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ann", [False, True])
def test_real_input_reads_equal_output_row_loops(fmt, ann):
    """The encoding layer (and every layer of an ANN): weights read row by row at every output."""
    torch.manual_seed(3)
    conv = _pruned(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
    net = conv if ann else nn.Sequential(conv, neuron.IFNode())
    x = torch.rand(3, 4, 7, 7)
    report = measure(net, [x], energy="lemaire", weight_format=fmt, weight_bits=8)
    name = "" if ann else "0"
    row = report.layers[name or next(iter(report.layers))]
    loop = loop_output_rows(x, conv.weight, stride=2, padding=1, groups=2)
    counts = row["energy"]["counts"]
    visited = loop["dense"] if fmt == "dense" else loop["nonzero"]
    index = {"dense": 0.0, "bitmask": loop["dense"] / 8,
             "csr": loop["nonzero"] * 8 / 8 + 2 * loop["outputs"] * 16 / 8}[fmt]  # 18 columns: 8-bit indices
    assert counts["macs"] == visited
    assert counts["weight_read_bytes"] == visited
    assert counts["index_read_bytes"] == pytest.approx(index)
    assert counts["input_read_bytes"] == 4 * visited  # a conv reads one input per MAC
    assert counts["acc_addr"] == x.numel() + loop["outputs"] + 6 * 9
    assert counts["output_write_bytes"] == (4 * loop["outputs"] if ann else 0)  # else the neuron takes it
    assert counts["adds"] == loop["outputs"]  # the bias


def test_energy_is_its_counts_priced_by_buffer():
    torch.manual_seed(4)
    net = ConvThenNeuron()
    x = (torch.rand(2, 2, 4, 5, 5) > 0.5).float()
    costs = LemaireCosts(e_add_pj=0.3, e_mul_pj=2.0)
    report = measure(net, [x], energy="lemaire", weight_format="csr", weight_bits=8, energy_costs=costs)
    e = report.layers["conv"]["energy"]
    c, b = e["counts"], e["buffers_bytes"]
    assert e["ops_pj"] == pytest.approx(0.3 * c["adds"] + 2.3 * c["macs"])
    assert e["addressing_pj"] == pytest.approx(0.3 * c["acc_addr"] + 2.3 * c["mac_addr"])
    params = c["weight_read_bytes"] + c["index_read_bytes"] + c["bias_read_bytes"]
    assert e["params_pj"] == pytest.approx(params * costs.memory_pj_per_byte(b["params"]))
    potential = c["potential_read_bytes"] + c["potential_write_bytes"]
    assert e["potential_pj"] == pytest.approx(potential * costs.memory_pj_per_byte(b["potential"]))
    assert e["inout_pj"] == pytest.approx(c["input_read_bytes"] * costs.memory_pj_per_byte(4000))
    assert e["total_pj"] == pytest.approx(e["ops_pj"] + e["addressing_pj"] + e["memory_pj"])
    t = report.total["energy"]
    assert t["total_pj"] == pytest.approx(sum(r["energy"]["total_pj"] for r in report.layers.values()))
    assert t["per_sample_pj"] == pytest.approx(t["total_pj"] / 2)
    assert report.total["per_sample"]["sops"] == report.total["sops"] / 2
    assert t["costs"]["e_add_pj"] == 0.3


def test_pruning_shows_in_sparse_formats_only():
    """The same spikes into the same layer, dense and pruned: dense weights are read whatever their value;
    bitmask and CSR read what is left."""
    torch.manual_seed(5)
    dense = ConvThenNeuron()
    with torch.no_grad():
        dense.conv.weight.copy_(torch.randn_like(dense.conv.weight))
    pruned = ConvThenNeuron()
    pruned.load_state_dict(dense.state_dict())
    _pruned(pruned.conv, keep=0.1)
    x = (torch.rand(2, 2, 4, 5, 5) > 0.5).float()

    def reads(net, fmt):
        c = measure(net, [x], energy="lemaire", weight_format=fmt, weight_bits=8).layers["conv"]["energy"]
        return c["counts"]["weight_read_bytes"] + c["counts"]["index_read_bytes"]

    assert reads(pruned, "dense") == reads(dense, "dense")
    assert reads(pruned, "csr") < 0.35 * reads(dense, "csr")
    assert reads(pruned, "bitmask") < 0.35 * reads(dense, "bitmask")


def test_footprint_is_the_storage_modules_and_not_modeled_modules_are_listed():
    torch.manual_seed(6)
    net = models.create_model("sew_resnet18", T=2, num_classes=10, stem="cifar", in_channels=1,
                              width_multiplier=0.25)
    x = torch.rand(2, 1, 12, 12) * 6
    report = measure(net, [x], energy="lemaire", weight_format="bitmask", weight_bits=16)
    fp = report.total["footprint"]
    expected = weight_footprint(net)
    assert fp["bytes"] == expected.bytes("bitmask", 16)
    assert fp["table"]["csr8"] == expected.bytes("csr", 8)
    assert report.layers["conv1"]["footprint_bytes"] == expected.layers["conv1"].bytes("bitmask", 16)
    missing = {m["type"]: m for m in report.total["energy"]["not_modeled"]}
    assert missing["BatchNorm2d"]["count"] == 20 and missing["AdaptiveAvgPool2d"]["count"] == 1
    assert any("BatchNorm2d x20" in n for n in report.notes)
    assert "energy not modeled: BatchNorm2d x20" in str(report)
    # every neuron and layer row has its energy; none is left at zero without a reason
    assert all("energy" in r for r in report.layers.values())


def test_spikformer_products_and_neurons_have_energy():
    torch.manual_seed(7)
    net = models.create_model("spikformer", T=2, num_classes=10, in_channels=1, image_size=16, patch_size=4,
                              embed_dims=32, num_heads=2, mlp_ratio=2, depths=1)
    x = torch.rand(2, 1, 16, 16) * 4
    report = measure(net, [x], energy="lemaire", weight_format="csr", weight_bits=8)
    products = {n: r for n, r in report.layers.items() if r["type"] in ("matmul", "mask", "sum")}
    assert products
    for r in products.values():
        c = r["energy"]["counts"]
        assert c["adds"] == r["sops"] and c["macs"] == r["macs"]
        if r["type"] == "matmul":  # one accumulator read and write per SOP
            assert c["potential_read_bytes"] == 4 * r["sops"] == c["potential_write_bytes"]
    compat = measure(net, [x], energy="lemaire-spikingjelly")
    listed = {m["type"]: m for m in compat.total["energy"]["not_modeled"]}
    assert listed["product"]["count"] == len(products)  # SpikingJelly cannot see them: said, not dropped


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_format="coo"), "weight_format must be one of"),
    (dict(weight_bits=0), "weight_bits must be one of"),
    (dict(weight_bits=4), "weight_bits must be one of"),
    (dict(energy="horowitz"), "energy must be one of"),
    (dict(energy="lemaire-spikingjelly", weight_format="csr"), "dense 32-bit"),
    (dict(energy="lemaire", energy_costs={"e_add_pj": 1}), "energy_costs must be"),
])
def test_bad_energy_arguments_fail_before_anything_runs(kwargs, match):
    net = ConvThenNeuron()
    calls = []
    net.register_forward_pre_hook(lambda m, i: calls.append(1))

    def batches():
        calls.append("batch")
        yield torch.zeros(1, 1, 4, 5, 5)

    with pytest.raises((ValueError, TypeError), match=match):
        measure(net, batches(), **kwargs)
    assert calls == []


# ---------------------------------------------------------------------------------------------------------
# SpikingJelly 2.0's estimate_lemaire_energy, run beside the compatibility setting

def _analytical():
    return pytest.importorskip("spikingjelly.activation_based.op_counter.analytical_energy",
                               reason="SpikingJelly 2.0's op_counter (estimate_lemaire_energy) is not here")


def _plain_snn():
    return nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, step_mode="m"), neuron.IFNode(step_mode="m"),
        layer.Conv2d(8, 8, 3, stride=2, padding=1, bias=False, step_mode="m"), neuron.LIFNode(step_mode="m"),
        layer.Flatten(step_mode="m"), layer.Linear(8 * 16, 10, step_mode="m"), neuron.LIFNode(step_mode="m"))


SJ_CASES = {
    "plain conv SNN": lambda: (_plain_snn(), torch.rand(4, 2, 1, 8, 8) * 3),
    "SEW ResNet-18": lambda: (models.create_model("sew_resnet18", T=2, num_classes=10, stem="cifar",
                                                  in_channels=1, width_multiplier=0.25),
                              torch.rand(2, 1, 16, 16) * 6),
    "spiking ResNet-18": lambda: (models.create_model("spiking_resnet18", T=2, num_classes=10, stem="cifar",
                                                      in_channels=1, width_multiplier=0.25),
                                  torch.rand(2, 1, 16, 16) * 6),
    "spiking VGG-11": lambda: (models.create_model("spiking_vgg11_bn", T=2, num_classes=10, in_channels=1,
                                                   width_multiplier=0.25), torch.rand(2, 1, 32, 32) * 6),
}


@pytest.mark.parametrize("case", list(SJ_CASES))
def test_compatibility_setting_reproduces_spikingjelly(case):
    analytical = _analytical()
    torch.manual_seed(8)
    net, x = SJ_CASES[case]()
    net.eval()
    with torch.no_grad():  # pruned, as the models it is meant for (SpikingJelly still reads every weight)
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _pruned(m, keep=0.3)
    functional.reset_net(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its modules outside the paper (BatchNorm, pooling) warn
        sj = analytical.estimate_lemaire_energy(net, x, config=analytical.LemaireEnergyConfig(strict=False))
        ours = measure(net, [x], energy="lemaire-spikingjelly").total["energy"]
    assert sj.counts["synop"] > 0 and sj.counts["mac"] > 0  # spikes reached layers, real inputs too
    assert ours["total_pj"] == pytest.approx(sj.total_pj, rel=1e-6)
    for component, value in sj.breakdown_pj.items():
        assert ours[component] == pytest.approx(value, rel=1e-6), component
    c = ours["counts"]
    assert (c["synops"], c["macs"], c["adds"], c["acc_addr"], c["mac_addr"]) == (
        sj.counts["synop"], sj.counts["mac"], sj.counts["ac"], sj.counts["acc_addr"], sj.counts["mac_addr"])
    assert c["input_read_bytes"] == sj.counts["read_in_bytes"]
    assert c["output_write_bytes"] == sj.counts["write_out_bytes"]
    assert c["weight_read_bytes"] + c["bias_read_bytes"] == sj.counts["read_params_bytes"]
    assert c["potential_read_bytes"] == sj.counts["read_potential_bytes"]
    assert ours["buffers_bytes"] == {"inout": sj.buffer_sizes_bytes["inout_buffer_bytes"],
                                     "params": sj.buffer_sizes_bytes["params_buffer_bytes"],
                                     "potential": sj.buffer_sizes_bytes["potential_buffer_bytes"]}


def test_without_borders_the_exact_setting_reads_what_spikingjelly_reads():
    """A 1x1 conv has no border taps and a binary input no integers: the exact setting's dense 32-bit weight
    and potential traffic then equal SpikingJelly's, so every difference between the two is a rule."""
    torch.manual_seed(9)
    net = nn.Sequential(layer.Conv2d(4, 6, 1, bias=False, step_mode="m"), neuron.IFNode(step_mode="m"))
    x = (torch.rand(2, 3, 4, 5, 5) > 0.5).float()
    exact = measure(net, [x], energy="lemaire").layers["0"]["energy"]["counts"]
    sj = measure(net, [x], energy="lemaire-spikingjelly").layers["0"]["energy"]["counts"]
    for key in ("weight_read_bytes", "potential_read_bytes", "potential_write_bytes", "adds", "acc_addr",
                "mac_addr", "input_read_bytes"):
        assert exact[key] == sj[key], key


def test_one_pass_prices_every_model_and_spikingjelly_rules_meet_the_exact_ones_without_borders():
    """MeasureSession.report(energy=, weight_format=, weight_bits=) reprices the same counts: equal to a fresh
    measure under that setting. With one-sample buffers, SpikingJelly's rules on a border-free 1x1 conv and IF
    neurons are the exact dense 32-bit rules (what experiments/energy_table.py's gap split relies on)."""
    from snn_lats.metrics import MeasureSession
    from snn_lats.metrics.energy import Tally, neuron_energy_spikingjelly, synapse_energy_spikingjelly

    torch.manual_seed(10)
    net = nn.Sequential(layer.Conv2d(4, 6, 1, step_mode="m"), neuron.IFNode(step_mode="m"))
    x = (torch.rand(2, 3, 4, 5, 5) > 0.5).float()
    session = MeasureSession(net, energy="lemaire")
    with session:
        session.run(x)
    for fmt, bits in (("csr", 8), ("bitmask", 16)):
        again = measure(net, [x], energy="lemaire", weight_format=fmt, weight_bits=bits).total["energy"]
        assert session.report(weight_format=fmt, weight_bits=bits).total["energy"] == again
    with pytest.raises(ValueError, match="weight_bits must be one of"):
        session.report(weight_bits=0)
    costs = LemaireCosts()
    rules = Tally()
    rules.add(synapse_energy_spikingjelly(session.synapses["0"], costs, True, buffers="sample"))
    rules.add(neuron_energy_spikingjelly(session.neurons["1"], costs, buffers="sample"))
    exact = session.report().total["energy"]
    assert rules.result(costs)["total_pj"] == pytest.approx(exact["total_pj"], rel=1e-12)
    batch = session.report(energy="lemaire-spikingjelly").total["energy"]["total_pj"]
    assert batch > exact["total_pj"]  # the batch's buffers cost more per byte
