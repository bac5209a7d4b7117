"""snn_lats.snn.convert_sync_batchnorm keeps SpikingJelly's step modes (torch's conversion does not)."""
import copy

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

import models
from snn_lats.snn import SyncBatchNorm, convert_sync_batchnorm


def sew():
    model = models.create_model("sew_resnet18", T=2, stem="cifar", width_multiplier=0.125, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a wrong axis shows
            m.running_mean = torch.rand(m.num_features, generator=gen) - 0.5
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model


def forward(model, x):
    out = model(x)
    functional.reset_net(model)
    return out


def test_torchs_conversion_breaks_multi_step_batch_norm():
    """The bug this module exists for: a plain SyncBatchNorm reads [T, B, C, H, W] with B as the channels."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(sew()).eval()
    with pytest.raises(RuntimeError, match="running_mean should contain 2 elements not 8"):
        forward(model, torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("training", [False, True])
def test_converted_sew_resnet_computes_the_same_function(training):
    model = sew().train(training)
    converted = convert_sync_batchnorm(copy.deepcopy(model))
    bns = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 20 and all(isinstance(m, SyncBatchNorm) and m.step_mode == "m" for m in bns)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(forward(converted, x), forward(model, x), rtol=0, atol=0)
    if training:  # one process, no process group: SyncBatchNorm updates the running stats as BatchNorm does
        for a, b in zip(model.state_dict().values(), converted.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    functional.set_step_mode(converted, "s")
    assert all(m.step_mode == "s" for m in bns)


def test_parameters_are_shared_and_plain_batch_norm_gets_torchs_conversion():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    weight = model[1].weight
    converted = convert_sync_batchnorm(model)
    assert type(converted[1]) is nn.SyncBatchNorm and converted[1].weight is weight
    spiking = sew()
    gamma = spiking.bn1.weight
    assert convert_sync_batchnorm(spiking).bn1.weight is gamma  # an optimizer built before stays valid
