"""OCSPruner on the SpikingJelly model zoo (tiny configs): grouped convs, attention, repeat-over-T forwards,
atomic prune(), and SpikingJelly 0.0.0.0.14 (in a subprocess)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based.model import (
    maxformer,
    ms_resnet,
    parametric_lif_net,
    qkformer,
    sew_resnet,
    spike_driven_transformer,
    spikformer,
    spiking_resnet,
    spiking_vgg,
)
from torch import nn

from snn_lats.structured import GraphTraceError, OCSPruner, apply_structure, count_macs, structure_spec
from tests.conftest import HANG

LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))
TARGET = 0.4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (tests/conftest.py)


def multi_step(net):
    functional.set_step_mode(net, "m")
    return net


class TinyVGG(spiking_vgg.SpikingVGG):
    """SpikingVGG's own layers and forward, tiny (its __init__ always builds a 25088×4096 classifier)."""

    def __init__(self):
        nn.Module.__init__(self)
        self.features = self.make_layers([8, "M", 16, "M"], batch_norm=True, neuron=neuron.IFNode)
        self.avgpool = layer.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(layer.Linear(16 * 2 * 2, 32), neuron.IFNode(), layer.Linear(32, 10))
        self._initialize_weights()
        multi_step(self)


# family: (build, input shape, layers whose groups must be left out, because removing channels there breaks a
# head split or a reshape that torch-pruning cannot see)
FAMILIES = {
    "spiking_resnet": (lambda: multi_step(spiking_resnet.SpikingResNet(
        spiking_resnet.BasicBlock, [1, 1, 1, 1], num_classes=10, spiking_neuron=neuron.IFNode)),
        (2, 1, 3, 16, 16), ()),
    "spiking_resnext": (lambda: multi_step(spiking_resnet.SpikingResNet(
        spiking_resnet.Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10,
        spiking_neuron=neuron.IFNode)), (2, 1, 3, 16, 16), ()),
    "sew_resnet": (lambda: multi_step(sew_resnet.SEWResNet(
        sew_resnet.BasicBlock, [1, 1, 1, 1], cnf="ADD", num_classes=10, spiking_neuron=neuron.LIFNode)),
        (2, 1, 3, 16, 16), ()),
    "ms_resnet": (lambda: ms_resnet.MSResNet(T=2, num_classes=10, base_channels=8, layers=(1, 1, 1)),
                  (1, 3, 16, 16), ()),
    "spiking_vgg": (TinyVGG, (2, 1, 3, 16, 16), ()),
    "parametric_lif_net": (lambda: multi_step(parametric_lif_net.MNISTNet(
        channels=8, spiking_neuron=neuron.ParametricLIFNode)), (2, 1, 1, 28, 28), ()),
    "spikformer": (lambda: spikformer.Spikformer(
        T=2, in_channels=1, img_size_h=16, img_size_w=16, patch_size=4, num_classes=10, embed_dims=32,
        num_heads=2, depths=1), (1, 1, 16, 16), ("blocks.0.attn.qkv_conv_bn.0",)),
    "spike_driven_transformer": (lambda: spike_driven_transformer.SpikeDrivenTransformer(
        T=2, in_channels=1, num_classes=10, embed_dims=32, num_heads=2, depths=1), (1, 1, 16, 16),
        ("blocks.0.attn.v_conv",)),
    "qkformer": (lambda: qkformer.QKFormer(
        T=2, in_channels=1, num_classes=10, embed_dims=48, num_heads=(1, 2, 2), depths=(1, 1, 1)),
        (1, 1, 32, 32),
        ("stage1.0.attn.qk_conv_bn.0", "stage2.0.attn.qk_conv_bn.0", "stage3.0.attn.qkv_conv_bn.0")),
    "maxformer": (lambda: maxformer.MaxFormer(
        T=2, in_channels=1, num_classes=10, embed_dims=48, depths=(1, 1, 1), cifar=True), (1, 1, 32, 32),
        ("stage3.0.attn.qkv.0",)),
}


def build(family):
    torch.manual_seed(0)
    return FAMILIES[family][0]()


def forward(net, x):
    net.eval()
    functional.reset_net(net)
    with torch.no_grad():
        out = net(x)
    functional.reset_net(net)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ocs_reaches_the_target_on_the_zoo(family):
    _, shape, must_skip = FAMILIES[family]
    net = build(family)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    dense_out = forward(net, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner = OCSPruner(net, x, TARGET)
    assert set(must_skip) <= set(pruner.skipped_groups)
    if pruner.skipped_groups:  # never silent
        assert any("left unpruned" in str(w.message) for w in caught)
    spec = pruner.prune()
    measured = count_macs(net, x)
    assert measured == pruner.pruned_flops < pruner.dense_flops == count_macs(build(family), x)
    assert abs(pruner.achieved_flops_reduction - TARGET) < 0.01
    out = forward(net, x)
    assert out.shape == dense_out.shape
    for m in net.modules():  # every conv kept whole, equal groups
        if isinstance(m, nn.modules.conv._ConvNd):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)
        if hasattr(m, "num_heads") and hasattr(m, "proj_conv_bn"):  # the attention's head split still holds
            assert m.proj_conv_bn[0].in_channels % m.num_heads == 0
    rebuilt = apply_structure(build(family), spec)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert structure_spec(rebuilt) == spec
    assert torch.equal(forward(rebuilt, x), out)


def test_grouped_convs_lose_the_same_positions_in_every_group():
    net = build("spiking_resnext")
    x = torch.rand(1, 1, 3, 16, 16)
    pruner = OCSPruner(net, x, TARGET)
    group = next(g for g in pruner.groups if g.key == "layer1.0.conv2")  # conv2: 128 channels in 32 groups
    assert (group.size, group.tie, group.units) == (128, 32, 4)
    feeding = next(g for g in pruner.groups if g.key == "layer1.0.conv1")  # conv1's outputs: conv2's inputs
    roles = {(m.name, m.role) for m in feeding.members}
    assert roles >= {("layer1.0.conv1", "out"), ("layer1.0.conv2", "grouped_in")}
    masks, _ = pruner.select()
    for g, m in zip(pruner.groups, masks, strict=True):  # whole positions: each block loses the same channels
        blocks = m.view(g.tie, g.units)
        assert torch.equal(blocks, blocks[:1].expand_as(blocks))
    pruner.round_to = 64  # in units: 64 channels are 2 positions of the 32 blocks
    assert all(int(m.sum()) % 64 == 0 for m in pruner.select()[0])
    pruner.round_to = None
    with pytest.raises(ValueError, match=r"same positions in each of its 32 blocks of 4 channels"):
        pruner.prune(selection={"layer1.0.conv2": [0]})
    every_group = torch.arange(32) * 4
    spec = pruner.prune(selection={"layer1.0.conv2": (every_group + 1).tolist(),
                                   "layer1.0.conv1": (every_group + 0).tolist() + (every_group + 3).tolist()})
    conv2 = net.layer1[0].conv2
    assert (conv2.in_channels, conv2.out_channels, conv2.groups) == (64, 96, 32)
    assert tuple(conv2.weight.shape) == (96, 2, 3, 3)
    assert spec["layers"]["layer1.0.conv2"]["in_channels"] == 64
    assert count_macs(net, x) == pruner.pruned_flops  # the channel MAC model covers grouped convs exactly


def test_head_split_groups_are_skipped_with_the_reason():
    net = build("spikformer")
    x = torch.rand(1, 1, 16, 16)
    with pytest.warns(UserWarning, match=r"1 channel group\(s\) of Spikformer are left unpruned"):
        pruner = OCSPruner(net, x, TARGET)
    reason = pruner.skipped_groups["blocks.0.attn.qkv_conv_bn.0"]
    assert "local qkv dim 31 is not divisible by num_heads=2" in reason and "SpikingSelfAttention" in reason
    assert "blocks.0.attn.qkv_conv_bn.0" not in [g.key for g in pruner.groups]
    with pytest.raises(ValueError, match=r"left unpruned.*num_heads"):
        pruner.prune(selection={"blocks.0.attn.qkv_conv_bn.0": [0, 1, 2]})
    embedding = next(g.key for g in pruner.groups if any(m.name == "head" for m in g.members))
    pruner.prune(selection={embedding: [0, 5]})  # the embedding may shrink: SSA reshapes q, k, v only
    attn = net.blocks[0].attn
    assert attn.qkv_conv_bn[0].out_channels == 96 and attn.proj_conv_bn[0].in_channels == 32  # heads intact
    assert attn.qkv_conv_bn[0].in_channels == attn.proj_conv_bn[0].out_channels == net.head.in_features == 30
    assert forward(net, x).shape == (2, 1, 10)  # Spikformer returns [T, B, classes]


def snapshot(model, pruner, optimizer):
    return dict(
        params=[(n, p, p.detach().clone()) for n, p in model.named_parameters()],
        buffers={n: b.clone() for n, b in model.state_dict().items()},
        attrs={n: {k: v for k, v in vars(m).items() if isinstance(v, (int, float, bool, str, tuple))}
               for n, m in model.named_modules()},
        pruner=copy.deepcopy(pruner.state_dict()), groups=[(g.key, g.size, g.tie) for g in pruner.groups],
        optimizer=copy.deepcopy(optimizer.state_dict()), opt_params=[p for g in optimizer.param_groups
                                                                     for p in g["params"]],
    )


def assert_unchanged(model, pruner, optimizer, before):
    now = snapshot(model, pruner, optimizer)
    assert [n for n, _, _ in now["params"]] == [n for n, _, _ in before["params"]]
    for (_, p, _), (_, p0, v0) in zip(now["params"], before["params"], strict=True):
        assert p is p0 and torch.equal(p, v0)  # the same Parameter objects (the optimizer's), same values
    assert now["buffers"].keys() == before["buffers"].keys()
    assert all(torch.equal(now["buffers"][k], v) for k, v in before["buffers"].items())
    assert now["attrs"] == before["attrs"]  # widths, groups, step modes, training flags
    assert now["pruner"] == before["pruner"] and now["groups"] == before["groups"] and not pruner.pruned
    assert all(a is b for a, b in zip(now["opt_params"], before["opt_params"], strict=True))
    assert str(now["optimizer"]) == str(before["optimizer"])


@pytest.fixture
def trained():
    """A SEW ResNet after one SGD step with momentum (optimizer state, grads, neuron state non-trivial)."""
    net = build("sew_resnet")
    x = torch.rand(2, 1, 3, 16, 16)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    pruner = OCSPruner(net, x, TARGET, optimizer=optimizer)
    net.train()
    net(x).sum().backward()
    optimizer.step()
    pruner.epoch_start(3)
    return net, x, optimizer, pruner


def test_a_failing_torch_pruning_call_leaves_everything_as_it_was(trained, monkeypatch):
    net, x, optimizer, pruner = trained
    before = snapshot(net, pruner, optimizer)
    calls, original = [], tp.dependency.group.Group.prune

    def failing(self, *args, **kwargs):  # two groups pruned, the third half-way when it fails
        calls.append(self)
        if len(calls) == 3:
            dep, idxs = self[0]
            dep(idxs)
            raise RuntimeError("injected failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tp.dependency.group.Group, "prune", failing)
    with pytest.raises(RuntimeError, match=r"OCSPruner.prune: removing \d+ of \d+ channels of group "
                                           r"'[\w.]+' failed in torch-pruning: RuntimeError: injected "
                                           r"failure; the model and the pruner are unchanged"):
        pruner.prune()
    assert len(calls) == 3
    assert_unchanged(net, pruner, optimizer, before)
    monkeypatch.undo()
    masks, macs = pruner.select()  # the retry removes exactly what an untouched pruner selects
    pruner.prune()
    assert pruner.pruned_flops == macs == count_macs(net, x)
    assert pruner.state_dict()["selection"] == [m.nonzero().flatten().tolist() for m in masks]


def test_a_forward_or_mac_failure_after_pruning_is_undone(trained, monkeypatch):
    net, x, optimizer, pruner = trained
    before = snapshot(net, pruner, optimizer)
    def narrow_fails(model, inputs):
        if model.conv1.out_channels < 64:
            raise RuntimeError("injected forward failure")
        return model(inputs)

    pruner.forward_fn = narrow_fails
    with pytest.raises(RuntimeError, match=r"the pruned model's forward failed: .*injected forward failure; "
                                           r"the model and the pruner are unchanged"):
        pruner.prune()
    assert_unchanged(net, pruner, optimizer, before)
    pruner.forward_fn = None
    real = pruner.mac_model.macs
    monkeypatch.setattr(pruner.mac_model, "macs", lambda masks: real(masks) + 1)
    with pytest.raises(RuntimeError, match=r"the pruned model has \d+ MACs but the channel model predicted"):
        pruner.prune()
    assert_unchanged(net, pruner, optimizer, before)


class RepeatsThenBreaks(nn.Module):
    """Multi-step, repeats over T, and its forward fails in both step modes (a genuine bug in the model)."""

    def __init__(self):
        super().__init__()
        self.T = 2
        self.conv = layer.Conv2d(3, 4, 3, step_mode="m")
        self.sn = neuron.IFNode(step_mode="m")
        self.fc = layer.Linear(4, 2, step_mode="m")

    def forward(self, x):
        if x.dim() == 4:
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        y = self.sn(self.conv(x)).mean((3, 4))
        if not torch.is_grad_enabled():
            return self.fc(y).mean(0)
        return self.fc(y[..., :3]).mean(0)  # only the traced (grad-enabled) forward breaks


def test_an_untraceable_model_names_the_real_cause():
    expected = (r"in single-step mode the traced forward failed in layer 'conv' \(Conv2d\).*in multi-step "
                r"mode at T=1 the traced forward failed in layer 'fc' \(Linear\).*1x3 and 4x2")
    with pytest.raises(GraphTraceError, match=expected):
        OCSPruner(RepeatsThenBreaks(), torch.rand(1, 3, 8, 8), TARGET)


@pytest.mark.slow
def test_spikingjelly_0_0_0_0_14_resnets_with_if_and_lif():
    if not (LEGACY_DIR / "spikingjelly").is_dir():
        pytest.skip(f"spikingjelly 0.0.0.0.14 not installed at {LEGACY_DIR} (make test installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(Path(__file__).parents[1])])}
    script = Path(__file__).with_name("legacy_ocs_check.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "legacy ocs OK" in result.stdout
    assert "SpikingResNet/IF: 14583808 -> 8751616 MACs" in result.stdout
