"""snn_lats.export.to_nir (issue #27): each family users prune, pruned to 90 %, exported, written, read back
and run by importers nobody here wrote (SpikingJelly 2.0's import_from_nir, and snnTorch or Norse), spike for
spike against the model; the nonzero count survives; BatchNorm folding is exact; what NIR cannot express is
refused by name before anything is written; the user's model is never touched."""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

import models
from snn_lats import (
    MagnitudePruner,
    SoftThresholdPruner,
    export_dense,
    relative_weight_scale,
    suggest_threshold,
)
from snn_lats.parametrizations import deployed_weight
from tests import nir_roundtrip as rt

nir = pytest.importorskip("nir", reason="the [nir] extra (nir, nirtorch) is not installed")
pytest.importorskip("nirtorch", reason="the [nir] extra (nir, nirtorch) is not installed")

from snn_lats.export import (  # noqa: E402  (after the skip: the module needs nir)
    Limits,
    NIRExportError,
    build_step_graph,
    deployment_report,
    to_nir,
)
from snn_lats.export.step_graph import fold_batchnorm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WEIGHT_NODES = (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Every layer's output scaled to a spread of 2 and BatchNorm given random affine parameters and the
    running statistics of ``x`` (so that every layer fires and BN folding has something to fold), then eval
    mode. Call it after pruning: pruning shrinks the pre-activations."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    spread = {}

    def record(module, inputs, output):
        spread[module] = output.std()

    for _ in range(3):  # a later layer's spread depends on the earlier ones'
        hooks = [m.register_forward_hook(record) for m in layers]
        model.eval()
        model(x)
        functional.reset_net(model)
        for h in hooks:
            h.remove()
        for m in layers:
            target = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            target.mul_(2 / spread[m].clamp_min(1e-3))
    for m in layers:  # a drive of its own for a layer no BatchNorm follows (a pruned classifier)
        if m.bias is not None:
            m.bias.add_(0.5)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the calibration batch
            m.reset_running_stats()
            with torch.no_grad():
                m.weight.copy_(0.8 + 0.8 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(-0.2 + 0.6 * torch.rand(m.bias.shape, generator=gen))
    model.train()
    model(x)
    functional.reset_net(model)
    return model.eval()


def prune(model: nn.Module) -> MagnitudePruner:
    return MagnitudePruner(model, pruning_ratio=0.9, total_steps=1, initial_ratio=0.9)


def sequential_multistep(neuron_cls) -> nn.Module:
    """A plain SpikingJelly network as users write them: multi-step layers in an nn.Sequential."""
    net = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8), neuron_cls(),
        layer.MaxPool2d(2), layer.Conv2d(8, 8, 3, padding=1), layer.BatchNorm2d(8), neuron_cls(),
        layer.Flatten(), layer.Linear(8 * 4 * 4, 10), neuron_cls())
    functional.set_step_mode(net, "m")
    return net


def seq_to_ann_container_lif() -> nn.Module:
    """SpikingJelly's tutorial CSNN: plain conv-BN layers inside SeqToANNContainer, multi-step LIF nodes (a BN
    inside the container folds into its conv like any other)."""
    return nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
        neuron.LIFNode(step_mode="m"),
        layer.SeqToANNContainer(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)),
        neuron.LIFNode(step_mode="m"),
        layer.SeqToANNContainer(nn.Flatten(), nn.Linear(8 * 4 * 4, 10)), neuron.LIFNode(step_mode="m"))


def sequential_singlestep_if() -> nn.Module:
    net = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.IFNode(),
        layer.Conv2d(8, 8, 3, stride=2, padding=1), layer.BatchNorm2d(8), neuron.IFNode(),
        layer.Flatten(), layer.Linear(8 * 4 * 4, 10), neuron.IFNode())
    return net


def zoo(name, **kw):
    return lambda: models.create_model(name, T=3, num_classes=5, in_channels=1, **kw)


VGG = dict(width_multiplier=0.0625, pool_size=1, classifier_width=16, ceil_mode=True)
RESNET = dict(width_multiplier=0.0625)
# family -> (builder, input [B, ...] of one sample batch (T first for multi-step nets), steps, importers).
# snnTorch 1.0.0 refuses nir.IF (its importer asserts r == 1, and would make it leak), Norse 1.1.0 has no
# AvgPool2d and runs converging branches out of order: IF families with pooling or residuals have
# SpikingJelly's importer only (docs/deploy.md, the matrix).
FAMILIES = {
    "sequential_multistep_lif": (lambda: sequential_multistep(neuron.LIFNode), (4, 1, 1, 8, 8), 4,
                                 ("spikingjelly", "snntorch")),
    "sequential_singlestep_if": (sequential_singlestep_if, (1, 1, 8, 8), 4, ("spikingjelly", "norse")),
    "seq_to_ann_container_lif": (seq_to_ann_container_lif, (4, 1, 1, 8, 8), 4, ("spikingjelly", "snntorch")),
    "spiking_vgg11_bn_lif": (zoo("spiking_vgg11_bn", neuron_type="lif", **VGG), (1, 1, 32, 32), 3,
                             ("spikingjelly", "snntorch")),
    "spiking_vgg11_bn_if": (zoo("spiking_vgg11_bn", **VGG), (1, 1, 32, 32), 3, ("spikingjelly",)),
    "spiking_resnet18_plif": (zoo("spiking_resnet18", neuron_type="plif", stem="cifar", **RESNET),
                              (1, 1, 8, 8), 3, ("spikingjelly", "snntorch")),
    "spiking_resnet18_if": (zoo("spiking_resnet18", stem="cifar", **RESNET), (1, 1, 8, 8), 3,
                            ("spikingjelly",)),
    "sew_resnet18_add_lif": (zoo("sew_resnet18", neuron_type="lif", stem="imagenet", **RESNET),
                             (1, 1, 32, 32), 3, ("spikingjelly", "snntorch")),
    "sew_resnet18_add_if": (zoo("sew_resnet18", stem="cifar", **RESNET), (1, 1, 8, 8), 3, ("spikingjelly",)),
}


def node_of(graph, module: str):
    """The NIR node exported for the model's module ``module``."""
    (name,) = [n for n, v in graph.nodes.items() if v.metadata.get("module") == module]
    return graph.nodes[name]


def _batch(shape, batch, multi_step_input):
    shape = list(shape)
    shape[1 if multi_step_input else 0] = batch
    return torch.rand(shape, generator=torch.Generator().manual_seed(7)) * 1.5


def _step_inputs(x, steps, multi_step_input):
    return list(x) if multi_step_input else [x] * steps


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")  # Norse's
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_round_trips_through_a_nir_file(family, tmp_path):
    build, shape, steps, importers = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    multi_step_input = len(shape) == 5
    prune(model)
    calibrate(model, _batch(shape, 8, multi_step_input))
    pruned = {n: deployed_weight(m) for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))}
    nonzero = sum(int(torch.count_nonzero(w)) for w in pruned.values())
    assert 1 - nonzero / sum(w.numel() for w in pruned.values()) > 0.89

    path = tmp_path / "model.nir"
    x = _batch(shape, 2, multi_step_input)
    to_nir(model, x, path)
    graph = nir.read(path)
    # the pruned zeros survive: the graph's weights have exactly the model's nonzero count
    exported = [node for node in graph.nodes.values() if isinstance(node, WEIGHT_NODES)]
    assert len(exported) == len(pruned)
    assert sum(int(np.count_nonzero(node.weight)) for node in exported) == nonzero

    for framework in importers:
        pytest.importorskip({"spikingjelly": "spikingjelly.activation_based.nir_exchange",
                             "snntorch": "snntorch.import_nir", "norse": "norse.torch"}[framework],
                            reason=f"{framework} is not installed")
        # snnTorch and Norse drop the batch dimension at nir.Flatten: they are fed one sample
        xb = x if framework == "spikingjelly" else x[:, :1] if multi_step_input else x[:1]
        records, output = rt.reference(model, xb, steps)
        assert all(sum(float(s.sum()) for s in spikes) > 0 for spikes in records.values()), \
            f"{family}: a silent layer would make its comparison empty"
        got, outputs = rt.imported(framework, graph, _step_inputs(xb, steps, multi_step_input))
        assert rt.compare(graph, records, output, got, outputs) == [], framework


def test_snntorch_1_0_refuses_if_graphs_as_the_matrix_says():
    pytest.importorskip("snntorch.import_nir", reason="snnTorch is not installed")
    net = sequential_singlestep_if().eval()
    graph = to_nir(net, torch.rand(1, 1, 8, 8))
    with pytest.raises(AssertionError, match="r != 1 not supported"):
        rt.imported("snntorch", graph, [torch.rand(1, 1, 8, 8)])


def _tiny_plain():
    return nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), layer.BatchNorm2d(4), neuron.LIFNode(),
                         layer.Flatten(), layer.Linear(4 * 6 * 6, 3), neuron.IFNode())


def test_the_users_model_is_untouched(tmp_path):
    torch.manual_seed(0)
    model = zoo("sew_resnet18", neuron_type="lif", stem="cifar", **RESNET)()
    calibrate(model, torch.rand(4, 1, 8, 8))
    pruner = prune(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = {n: type(m) for n, m in model.named_modules()}
    x = torch.rand(2, 1, 8, 8)
    to_nir(model, x, tmp_path / "m.nir")
    assert model.training and all(m.training for m in model.modules())
    assert {n: type(m) for n, m in model.named_modules()} == classes
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(pruner.layers[n].parametrizations.weight[0].mask is not None for n in pruner.layers)
    model.eval()
    functional.reset_net(model)
    model(x)  # the model still runs: its parametrized classes are intact


def test_prepared_and_squashed_models_export_the_same_graph():
    torch.manual_seed(0)
    build = zoo("spiking_resnet18", neuron_type="lif", stem="cifar", **RESNET)
    model = calibrate(build(), torch.rand(4, 1, 8, 8))
    scale = relative_weight_scale(model)
    threshold = suggest_threshold(model, 0.9, layer_scale=scale)
    SoftThresholdPruner(model, threshold, "constant", compensate=False, layer_scale=scale)  # LATS
    model.eval()
    squashed = build().eval()
    squashed.load_state_dict(export_dense(model))  # the squashed weights, into the plain architecture
    x = torch.rand(2, 1, 8, 8)
    a, b = to_nir(model, x), to_nir(squashed, x)
    assert list(a.nodes) == list(b.nodes) and sorted(a.edges) == sorted(b.edges)
    for name, node in a.nodes.items():
        other = b.nodes[name]
        assert type(node) is type(other)
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, getattr(other, key)), (name, key)
    sparsity = [1 - np.count_nonzero(n.weight) / n.weight.size for n in a.nodes.values()
                if isinstance(n, WEIGHT_NODES)]
    assert 0.85 < float(np.mean(sparsity))


def test_an_ltp_model_in_training_mode_exports_its_hard_mask():
    from snn_lats import LearnedThresholdPruner

    torch.manual_seed(0)
    model = sequential_multistep(neuron.LIFNode)
    pruner = LearnedThresholdPruner(model, initial_threshold=3.0)
    model.train()  # LTP's training-mode weight is θ·sigmoid(...): no exact zero
    graph = to_nir(model, torch.rand(2, 1, 1, 8, 8))
    assert model.training
    for name, module in pruner.layers.items():
        assert int(torch.count_nonzero(module.weight)) == module.weight.numel()
        hard = deployed_weight(module)  # what squash bakes: θ·1[θ² > τ]
        exported = node_of(graph, name).weight
        assert 0 < np.count_nonzero(exported) == int(torch.count_nonzero(hard)) < hard.numel()
        assert np.array_equal(exported != 0, hard.detach().numpy() != 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_batchnorm_folding_is_exact_in_eval_mode(dtype, tol):
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False).to(dtype)
    bn = nn.BatchNorm2d(6).to(dtype)
    linear, bn1 = nn.Linear(5, 4).to(dtype), nn.BatchNorm1d(4, affine=False).to(dtype)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape, generator=gen) > 0.7)  # zeros must stay zeros
        for norm in (bn, bn1):
            norm.running_mean.copy_(torch.randn(norm.num_features, generator=gen))
            norm.running_var.copy_(0.1 + torch.rand(norm.num_features, generator=gen) * 3)
        bn.weight.copy_(torch.randn(6, generator=gen))
        bn.bias.copy_(torch.randn(6, generator=gen))
    x = torch.randn(2, 3, 9, 9, generator=gen, dtype=dtype)
    z = torch.randn(7, 5, generator=gen, dtype=dtype)
    bn.eval(), bn1.eval()
    with torch.no_grad():
        expected, expected_linear = bn(conv(x)), bn1(linear(z))
        zeros = conv.weight == 0
        fold_batchnorm(conv, bn), fold_batchnorm(linear, bn1)
        assert torch.equal(conv.weight == 0, zeros)
        torch.testing.assert_close(conv(x), expected, rtol=tol, atol=tol)
        torch.testing.assert_close(linear(z), expected_linear, rtol=tol, atol=tol)


def test_the_exported_convolution_is_the_folded_one():
    torch.manual_seed(0)
    net = calibrate(_tiny_plain(), torch.rand(4, 1, 6, 6))
    graph = to_nir(net, torch.rand(1, 1, 6, 6))
    node = node_of(graph, "0")
    assert not [v for v in graph.nodes.values() if v.metadata.get("module") == "1"]  # the BatchNorm
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        got = nn.functional.conv2d(x, torch.from_numpy(node.weight), torch.from_numpy(node.bias), padding=1)
        torch.testing.assert_close(got, net[1](net[0](x)), rtol=1e-5, atol=1e-6)
    assert "1 (BatchNorm2d) folded into 0" in graph.metadata["notes"]


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k = layer.Linear(4, 4), layer.Linear(4, 4)
        self.sn = neuron.LIFNode()

    def forward(self, x):
        return self.sn(self.q(x) @ self.k(x).transpose(-1, -2))


def _refused(build, x, *, on_unsupported="error"):
    with pytest.raises(NIRExportError) as info:
        to_nir(build(), x, on_unsupported=on_unsupported)
    return info.value.problems


REFUSALS = {
    "attention": (lambda: nn.Sequential(layer.Linear(4, 4), Attention()), torch.rand(2, 3, 4),
                  ["1 (Attention): ", "multiplies two activations (matmul)", "applies .transpose()"]),
    "max pooling of currents": (lambda: nn.Sequential(layer.Conv2d(1, 2, 3), layer.MaxPool2d(2),
                                                      neuron.IFNode()), torch.rand(1, 1, 8, 8),
                                ["1 (MaxPool2d): max-pools values that are not spikes"]),
    "grouped convolution": (lambda: nn.Sequential(layer.Conv2d(2, 4, 3, groups=2), neuron.IFNode()),
                            torch.rand(1, 2, 6, 6), ["0 (Conv2d): is a grouped convolution (groups=2)"]),
    "batchnorm first": (lambda: nn.Sequential(layer.BatchNorm2d(1), layer.Conv2d(1, 2, 3), neuron.IFNode()),
                        torch.rand(1, 1, 6, 6), ["0 (BatchNorm2d): does not follow a convolution"]),
    "unknown neuron": (lambda: nn.Sequential(layer.Linear(3, 3), neuron.QIFNode()), torch.rand(2, 3),
                       ["1 (QIFNode): a neuron NIR has no model for here"]),
    "adaptive pooling with unequal windows": (
        lambda: nn.Sequential(layer.Conv2d(1, 2, 3), neuron.IFNode(), layer.AdaptiveAvgPool2d(4)),
        torch.rand(1, 1, 8, 8), ["2 (AdaptiveAvgPool2d): pools 6x6 to 4x4"]),
    "ceil mode partial windows": (
        lambda: nn.Sequential(layer.Conv2d(1, 2, 3), neuron.IFNode(), layer.MaxPool2d(2, ceil_mode=True)),
        torch.rand(1, 1, 7, 7), ["2 (MaxPool2d): has ceil_mode=True"]),
    "scaled activations": (lambda: nn.Sequential(layer.Linear(3, 3), Scale(), neuron.IFNode()),
                           torch.rand(2, 3), ["1 (Scale): scales activations by a constant (mul)"]),
    "SEW AND connection": (zoo("sew_resnet18", cnf="AND", stem="cifar", **RESNET), torch.rand(1, 1, 8, 8),
                           ["layer1.0 (BasicBlock): multiplies two activations elementwise (mul, as SEW's"]),
    "several at once": (
        lambda: nn.Sequential(layer.Conv2d(2, 4, 3, groups=2), neuron.IFNode(v_reset=None), Attention()),
        torch.rand(1, 2, 6, 6),
        ["0 (Conv2d): is a grouped", "1 (IFNode): soft reset", "2 (Attention): ",
         "multiplies two activations"]),
}


class Scale(nn.Module):
    def forward(self, x):
        return x * 2.0


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_nir_cannot_express_is_refused_by_module_name(case, tmp_path):
    build, x, expected = REFUSALS[case]
    path = tmp_path / "model.nir"
    path.write_bytes(b"the previous export")
    with pytest.raises(NIRExportError) as info:
        to_nir(build(), x, path)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert path.read_bytes() == b"the previous export" and os.listdir(tmp_path) == ["model.nir"]


@pytest.mark.parametrize("setting,expected", [
    (dict(v_reset=None), "1 (LIFNode): soft reset (v_reset=None"),
    (dict(surrogate_function=surrogate.ATan(spiking=False)),
     "1 (LIFNode): its surrogate ATan(spiking=False)"),
])
def test_neuron_settings_nir_cannot_express_are_refused_or_warned_as_the_user_chooses(setting, expected):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(layer.Linear(3, 4), neuron.LIFNode(**setting), layer.Linear(4, 2),
                             neuron.LIFNode())

    x = torch.rand(2, 3)
    assert any(expected in p for p in _refused(build, x))
    with pytest.warns(UserWarning, match="instead of these settings") as caught:
        graph = to_nir(build(), x, on_unsupported="warn")
    assert expected in str(caught[0].message)
    lif = node_of(graph, "1")
    assert np.all(lif.v_reset == 0.0) and np.all(lif.v_leak == 0.0)  # NIR's hard reset to 0
    with pytest.raises(ValueError, match=r"on_unsupported must be one of \('error', 'warn'\)"):
        to_nir(build(), x, on_unsupported="ignore")


def test_lif_time_constants_and_decay_input_map_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(3, 4), neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.7,
                                                           v_reset=-0.1),
                        layer.Linear(4, 2), neuron.ParametricLIFNode(init_tau=4.0), layer.Linear(2, 2),
                        neuron.IFNode(v_threshold=0.5))
    with torch.no_grad():
        net[3].w.fill_(0.3)  # a learned leak: τ = 1/sigmoid(0.3)
    graph = to_nir(net, torch.rand(1, 3), dt=1e-3)
    lif, plif, if_node = node_of(graph, "1"), node_of(graph, "3"), node_of(graph, "5")
    np.testing.assert_allclose(lif.tau, 3e-3) and np.testing.assert_allclose(lif.r, 3.0)
    np.testing.assert_allclose(lif.v_threshold, 0.7) and np.testing.assert_allclose(lif.v_reset, -0.1)
    np.testing.assert_allclose(lif.v_leak, -0.1)  # SpikingJelly leaks towards v_reset
    tau = 1 / torch.sigmoid(torch.tensor(0.3)).item()
    np.testing.assert_allclose(plif.tau, tau * 1e-3, rtol=1e-6) and np.testing.assert_allclose(plif.r, 1.0)
    np.testing.assert_allclose(if_node.r, 1e3) and np.testing.assert_allclose(if_node.v_threshold, 0.5)
    assert graph.metadata["dt"] == 1e-3
    # and SpikingJelly's importer, with the same dt, runs what the model runs
    x = torch.rand(1, 3) * 3
    records, output = rt.reference(net, x, 6)
    got, outputs = rt.imported("spikingjelly", graph, [x] * 6, dt=1e-3)
    assert rt.compare(graph, records, output, got, outputs) == []


def test_decay_input_false_is_exact_for_snntorch_too():
    # NIR's r = τ/dt expresses decay_input=False; snnTorch maps it to β·v + x exactly (Norse ignores r)
    pytest.importorskip("snntorch.import_nir", reason="snnTorch is not installed")
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(6, 8), neuron.LIFNode(tau=3.0, decay_input=False), layer.Linear(8, 4),
                        neuron.LIFNode(v_threshold=0.2)).eval()
    with torch.no_grad():
        net[2].weight.abs_()  # excitatory: the second layer fires too
    x = torch.rand(1, 6) * 10
    graph = to_nir(net, x)
    records, output = rt.reference(net, x, 8)
    assert all(sum(float(s.sum()) for s in steps) > 0 for steps in records.values())
    for framework in ("spikingjelly", "snntorch"):
        got, outputs = rt.imported(framework, graph, [x] * 8)
        assert rt.compare(graph, records, output, got, outputs) == [], framework


def test_fused_neurons_export_as_the_spikingjelly_neurons_they_replace():
    from snn_lats.snn import use_fused_neurons

    torch.manual_seed(0)
    plain = sequential_multistep(neuron.ParametricLIFNode)
    calibrate(plain, torch.rand(4, 2, 1, 8, 8))
    fused = copy.deepcopy(plain)
    report = use_fused_neurons(fused, backend="torch")
    assert len(report.replaced) == 3
    x = torch.rand(4, 1, 1, 8, 8)
    a, b = to_nir(plain, x), to_nir(fused, x)
    assert list(a.nodes) == list(b.nodes)
    for name in ("2", "6", "9"):
        for key in ("tau", "r", "v_threshold", "v_reset"):
            assert np.array_equal(getattr(node_of(a, name), key), getattr(node_of(b, name), key)), (name, key)


def test_the_step_graph_names_where_each_node_comes_from():
    torch.manual_seed(0)
    model = zoo("sew_resnet18", stem="imagenet", **RESNET)()
    step = build_step_graph(model, torch.rand(1, 1, 32, 32))
    assert step.readout == "mean over T" and tuple(step.example.shape) == (1, 1, 32, 32)
    assert step.sources["maxpool_or"] == "maxpool (max pooling as OR)"
    assert step.weights["layer2.0.downsample.0"] == "layer2.0.downsample.0"
    assert any("direct encoding" in note for note in step.notes)
    with pytest.raises(ValueError, match="running the model on example_input of shape"):
        build_step_graph(model, torch.rand(1, 3, 32, 32))  # the model takes one channel


# --- deployment figures -----------------------------------------------------------------------------------


def brute_force_fans(weight, in_shape, stride, padding, dilation, groups):
    """Unroll the convolution connection by connection."""
    cout, cin_g, kh, kw = weight.shape
    cin, h, w = in_shape
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    fan_in = np.zeros((cout, oh, ow), dtype=np.int64)
    fan_out = np.zeros((cin, h, w), dtype=np.int64)
    per_group_out = cout // groups
    for o in range(cout):
        g = o // per_group_out
        for y in range(oh):
            for x in range(ow):
                for c in range(cin_g):
                    for i in range(kh):
                        for j in range(kw):
                            yy, xx = y * stride - padding + i * dilation, x * stride - padding + j * dilation
                            if 0 <= yy < h and 0 <= xx < w and weight[o, c, i, j] != 0:
                                fan_in[o, y, x] += 1
                                fan_out[g * cin_g + c, yy, xx] += 1
    return fan_in, fan_out


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 1, 1, 1), (2, 0, 2, 2),
                                                            (3, 2, 1, 4)])
def test_conv_figures_match_the_unrolled_connections(stride, padding, dilation, groups):
    gen = np.random.default_rng(stride + 10 * padding + 100 * dilation + groups)
    weight = gen.normal(size=(8, 8 // groups, 3, 3)).astype(np.float32)
    weight *= gen.random(weight.shape) < 0.3
    conv = nir.Conv2d(input_shape=(9, 10), weight=weight, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, bias=np.zeros(8, dtype=np.float32))
    # nir 1.0.8 types a grouped convolution's input as C_in/groups channels: no type check
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([8, 9, 10])), "c": conv,
                                "output": nir.Output(conv.output_type["output"])},
                         edges=[("input", "c"), ("c", "output")], type_check=False)
    figures = deployment_report(graph).layers["c"]
    fan_in, fan_out = brute_force_fans(weight, (8, 9, 10), stride, padding, dilation, groups)
    assert figures.synapses == fan_in.sum() == fan_out.sum()
    assert (figures.fan_in_max, figures.fan_out_max) == (fan_in.max(), fan_out.max())
    assert figures.neurons == fan_in.size and figures.inputs == fan_out.size
    assert figures.fan_in_mean == pytest.approx(fan_in.mean()) and figures.fan_out_mean == pytest.approx(
        fan_out.mean())
    assert (figures.weights, figures.nonzero_weights) == (weight.size, np.count_nonzero(weight))


def test_linear_figures_limits_and_memory():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(20, 30), neuron.IFNode(), layer.Linear(30, 5), neuron.IFNode())
    prune(net)
    graph = to_nir(net, torch.rand(1, 20))
    mask = torch.from_numpy(node_of(graph, "0").weight != 0)
    report = deployment_report(graph, limits={"max_fan_in": int(mask.sum(1).max()) - 1, "max_neurons": 10})
    f = report.layers["_0"]
    assert (f.inputs, f.neurons, f.synapses) == (20, 30, int(mask.sum()))
    assert f.fan_in_max == mask.sum(1).max() and f.fan_out_max == mask.sum(0).max()
    assert f.bytes("csr", 8) == int(mask.sum()) * 2 + 31 * 2  # 8-bit values, 8-bit column indices
    assert report.neuron_layers == {"_1": ("IF", 30), "_3": ("IF", 5)}  # fx names module "1" node "_1"
    assert report.exceeding == [f"_0 (0): fan-in {f.fan_in_max} > {f.fan_in_max - 1}",
                                "_1 (1): neurons 30 > 10"]
    text = str(report)
    assert "limits" in text and "fan-in" in text and "csr8" in text
    assert deployment_report(graph, Limits(max_synapses=10 ** 6)).exceeding == []
    assert report.to_dict()["total"]["synapses"] == report.synapses
    with pytest.raises(ValueError, match=r"limits: unknown keys \['fan_in'\]"):
        deployment_report(graph, {"fan_in": 3})
    with pytest.raises(ValueError, match="max_fan_in must be an int >= 1 or None, got 0"):
        Limits(max_fan_in=0)
    with pytest.raises(TypeError, match="max_neurons must be an int >= 1 or None, got 2.5"):
        Limits(max_neurons=2.5)


def test_bad_arguments_are_named():
    net = _tiny_plain()
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        to_nir(net, [1, 2])
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        to_nir(net, torch.rand(1, 1, 6, 6), dt=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_nir(net, torch.rand(1, 1, 6, 6), "/nonexistent/folder/m.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain export warns about nothing
        to_nir(net.eval(), torch.rand(1, 1, 6, 6))
