"""NeuroBench 2.3 interoperability: its own Benchmark on SpikingJelly models through SpikingJellyModel gives
the values of MetricsReport.to_neurobench(); what NeuroBench gets wrong without the wrapper; prepared models;
the snn_lats metric classes; models of the wrong kind."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, TensorDataset

import models
from snn_lats import MagnitudePruner
from snn_lats.metrics import measure

pytest.importorskip("neurobench", reason="neurobench is not installed (pip install 'snn_lats[neurobench]')")
from neurobench.benchmarks import Benchmark as NeuroBenchBenchmark  # noqa: E402
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount  # noqa: E402
from neurobench.metrics.workload import (  # noqa: E402
    ActivationSparsity,
    ClassificationAccuracy,
    MembraneUpdates,
    SynapticOperations,
)
from neurobench.models import TorchModel  # noqa: E402

from snn_lats.integrations.neurobench import (  # noqa: E402
    Benchmark,
    Energy,
    ExactSynapticOperations,
    FiringRate,
    SpikingJellyModel,
    WeightFootprint,
)

STATIC = [ConnectionSparsity, Footprint, ParameterCount]
WORKLOAD = [ActivationSparsity, SynapticOperations, MembraneUpdates, ClassificationAccuracy]
ARGMAX = [lambda logits: logits.argmax(-1)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread is faster


def _sew():
    net = models.create_model("sew_resnet18", T=2, num_classes=10, stem="cifar", in_channels=1,
                              width_multiplier=0.25)
    return net, torch.rand(6, 1, 16, 16) * 6


def _spikformer():
    net = models.create_model("spikformer", T=2, num_classes=10, in_channels=1, image_size=16, patch_size=4,
                              embed_dims=32, num_heads=2, mlp_ratio=2, depths=1)
    with torch.no_grad():  # its N(0, 0.02) initial weights never make a neuron fire: four times He's do
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight).mul_(4)
    return net, torch.rand(6, 1, 16, 16) * 4


def _pruned(net, keep=0.4):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.mul_((torch.rand_like(m.weight) < keep).float())
    return net


def _loader(x):
    return DataLoader(TensorDataset(x, torch.randint(0, 10, (len(x),))), batch_size=3)


def _ours(net, loader, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure(net, loader, neurobench=True, **kwargs)


def _assert_same(results: dict, expected: dict) -> None:
    for name in ("ConnectionSparsity", "Footprint", "ParameterCount"):
        assert results[name] == expected[name], name
    assert results["ActivationSparsity"] == pytest.approx(expected["ActivationSparsity"], rel=1e-12)
    assert results["MembraneUpdates"] == pytest.approx(expected["MembraneUpdates"], rel=1e-12)
    for key, value in expected["SynapticOperations"].items():
        assert results["SynapticOperations"][key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("build", [_sew, _spikformer], ids=["SEW ResNet-18", "Spikformer"])
def test_neurobench_benchmark_gives_to_neurobench(build):
    torch.manual_seed(0)
    net, x = build()
    _pruned(net)
    loader = _loader(x)
    model = SpikingJellyModel(net, energy="lemaire", weight_format="csr", weight_bits=8)
    results = Benchmark(model, loader, [], ARGMAX,
                        [STATIC + [WeightFootprint],
                         WORKLOAD + [ExactSynapticOperations, Energy, FiringRate]]).run(quiet=True)
    report = _ours(net, loader, energy="lemaire", weight_format="csr", weight_bits=8)
    expected = report.to_neurobench()
    nb = expected["neurobench"]
    assert 0 < nb["ActivationSparsity"] < 1 and nb["SynapticOperations"]["Effective_ACs"] > 0
    assert nb["SynapticOperations"]["Effective_MACs"] > 0  # the encoding layer (and SEW's integer sums)
    _assert_same(results, nb)
    assert results["ClassificationAccuracy"] == pytest.approx(report.total["accuracy"])
    # the snn_lats metrics: snn_lats's own figures, per sample
    ours = expected["snn_lats"]
    assert results["ExactSynapticOperations"]["SOPs"] == pytest.approx(ours["sops_per_sample"], rel=1e-12)
    assert results["ExactSynapticOperations"]["MACs"] == pytest.approx(ours["macs_per_sample"], rel=1e-12)
    assert results["Energy"]["total_pj"] == pytest.approx(ours["energy_per_sample_pj"], rel=1e-12)
    e = report.total["energy"]
    assert results["Energy"]["params_pj"] == pytest.approx(e["params_pj"] / report.total["samples"])
    assert results["FiringRate"] == pytest.approx(report.total["firing_rate"], rel=1e-12)
    assert results["WeightFootprint"]["chosen"] == report.total["footprint"]["bytes"]
    products = sum(r["sops"] for r in report.layers.values() if r["type"] in ("matmul", "mask", "sum"))
    if build is _spikformer:  # the spike matrix products NeuroBench's module hooks cannot see
        assert products > 0
        assert results["ExactSynapticOperations"]["SOPs"] * report.total["samples"] == pytest.approx(
            sum(r["sops"] for r in report.layers.values() if r["type"] != "neuron"))


def test_neurobench_alone_misreads_spikingjelly_and_is_refused():
    """What the wrapper fixes: NeuroBench's TorchModel finds no SpikingJelly neuron (activation sparsity 0,
    membrane updates 0) and never resets state; snn_lats's Benchmark refuses that combination."""
    torch.manual_seed(1)
    net, x = _sew()
    loader = _loader(x)
    plain = NeuroBenchBenchmark(TorchModel(net), loader, [], ARGMAX,
                                [[], [ActivationSparsity, MembraneUpdates]])
    results = plain.run(quiet=True)
    assert results["ActivationSparsity"] == 0.0 and results["MembraneUpdates"] == 0
    with pytest.raises(ValueError, match="SpikingJellyModel"):
        Benchmark(TorchModel(net), loader, [], ARGMAX, [[], [ActivationSparsity]])


def test_prepared_model_is_refused_or_squashed_never_miscounted():
    torch.manual_seed(2)
    net, x = _sew()
    MagnitudePruner(net, pruning_ratio=0.8, total_steps=1, initial_ratio=0.8)
    assert any(parametrize.is_parametrized(m) for m in net.modules())
    with pytest.raises(ValueError, match="squash=True"):
        SpikingJellyModel(net)
    before = copy.deepcopy(net.state_dict())
    model = SpikingJellyModel(net, squash=True)
    assert model.squashed and not any(parametrize.is_parametrized(m) for m in model.net.modules())
    loader = _loader(x)
    results = Benchmark(model, loader, [], ARGMAX, [STATIC, WORKLOAD]).run(quiet=True)
    nb = _ours(net, loader).to_neurobench()["neurobench"]  # measured on the prepared model itself
    assert nb["ConnectionSparsity"] == pytest.approx(0.8, abs=0.01)
    _assert_same(results, nb)
    after = net.state_dict()  # the user's model is left as it was
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_wrong_models_are_clear_errors_before_anything_runs():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="has no SpikingJelly neuron"):
        SpikingJellyModel(ann)
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        SpikingJellyModel("sew_resnet18")
    loader = _loader(torch.rand(3, 1, 4, 4))
    with pytest.raises(TypeError, match="needs a snn_lats.integrations.neurobench.SpikingJellyModel"):
        Benchmark(TorchModel(ann), loader, [], [], [[WeightFootprint], []])
    net, _ = _sew()
    with pytest.raises(TypeError, match="with count=False"):
        Benchmark(SpikingJellyModel(net, count=False), loader, [], [], [[], [Energy]])
    with pytest.raises(ValueError, match="weight_format must be one of"):
        SpikingJellyModel(net, energy="lemaire", weight_format="coo")
    with pytest.raises(ValueError, match="neurobench=True"):
        measure(net, [torch.rand(2, 1, 8, 8)]).to_neurobench()


def test_wrapper_without_counting_still_fixes_neurobench():
    torch.manual_seed(3)
    net, x = _sew()
    loader = _loader(x)
    model = SpikingJellyModel(net, count=False)
    results = Benchmark(model, loader, [], ARGMAX, [[], WORKLOAD]).run(quiet=True)
    _assert_same({**results, "ConnectionSparsity": 0, "Footprint": 0, "ParameterCount": 0},
                 {**_ours(net, loader).to_neurobench()["neurobench"], "ConnectionSparsity": 0, "Footprint": 0,
                  "ParameterCount": 0})

