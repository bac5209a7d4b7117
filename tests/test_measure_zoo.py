"""measure() on any SpikingJelly model: Conv1d/Conv3d layers, spike matrix products and coverage (issue #18).

Every count is compared with a brute-force reference computed another way: a second convolution with the
nonzero-weight mask, full matmuls of the operands' magnitudes, explicit loops, closed forms and torch's own
FlopCounterMode.
"""
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snn_lats.metrics import E_AC_PJ, E_MAC_PJ, SynapseCounter, measure

CONV = {1: (nn.Conv1d, F.conv1d), 3: (nn.Conv3d, F.conv3d)}


def prune_(module, keep=0.6):
    with torch.no_grad():
        module.weight.mul_((torch.rand_like(module.weight) < keep).float())


def inputs(kind, shape):
    return {"binary": (torch.rand(shape) > 0.6).float(),
            "integer": torch.randint(-2, 4, shape).float(),  # negative values count by magnitude
            "real": torch.randn(shape)}[kind]


def mask_conv_count(conv, x, conv_fn):
    """Reference: Σ conv(|x|, W ≠ 0) over everything, padding as the layer pads, in float64."""
    xa = x.abs().double()
    padding = conv.padding
    if conv.padding_mode != "zeros":
        xa = F.pad(xa, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    return float(conv_fn(xa, (conv.weight != 0).double(), None, conv.stride, padding, conv.dilation,
                         conv.groups).sum())


GEOMETRIES = [dict(), dict(stride=2, padding=1), dict(padding=2, dilation=2, groups=2),
              dict(padding="same", padding_mode="reflect"), dict(padding=1, padding_mode="circular")]


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("geometry", GEOMETRIES,
                         ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()) or "plain")
@pytest.mark.parametrize("kind", ["binary", "integer", "real"])
def test_conv1d_conv3d_counts_equal_a_mask_convolution(dims, geometry, kind):
    torch.manual_seed(dims)
    cls, conv_fn = CONV[dims]
    conv = cls(4, 6, 3, bias=False, **geometry)
    prune_(conv)
    spatial = (9,) if dims == 1 else (5, 4, 6)
    x = inputs(kind, (3, 4, *spatial))
    report = measure(conv, [x], sample_dim=0)
    row, out = report.layers[""], conv(x)
    positions = math.prod(out.shape[2:])
    assert row["type"] == "conv" and row["module_type"] == cls.__name__ and row["input_kind"] == kind
    if kind == "real":
        assert row["macs"] == int((conv.weight != 0).sum()) * positions * 3 and row["sops"] == 0
    else:
        assert row["sops"] == mask_conv_count(conv, x, conv_fn) and row["macs"] == 0
    assert row["dense_macs"] == 3 * conv.weight.numel() * positions  # one pass per sample, every weight
    assert report.total["samples"] == 3 and report.total["coverage"]["weights"] == 1.0
    assert report.total["coverage"]["macs"] == 1.0


def test_multi_step_conv1d_and_plain_conv1d_in_seq_to_ann_container():
    """A multi-step layer.Conv1d sees [T, B, C, L]; a plain Conv1d in SeqToANNContainer sees [T·B, C, L]."""
    torch.manual_seed(0)
    T, B, L = 3, 2, 10
    net = nn.Sequential(layer.Conv1d(2, 5, 3, padding=1, bias=False, step_mode="m"),
                        neuron.IFNode(v_threshold=0.3, step_mode="m"),
                        layer.SeqToANNContainer(nn.Conv1d(5, 4, 3, stride=2, bias=False)))
    for conv in (net[0], net[2][0]):
        prune_(conv)
    x = inputs("integer", (T, B, 2, L))
    spikes = []
    net[1].register_forward_hook(lambda m, i, o: spikes.append(o.clone()))
    report = measure(net, [x], sample_dim=1)
    first, inner = report.layers["0"], report.layers["2.0"]
    assert first["sops"] == mask_conv_count(net[0], x.flatten(0, 1), F.conv1d)
    assert inner["input_kind"] == "binary"
    assert inner["sops"] == mask_conv_count(net[2][0], spikes[0].flatten(0, 1), F.conv1d)
    assert first["dense_macs"] == B * 2 * 5 * 3 * L and inner["dense_macs"] == B * 5 * 4 * 3 * 4
    assert report.total["samples"] == B and report.total["time_steps"] == T
    assert report.total["sops"] == first["sops"] + inner["sops"] > 0


def test_synapse_counter_accepts_conv1d_conv3d_and_names_what_it_supports():
    assert SynapseCounter.for_module(nn.Conv3d(2, 2, 3)).fanout.shape == (2, 27)
    with pytest.raises(TypeError, match="nn.Conv1d, nn.Conv2d, nn.Conv3d and nn.Linear, got ConvTranspose2d"):
        SynapseCounter.for_module(nn.ConvTranspose2d(2, 2, 3))


# --- matrix products ---------------------------------------------------------------------------------------

class TinyAttention(nn.Module):
    """spike @ spike.T, counts @ spike, counts @ counts, real @ real, spikes through F.linear and einsum."""

    def __init__(self, d=5):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, 3) * (torch.rand(d, 3) > 0.4))  # used through einsum: counted
        self.w2 = nn.Parameter(torch.randn(4, d) * (torch.rand(4, d) > 0.4))  # used through F.linear: counted
        self.head = nn.Linear(d, 2)

    def forward(self, x):  # x [B, N, d]
        s = (x > 0.5).float()
        a = s @ s.transpose(-2, -1)                      # binary x binary [B, N, N]
        c = a @ s                                         # integer x binary [B, N, d]
        i2 = a @ a                                        # integer x integer
        r = torch.relu(x - 0.3) @ torch.relu(0.7 - x).transpose(-2, -1)  # real x real, with zeros
        e = torch.einsum("bnd,dk->bnk", s, self.w)        # binary x real weight
        f = F.linear(s[0], self.w2)                       # binary x real weight (mm, 2-D)
        return self.head(c).sum(1) + i2.sum() + r.sum() + e.sum() + f.sum()


def brute_product(a, b, ma, mb):
    """Σ_{n,i,k,j} ma(a[n,i,k])·mb(b[n,k,j]) by explicit loops."""
    a, b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    total = 0.0
    for n, i, k, j in itertools.product(*map(range, (a.shape[0], a.shape[1], a.shape[2], b.shape[2]))):
        total += ma(float(a[n, i, k])) * mb(float(b[n, k, j]))
    return total


def test_matrix_products_equal_explicit_loops():
    torch.manual_seed(0)
    net = TinyAttention()
    B, N, d = 2, 4, 5
    x = torch.rand(B, N, d)
    report = measure(net, [x])
    s = (x > 0.5).float()
    a = s @ s.transpose(-2, -1)
    size, nz = abs, lambda v: float(v != 0)
    expect = {  # row: (sops, macs, kinds, dense MACs per sample)
        "(model)/matmul.0": (brute_product(s, s.transpose(-2, -1), size, size), 0, "binary@binary",
                             N * d * N),
        "(model)/matmul.1": (brute_product(a, s, size, size), 0, "integer@binary", N * N * d),
        "(model)/matmul.2": (brute_product(a, a, size, size), 0, "integer@integer", N * N * N),
        "(model)/matmul.3": (0, brute_product(torch.relu(x - 0.3), torch.relu(0.7 - x).transpose(-2, -1), nz,
                                              nz), "real@real", N * d * N),
        "(model)/matmul.4": (brute_product(s, net.w.detach().expand(B, d, 3), size, nz), 0, "binary@real",
                             N * d * 3),
        # F.linear on s[0]: one sample's tokens, so B x fewer dense MACs per sample of the batch
        "(model)/matmul.5": (brute_product(s[:1], net.w2.detach().t()[None], size, nz), 0, "binary@real",
                             N * d * 4 / B),
    }
    rows = {n: r for n, r in report.layers.items() if r["type"] == "matmul"}
    assert set(rows) == set(expect)  # the head's own addmm is the layer's, not a product row
    for name, (sops, macs, kinds, dense) in expect.items():
        r = rows[name]
        assert (r["sops"], r["macs"], r["input_kind"]) == (sops, macs, kinds), name
        assert r["dense_macs"] == B * dense
        assert r["module"] == "(model)" and r["module_type"] == "TinyAttention"
        assert r["energy_pj"] == pytest.approx(E_AC_PJ * sops + E_MAC_PJ * macs)
    assert rows["(model)/matmul.0"]["sops"] > 0 and rows["(model)/matmul.3"]["macs"] > 0
    # i2.sum() adds whole numbers: one accumulate per unit (the other sums are of real values: not counted)
    i2 = a @ a
    sums = {n: r for n, r in report.layers.items() if r["type"] == "sum"}
    assert list(sums) == ["(model)/sum.0"] and sums["(model)/sum.0"]["input_kind"] == "integer"
    assert sums["(model)/sum.0"]["sops"] == sum(abs(float(v)) for v in i2.flatten())
    assert sums["(model)/sum.0"]["dense_ops"] == i2.numel() and sums["(model)/sum.0"]["dense_macs"] == 0
    t = report.total
    assert t["sops"] == (sum(v[0] for v in expect.values()) + report.layers["head"]["sops"]
                         + sums["(model)/sum.0"]["sops"])
    assert t["macs"] == sum(v[1] for v in expect.values()) + report.layers["head"]["macs"]
    assert t["dense_macs"] == sum(r["dense_macs"] for r in report.layers.values() if r["type"] != "neuron")
    # w and w2 are operands of counted products, so every synaptic weight counts; FlopCounter agrees on MACs
    cover = t["coverage"]
    assert cover["weights"] == 1.0 and cover["synaptic_weights"] == 5 * 3 + 4 * 5 + 2 * 5
    assert not cover["uncounted"]
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        net(x)
    assert cover["macs"] == 1.0 and cover["model_dense_macs"] == flops.get_total_flops() // 2


def test_products_inside_modules_are_attributed_and_indexed_per_forward():
    torch.manual_seed(0)

    class Inner(nn.Module):
        def forward(self, s):
            return (s @ s.transpose(-2, -1)) @ s

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.fc = Inner(), layer.Linear(3, 2, step_mode="m")
            self.head = nn.Linear(2, 2)  # once per sample, on the time-averaged features

        def forward(self, x):  # [T, B, N, 3]
            return self.head(self.fc(self.attn((x > 0.5).float())).sum(2).mean(0))

    T, B, N = 3, 2, 4
    x = torch.rand(T, B, N, 3)
    report = measure(Outer(), [x], sample_dim=1)
    rows = [n for n, r in report.layers.items() if r["type"] == "matmul"]
    assert rows == ["attn/matmul.0", "attn/matmul.1"]
    s = (x > 0.5).float()
    assert report.layers["attn/matmul.0"]["sops"] == float((s @ s.transpose(-2, -1)).sum())
    # one pass per sample: T is read off the counted layers (fc ran on T·B·N rows, B·N per pass), where the
    # head ran once: fc carries more of the layers' MACs, so it sets the count, and a note says so
    assert report.total["time_steps"] == T and report.layers["attn/matmul.0"]["dense_macs"] == B * N * 3 * N
    assert any("counted layers ran 1, 3 passes per sample" in n for n in report.notes)


# --- a real SpikingJelly transformer -----------------------------------------------------------------------

def test_spikformer_counts_everything_and_equals_brute_force():
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(0)
    T, B, heads, dim = 2, 2, 2, 16
    net = Spikformer(T=T, in_channels=1, img_size_h=8, img_size_w=8, patch_size=4, num_classes=10,
                     embed_dims=dim, num_heads=heads, depths=1)
    layers = {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    with torch.no_grad():  # strong enough for spikes everywhere (residuals then carry 0/1/2)
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, 4 / m.weight[0].numel() ** 0.5)
                prune_(m, keep=0.5)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.bias.fill_(1.0)
    fns = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
    brute = {"sops": 0.0, "macs": 0, "dense": 0}

    def layer_hook(m, inputs, out):
        x = inputs[0]
        if isinstance(m, nn.Linear):
            x = x.reshape(-1, m.in_features)
            rows = x.shape[0]
            if not torch.equal(x, x.round()):
                brute["macs"] += int((m.weight != 0).sum()) * rows
            else:
                brute["sops"] += float((x.abs().double() @ (m.weight != 0).double().t()).sum())
            brute["dense"] += m.weight.numel() * rows
            return
        fn = next(f for c, f in fns.items() if isinstance(m, c))
        x = x.flatten(0, 1) if x.dim() == m.weight.dim() + 1 else x  # multi-step layer: [T, B, ...]
        if not torch.equal(x, x.round()):
            positions = math.prod(out.shape[-(m.weight.dim() - 2):])
            brute["macs"] += int((m.weight != 0).sum()) * positions * x.shape[0]
        else:
            brute["sops"] += float(fn(x.abs().double(), (m.weight != 0).double(), None, m.stride, m.padding,
                                      m.dilation, m.groups).sum())
        brute["dense"] += m.weight.numel() * math.prod(out.shape[-(m.weight.dim() - 2):]) * x.shape[0]

    def attn_hook(m, inputs, qkv):  # what _ssa_kernel_torch multiplies, recomputed with full matmuls
        t, n, c3, length = qkv.shape
        q, k, v = qkv.reshape(t, n, 3, heads, c3 // 3 // heads, length).flatten(2, 3).chunk(3, dim=2)
        vk = v @ k.transpose(-2, -1)
        brute["sops"] += float((v.double() @ k.double().transpose(-2, -1)).sum())
        brute["sops"] += float((vk.abs().double() @ q.double()).sum())
        brute["dense"] += 2 * v.shape[:3].numel() * v.shape[3] ** 2 * length
        brute["attn_in"] = qkv

    # the brute force runs in a plain pass of its own (eval, reset: the same spikes as the measured pass)
    handles = [m.register_forward_hook(layer_hook) for m in layers.values()]
    handles.append(net.blocks[0].attn.qkv_lif.register_forward_hook(attn_hook))
    x = torch.rand(B, 1, 8, 8)
    with torch.no_grad():
        net.eval()(x)
    functional.reset_net(net)
    for h in handles:
        h.remove()
    report = measure(net, [x])
    t, cover = report.total, report.total["coverage"]
    assert cover["weights"] == 1.0 and cover["macs"] == 1.0
    assert not cover["uncounted"] and not cover["uncounted_ops"]
    assert cover["synaptic_weights"] == sum(m.weight.numel() for m in layers.values())
    assert cover["model_dense_macs"] == brute["dense"]
    assert brute["attn_in"].sum() > 0
    assert report.layers["blocks.0.attn/matmul.1"]["input_kind"] == "integer@binary"
    assert report.layers["blocks.0.attn.qkv_conv_bn.0"]["input_kind"] == "integer"  # x + attn(x): 0/1/2
    assert t["sops"] == brute["sops"] > 0 and t["macs"] == brute["macs"] > 0
    assert t["time_steps"] == T
    rows = [n for n, r in report.layers.items() if r["type"] == "matmul"]
    assert rows == ["blocks.0.attn/matmul.0", "blocks.0.attn/matmul.1"]
    cph, length = dim // heads, (8 // 4) ** 2
    # one pass per sample
    assert all(report.layers[n]["dense_macs"] == B * heads * cph * cph * length for n in rows)
    assert "coverage: 100.00 %" in str(report)


# --- coverage of what is not counted -----------------------------------------------------------------------

class Odd(nn.Module):
    """A custom module with a 2-D weight it does not multiply through a matmul."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 3))
        self.gain = nn.Parameter(torch.ones(3))  # 1-D: not a synapse

    def forward(self, x):
        return x * self.weight.sum() * self.gain.sum()


def test_uncounted_modules_are_listed_and_lower_coverage_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.ConvTranspose2d(4, 2, 3, stride=2), Odd(), nn.Flatten(), nn.Linear(2 * 9 * 9, 5))
    B = 3
    x = torch.rand(B, 1, 6, 6)
    with pytest.warns(UserWarning, match=r"not counted: 3 \(ConvTranspose2d\), 4 \(Odd\)"):
        report = measure(net, [x])
    cover = report.total["coverage"]
    counted_w, convt_w, odd_w = 4 * 9 + 2 * 81 * 5, 4 * 2 * 9, 9
    assert cover["counted_weights"] == counted_w and cover["synaptic_weights"] == counted_w + convt_w + odd_w
    assert cover["weights"] == counted_w / (counted_w + convt_w + odd_w)
    convt_macs = B * 4 * 2 * 9 * 4 * 4  # a transposed conv: every input pixel meets every weight
    counted_macs = B * (4 * 9 * 4 * 4 + 2 * 81 * 5)
    assert cover["counted_dense_macs"] == counted_macs
    assert cover["model_dense_macs"] == counted_macs + convt_macs
    assert cover["macs"] == counted_macs / (counted_macs + convt_macs)
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        net(x)
    assert cover["model_dense_macs"] == flops.get_total_flops() // 2
    assert cover["uncounted"] == [
        {"name": "3", "type": "ConvTranspose2d", "weights": convt_w, "dense_macs": convt_macs},
        {"name": "4", "type": "Odd", "weights": odd_w, "dense_macs": 0}]
    assert cover["uncounted_ops"] == [{"module": "3", "op": "convolution", "dense_macs": convt_macs}]
    text = str(report)
    assert "not counted: 3 (ConvTranspose2d, 72 weights" in text and "not counted: 4 (Odd, 9 weights" in text
    assert any("not counted: 3 (ConvTranspose2d)" in n for n in report.notes)
    assert cover["unknown_ops"] == []  # Odd's weight.sum() is a reduction, not a product


class FusedAttention(nn.Module):
    def __init__(self, fused):
        super().__init__()
        self.fused, self.fc = fused, nn.Linear(8, 2)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True) if fused == "mha" else None

    def forward(self, x):
        if self.fused == "sdpa":  # one fused CPU kernel, no bmm the dispatch mode could count
            return self.fc(F.scaled_dot_product_attention(x, x, x))
        return self.fc(self.mha(x, x, x, need_weights=False)[0])  # eval fast path: one fused op


def test_fused_attention_is_in_the_mac_coverage_with_its_closed_form():
    torch.manual_seed(0)
    B, H, L, E = 2, 2, 4, 8
    with pytest.warns(UserWarning, match=r"not counted: _scaled_dot_product_flash_attention_for_cpu in \("):
        sdpa = measure(FusedAttention("sdpa"), [torch.rand(B, H, L, E)]).total["coverage"]
    attention = 2 * B * H * L * L * E  # Q·Kᵀ and A·V
    fc = B * H * L * E * 2
    assert sdpa["model_dense_macs"] == fc + attention and sdpa["macs"] == fc / (fc + attention)
    fused = "_scaled_dot_product_flash_attention_for_cpu"
    assert sdpa["uncounted_ops"] == [{"module": "(model)", "op": fused, "dense_macs": attention}]
    with pytest.warns(UserWarning, match=r"not counted: mha \(MultiheadAttention\)"):
        report = measure(FusedAttention("mha"), [torch.rand(B, L, E)])
    mha, fc = report.total["coverage"], B * L * E * 2
    projections = 4 * B * L * E * E  # q, k, v and out
    attention = 2 * B * L * L * E
    # out_proj is a Linear, but the fused path uses its weight without running it: not counted either
    assert mha["uncounted"] == [
        {"name": "mha", "type": "MultiheadAttention", "weights": 3 * E * E,
         "dense_macs": projections + attention},
        {"name": "mha.out_proj", "type": "NonDynamicallyQuantizableLinear", "weights": E * E,
         "dense_macs": 0}]
    assert mha["macs"] == fc / (fc + projections + attention)
    assert "layer mha.out_proj never ran: its counts are 0" in report.notes  # the fused path skips the module


def test_an_op_without_a_mac_formula_on_an_uncounted_weight_is_named():
    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.fc = nn.Parameter(torch.randn(3, 4, 4)), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(F.bilinear(x, x, self.weight))

    with pytest.warns(UserWarning, match=r"11.11 % of the synaptic weights"):
        report = measure(Bilinear(), [torch.rand(2, 4)])
    assert report.total["coverage"]["unknown_ops"] == [{"module": "(model)", "op": "_trilinear", "calls": 1}]
    assert any(n.startswith("_trilinear in (model) takes a synaptic weight and has no MAC formula")
               for n in report.notes)


def test_new_rows_and_fields_serialise(tmp_path):
    torch.manual_seed(0)
    report = measure(TinyAttention(), [torch.rand(2, 4, 5)])
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["total"]["coverage"]["weights"] == 1.0
    assert data["layers"]["(model)/matmul.0"]["type"] == "matmul"
    lines = (tmp_path / "r.csv").read_text().splitlines()
    total = dict(zip(lines[0].split(","), lines[-1].split(","), strict=True))
    assert total["layer"] == "total" and total["weight_coverage"] == total["mac_coverage"] == "1.0"
    assert any(line.startswith("(model)/matmul.2,matmul,,integer@integer") for line in lines)


def test_products_off_and_bad_arguments():
    net = TinyAttention()
    with pytest.warns(UserWarning, match=r"22.22 % of the synaptic weights and the dense MACs are not meas"):
        report = measure(net, [torch.rand(2, 4, 5)], products=False)  # w and w2 are not seen in products
    assert not [r for r in report.layers.values() if r["type"] == "matmul"]
    assert report.total["coverage"]["macs"] is None and any("products=False" in n for n in report.notes)
    with pytest.raises(ValueError, match=r"sample_dim must be one of \(None, 0, 1\), got 2"):
        measure(net, [torch.rand(2, 4, 5)], sample_dim=2)
    with pytest.raises(ValueError, match="sample_dim 1 is out of range"):
        measure(net, [torch.rand(5)], sample_dim=1)
    with pytest.raises(ValueError, match="no nn.Conv1d, nn.Conv2d, nn.Conv3d or nn.Linear layer to measure"):
        measure(nn.Sequential(nn.ReLU()), [torch.rand(2, 3)], products=False)
