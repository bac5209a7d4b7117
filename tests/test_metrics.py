import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import functional, layer, monitor, neuron
from torch import nn

import models
import snn_lats
from snn_lats.checkpoint import load_plain_weights, squash_state_dict
from snn_lats.metrics import E_AC_PJ, E_MAC_PJ, measure
from tests.conftest import HANG


def loop_conv_counts(x, weight, stride, padding, dilation, groups):
    """Reference: walk every (sample, output, nonzero weight) synapse. Returns (input-weighted count,
    pairs)."""
    n_samples, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    weighted, pairs = 0.0, 0
    for o, c_local, ki, kj in itertools.product(range(c_out), range(c_in_g), range(kh), range(kw)):
        if weight[o, c_local, ki, kj] == 0:
            continue
        c = (o // (c_out // groups)) * c_in_g + c_local
        for i, j in itertools.product(range(h_out), range(w_out)):
            pairs += n_samples
            r, s = i * stride + ki * dilation - padding, j * stride + kj * dilation - padding
            if 0 <= r < h and 0 <= s < w:
                weighted += float(x[:, c, r, s].abs().sum())
    return weighted, pairs


class TwoLayerSNN(nn.Module):
    def __init__(self, stride=1, padding=1, dilation=1, groups=1):
        super().__init__()
        self.conv = layer.Conv2d(4, 4, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                 bias=False, step_mode="m")
        self.sn = neuron.IFNode(v_threshold=0.5, step_mode="m")
        side = (6 + 2 * padding - dilation * 2 - 1) // stride + 1
        self.fc = layer.Linear(4 * side * side, 3, bias=False, step_mode="m")

    def forward(self, x):
        return self.fc(self.sn(self.conv(x)).flatten(2))


@pytest.mark.parametrize("geometry", [dict(), dict(stride=2), dict(padding=2, dilation=2, groups=2)])
@pytest.mark.parametrize("kind", ["binary", "integer", "real"])
def test_counts_equal_explicit_loops_over_synapses(geometry, kind):
    torch.manual_seed(0)
    net = TwoLayerSNN(**geometry)
    with torch.no_grad():
        net.conv.weight.mul_((torch.rand_like(net.conv.weight) > 0.4).float())  # some pruned weights
        net.fc.weight.mul_((torch.rand_like(net.fc.weight) > 0.5).float())
    T, B = 3, 2
    x = {"binary": (torch.rand(T, B, 4, 6, 6) > 0.6).float(),
         "integer": torch.randint(0, 3, (T, B, 4, 6, 6)).float(),
         "real": torch.rand(T, B, 4, 6, 6)}[kind]
    spikes = []
    handle = net.sn.register_forward_hook(lambda m, i, o: spikes.append(o.detach().clone()))
    report = measure(net, [x])
    handle.remove()
    g = dict(stride=1, padding=1, dilation=1, groups=1) | geometry
    weighted, pairs = loop_conv_counts(x.flatten(0, 1), net.conv.weight, g["stride"], g["padding"],
                                       g["dilation"], g["groups"])
    conv = report.layers["conv"]
    assert conv["input_kind"] == kind
    if kind == "real":
        assert conv["macs"] == pairs and conv["sops"] == 0
    else:
        assert conv["sops"] == weighted and conv["macs"] == 0
    s = spikes[0].flatten(2)  # [T, B, features], binary
    fc_ref = sum(float(s[t, b, i]) for t, b, o, i in itertools.product(range(T), range(B), range(3),
                                                                        range(s.shape[-1]))
                 if net.fc.weight[o, i] != 0)
    assert report.layers["fc"]["input_kind"] == "binary"
    assert report.layers["fc"]["sops"] == fc_ref
    # dense-equivalent: the ANN does one pass per sample with every weight
    h_out = int(s.shape[-1] / 4) ** 0.5
    assert conv["dense_macs"] == B * 4 * (4 // g["groups"]) * 9 * h_out * h_out
    assert report.layers["fc"]["dense_macs"] == B * 3 * s.shape[-1]
    assert conv["energy_pj"] == pytest.approx(E_AC_PJ * conv["sops"] + E_MAC_PJ * conv["macs"])
    assert report.total["sops"] == conv["sops"] + report.layers["fc"]["sops"]


def test_zeroing_weights_removes_exactly_their_sops():
    conv = layer.Conv2d(3, 2, 3, padding=1, bias=False, step_mode="m")
    with torch.no_grad():
        conv.weight[1] = conv.weight[0]  # two identical, fully dense output channels
    x = (torch.rand(2, 4, 3, 7, 7) > 0.5).float()
    full = measure(conv, [x]).layers[""]["sops"]
    with torch.no_grad():
        conv.weight[1].zero_()
    half = measure(conv, [x]).layers[""]["sops"]
    assert half * 2 == full
    # and a random half of the weights: the drop is exactly what the loops credit to the zeroed weights
    conv = layer.Conv2d(3, 2, 3, padding=1, bias=False, step_mode="m")
    zeroed = torch.rand_like(conv.weight) < 0.5
    before = measure(conv, [x]).layers[""]["sops"]
    only_zeroed = conv.weight.detach() * zeroed
    lost, _ = loop_conv_counts(x.flatten(0, 1), only_zeroed, 1, 1, 1, 1)
    with torch.no_grad():
        conv.weight[zeroed] = 0
    assert measure(conv, [x]).layers[""]["sops"] == before - lost


def test_pruned_model_counts_through_the_parametrization():
    torch.manual_seed(0)
    net = TwoLayerSNN()
    x = (torch.rand(2, 2, 4, 6, 6) > 0.5).float()
    pruner = snn_lats.SoftThresholdPruner(net, final_threshold=0.1, schedule="constant", compensate=False)
    prepared = measure(net, [x])
    pruner.squash()
    squashed = measure(net, [x])
    assert prepared.total == squashed.total
    fraction = snn_lats.sparsity_report(net).layers["conv"].fraction
    assert prepared.layers["conv"]["weight_sparsity"] == pytest.approx(fraction)


def test_firing_rates_match_spikingjelly_output_monitor():
    torch.manual_seed(0)
    net = models.create_model("sew_resnet18", T=4, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32) * 4  # strong enough input for spikes at initialisation
    mon = monitor.OutputMonitor(net, neuron.BaseNode,
                                function_on_output=lambda s: s.detach().double().mean().item())
    per_step = monitor.OutputMonitor(
        net, neuron.BaseNode, function_on_output=lambda s: s.detach().double().flatten(1).mean(1).tolist())
    with torch.no_grad():
        net(x)
    functional.reset_net(net)
    reference = {name: mon[name][0] for name in mon.monitored_layers}
    reference_steps = {name: per_step[name][0] for name in per_step.monitored_layers}
    mon.remove_hooks()
    per_step.remove_hooks()
    report = measure(net, [x], per_channel=True)
    assert len(reference) == 20 and any(v > 0 for v in reference.values())
    for name, rate in reference.items():
        assert report.layers[name]["firing_rate"] == pytest.approx(rate, abs=1e-12), name
        assert report.layers[name]["firing_rate_per_step"] == pytest.approx(reference_steps[name], abs=1e-12)
        per_channel = report.layers[name]["firing_rate_per_channel"]
        assert sum(per_channel) / len(per_channel) == pytest.approx(rate, abs=1e-12)


def test_dense_resnet50_macs_match_the_known_figure_and_torch_flop_counter():
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    model = torchvision.models.resnet50()
    x = torch.randn(1, 3, 224, 224)
    report = measure(model, [x])
    assert report.total["dense_macs"] == pytest.approx(4.1e9, rel=0.01)
    # dense: every weight nonzero
    assert report.total["macs"] == pytest.approx(report.total["dense_macs"], rel=1e-6)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    assert report.total["dense_macs"] == counter.get_total_flops() / 2  # conv + linear FLOPs = 2 x MACs
    assert report.total["sops"] == 0 and report.total["firing_rate"] is None
    assert any("no spiking neuron layer" in n for n in report.notes)


def test_memory_stays_flat_as_batches_grow():
    script = """
import resource, torch, models
from snn_lats.metrics import measure
torch.manual_seed(0)
net = models.create_model("sew_resnet18", T=4, num_classes=10)
batches = lambda n: (torch.rand(8, 3, 32, 32) * 4 for _ in range(n))
measure(net, batches(2))
two = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
measure(net, batches(20))
twenty = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(two, twenty)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1], timeout=HANG)
    two, twenty = map(int, out.stdout.split())
    assert twenty <= 1.10 * two


def test_report_files(tmp_path):
    net = TwoLayerSNN()
    report = measure(net, [((torch.rand(2, 3, 4, 6, 6) > 0.5).float(), torch.tensor([0, 1, 2]))])
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["total"]["sops"] == report.total["sops"] and data["total"]["accuracy"] is not None
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("layer,type,weight_sparsity") and lines[-1].startswith("total")
    assert len(lines) == 1 + 3 + 1  # conv, sn, fc, total
    assert "energy" in str(report)


# --- bad input ----------------------------------------------------------------------------------------------

def test_empty_batches_is_an_error():
    with pytest.raises(ValueError, match="batches is empty"):
        measure(TwoLayerSNN(), [])


def test_model_without_layers_to_measure_is_an_error():
    with pytest.raises(ValueError, match="no nn.Conv1d, nn.Conv2d, nn.Conv3d or nn.Linear"):
        measure(nn.Sequential(nn.ReLU()), [torch.rand(2, 3)])
    with pytest.raises(ValueError, match="e_ac_pj"):
        measure(TwoLayerSNN(), [torch.rand(1, 1, 4, 6, 6)], e_ac_pj=-1)
    with pytest.raises(TypeError, match="batches"):
        measure(TwoLayerSNN(), ["not a tensor"])


def test_mismatched_checkpoint_names_the_keys():
    small = models.create_model("sew_resnet18", stem="cifar", in_channels=1, num_classes=10,
                                width_multiplier=0.25)
    state = small.state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    other = models.create_model("sew_resnet18", stem="cifar", in_channels=1, num_classes=7,
                                width_multiplier=0.25)
    with pytest.raises(ValueError, match=r"missing keys \(1\): fc.bias; unexpected keys \(1\): extra.weight; "
                                         r"shape mismatches \(1\): fc.weight"):
        load_plain_weights(other, state)


def test_squash_state_dict_matches_squashing_the_model():
    torch.manual_seed(0)
    net = TwoLayerSNN()
    snn_lats.SoftThresholdPruner(net, final_threshold=0.1, schedule="constant", compensate=False)
    offline = squash_state_dict(net.state_dict())
    torch.manual_seed(0)
    other = TwoLayerSNN()
    pruner = snn_lats.SoftThresholdPruner(other, final_threshold=0.1, schedule="constant", compensate=False)
    pruner.squash()
    assert offline.keys() == other.state_dict().keys()
    for key, value in other.state_dict().items():
        assert torch.equal(offline[key], value), key


@pytest.mark.parametrize(
    "values, kind",
    [([0.0, 1.0, 1.0, 0.0], "binary"), ([0.0, 0.0], "binary"), ([0.0, 2.0, 1.0], "integer"),
     ([-1.0, 1.0], "integer"), ([0.0, 0.5, 1.0], "real"), ([0.0, 1.0 - 2**-24, 1.0], "real"),
     ([0.0, 1e-40, 1.0], "real"), ([0.0, 1.5, 2.0], "real"), ([0, 1, 1], "binary")],
)
def test_input_kind(values, kind):
    from snn_lats.metrics import input_kind

    dtype = torch.int64 if isinstance(values[0], int) else torch.float32
    assert input_kind(torch.tensor(values, dtype=dtype).repeat(1000)) == kind


def test_reference_baseline_of_an_unpruned_model_equals_its_own_baseline():
    """Equivalence: measured against itself as the reference, the reference fields repeat the plain ones."""
    model = models.create_model("sew_resnet18", T=2, stem="cifar", width_multiplier=0.125, num_classes=10)
    batches = [torch.rand(3, 3, 16, 16) for _ in range(2)]
    report = measure(model, batches, reference=models.create_model(
        "sew_resnet18", T=2, stem="cifar", width_multiplier=0.125, num_classes=10))
    t, ref = report.total, report.total["reference"]
    assert ref["weights"] == t["weights"] and ref["dense_macs"] == t["dense_macs"]
    for key in ("weight_sparsity", "ops_ratio", "energy_ratio"):
        assert ref[key] == pytest.approx(t[key], rel=1e-12)
    assert "against the unpruned architecture" in str(report)


def test_reference_baseline_of_a_channel_pruned_model():
    """A thin model against the wide one: weights and dense MACs of the wide one (closed form for a 2-layer
    CNN)."""
    wide = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    thin = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    with torch.no_grad():
        thin[0].weight[0] = 0  # one filter of zeros in the thin model
    report = measure(thin, [torch.rand(4, 1, 4, 4)], reference=wide)
    ref = report.total["reference"]
    assert ref["weights"] == 8 * 9 + 8 * 16 * 5
    assert ref["dense_macs"] == 4 * (16 * 8 * 9 + 8 * 16 * 5)
    nonzero = (3 * 9 - 9) + 3 * 16 * 5
    assert ref["weight_sparsity"] == pytest.approx(1 - nonzero / ref["weights"])
    assert ref["energy_ratio"] == pytest.approx(report.total["energy_pj"] / (E_MAC_PJ * ref["dense_macs"]))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


@pytest.mark.parametrize("bad, match", [
    (torch.full((2, 0, 4, 6, 6), 1.0), r"batch 1 has no samples"),  # the second batch is empty
    (torch.tensor(float("nan")).expand(2, 3, 4, 6, 6).clone(), r"batch 1's input holds NaN or inf"),
    (torch.full((2, 3, 4, 6, 6), float("inf")), r"batch 1's input holds NaN or inf"),
    (torch.rand(2, 3, 5, 6, 6), r"forward failed on batch 1 \(input of shape \(2, 3, 5, 6, 6\)\) in "
                                r"layer 'conv'"),
])
def test_a_batch_measure_cannot_count_is_one_sentence_and_changes_nothing(bad, match):
    net = TwoLayerSNN()
    net.train()
    before = _state(net)
    with pytest.raises(ValueError, match=match):
        measure(net, [(torch.rand(2, 3, 4, 6, 6) > 0.5).float(), bad])
    after = _state(net)
    assert all(torch.equal(v, after[0][k]) for k, v in before[0].items()) and after[1] == before[1]
    assert not isinstance(net.sn.v, torch.Tensor)  # the first batch's state was reset on the way out


def test_a_reference_of_another_architecture_is_refused_before_measuring():
    thin = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    other = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Conv1d(8, 5, 1))
    narrow = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 5))
    batches = CountingBatches([torch.rand(4, 1, 4, 4)])
    with pytest.raises(ValueError, match=r"reference is not the architecture .* no Linear '3' "
                                         r"\(Conv1d there\)"):
        measure(thin, batches, reference=other)
    with pytest.raises(ValueError, match=r"reference is not the architecture .* '0' has 18 weights, fewer "
                                         r"than the model's 27"):
        measure(thin, batches, reference=narrow)
    assert batches.taken == 0  # refused before a batch was drawn


class CountingBatches:
    def __init__(self, batches):
        self.batches, self.taken = batches, 0

    def __iter__(self):
        for b in self.batches:
            self.taken += 1
            yield b
