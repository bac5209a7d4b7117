"""Pruning from pretrained dense weights: load_dense / export_dense."""
import pytest
import torch
import torchvision
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import sew_resnet

import snn_lats


def _sj_sew18():
    net = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode,
                                  surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(net, "m")
    return net


@pytest.mark.parametrize("build", [torchvision.models.resnet50, _sj_sew18], ids=["resnet50", "sew_resnet18"])
def test_load_then_export_returns_the_dense_tensors_exactly_at_threshold_zero(build):
    torch.manual_seed(0)
    dense = {k: v.clone() for k, v in build().state_dict().items()}  # a "pretrained" checkpoint, plain keys
    model = build()
    snn_lats.SoftThresholdPruner(model, final_threshold=0.05, total_steps=100, ignored_layers=["fc"])
    snn_lats.load_dense(model, dense)
    exported = snn_lats.export_dense(model)
    assert exported.keys() == dense.keys()
    for key, value in dense.items():
        assert torch.equal(exported[key], value), key
    build().load_state_dict(exported, strict=True)


def test_load_dense_keeps_the_function_when_the_threshold_is_already_positive():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    model = torchvision.models.resnet50().eval()
    snn_lats.SoftThresholdPruner(model, final_threshold=0.02, schedule="constant")
    theta = model.conv1.parametrizations.weight.original
    snn_lats.load_dense(model, reference.state_dict())
    assert model.conv1.parametrizations.weight.original is theta  # same Parameter: optimizers stay valid
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_export_dense_leaves_the_live_model_alone():
    model = torchvision.models.resnet50()
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.05, schedule="constant", compensate=False)
    exported = snn_lats.export_dense(model)
    exported["conv1.weight"].fill_(7.0)
    assert pruner.sparsity_report().sparsity > 0.1
    assert not torch.any(model.conv1.weight == 7.0)
    assert "conv1.parametrizations.weight.original" in model.state_dict()
    assert (exported["layer1.0.conv1.weight"] == 0).float().mean() > 0.1


def test_load_dense_bad_input():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="not prepared"):
        snn_lats.load_dense(model, torchvision.models.resnet18().state_dict())
    snn_lats.SoftThresholdPruner(model, final_threshold=0.05, total_steps=10)
    state = torchvision.models.resnet18().state_dict()
    state.pop("fc.bias")
    state["head.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"missing keys \(1\): fc.bias; unexpected keys \(1\): head.weight"):
        snn_lats.load_dense(model, state)
    with pytest.raises(ValueError, match="plain keys"):
        snn_lats.load_dense(model, model.state_dict())
