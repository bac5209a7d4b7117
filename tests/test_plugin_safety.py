"""Issue #18, "any SpikingJelly model": Conv1d/Conv3d coverage, ignored_layers that match nothing, all-zero
layers, choosing D, stale model thresholds and ``pruner.attach(optimizer)``."""
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

import snn_lats
from tests.conftest import TinyCNN, train_steps


class Mixed(nn.Module):
    """One layer of every default type: Conv1d on a sequence, Conv3d on a clip, Conv2d, Linear."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Conv1d(2, 4, 3)  # L 10 -> 8
        self.clip = nn.Conv3d(1, 2, 3)  # 4x6x6 -> 2x4x4
        self.img = nn.Conv2d(1, 2, 3)  # 6x6 -> 4x4
        self.fc = nn.Linear(4 * 8 + 2 * 32 + 2 * 16, 5)

    def forward(self, seq, clip, img):
        parts = [self.seq(seq).flatten(1), self.clip(clip).flatten(1), self.img(img).flatten(1)]
        return self.fc(torch.cat(parts, 1))


def _inputs(n=3):
    return torch.randn(n, 2, 10), torch.randn(n, 1, 4, 6, 6), torch.randn(n, 1, 6, 6)


def _sj_conv_fashion_mnist(channels=4):
    """SpikingJelly's examples/conv_fashion_mnist.py CSNN: conv_fc.10 is an IF neuron, conv_fc.11 the classifier."""
    return nn.Sequential(
        layer.Conv2d(1, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Conv2d(channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(channels * 4 * 4, 10, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()),
    )


# 1. layer coverage -------------------------------------------------------------------------------------------

def test_every_pruner_covers_conv1d_and_conv3d_including_spikingjelly_layers():
    assert set(snn_lats.DEFAULT_LAYER_TYPES) == {nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear}
    sj = nn.Sequential(layer.Conv1d(2, 3, 3), layer.Conv3d(1, 2, 3))
    assert list(snn_lats.find_prunable_layers(sj)) == ["0", "1"]
    def soft(m):  # each layer's threshold at half its largest weight
        return snn_lats.SoftThresholdPruner(m, 0.5, "constant", compensate=False,
                                            layer_scale={n: float(x.weight.detach().abs().max()) for n, x in
                                                         snn_lats.find_prunable_layers(m).items()})

    for make in (soft,
                 lambda m: snn_lats.MagnitudePruner(m, 0.5, total_steps=1, initial_ratio=0.5),
                 lambda m: snn_lats.LearnedThresholdPruner(m, initial_threshold=1.0)):
        model = Mixed()
        pruner = make(model)
        assert list(pruner.layers) == ["seq", "clip", "img", "fc"]
        model.eval()  # LTP: the hard mask
        model(*_inputs()).sum()
        report = pruner.sparsity_report()
        assert all(0 < s.fraction < 1 for s in report.layers.values()), report


def test_gmp_per_layer_ratio_on_conv1d_and_conv3d_weights():
    model = Mixed()
    pruner = snn_lats.MagnitudePruner(model, 0.5, total_steps=1, initial_ratio=0.5)
    for name in ("seq", "clip"):
        weight = model.get_submodule(name).weight
        n = weight.numel()
        assert int((weight == 0).sum()) == round(0.5 * n)
        theta = model.get_submodule(name).parametrizations.weight.original
        kept = theta.abs()[weight != 0]  # the largest half survived
        assert kept.min() >= theta.abs()[weight == 0].max()
    pruner.squash()


def test_ltp_mac_normalisation_counts_conv1d_and_conv3d_output_positions():
    model = Mixed()
    pruner = snn_lats.LearnedThresholdPruner(model, normalize="macs")
    model(*_inputs())
    # a weight is used once per output position: L_out = 8, D·H·W = 2·4·4 = 32, H·W = 16, 1 for the linear
    assert pruner._macs_per_weight == {"seq": 8, "clip": 32, "img": 16, "fc": 1}


def test_pruner_sparsity_report_covers_exactly_its_own_layers():
    model = Mixed()
    pruner = snn_lats.SoftThresholdPruner(model, 0.2, "constant", compensate=False, layer_types=(nn.Conv1d,))
    assert list(pruner.sparsity_report().layers) == ["seq"]
    pruner.squash()
    assert list(pruner.sparsity_report().layers) == ["seq"]  # also once squashed


# 2. ignored_layers safety -----------------------------------------------------------------------------------

def test_ignoring_the_neuron_next_to_the_classifier_is_an_error_suggesting_it():
    # SpikingJelly's conv_fashion_mnist.py wraps the Sequential as self.conv_fc
    net = nn.Module()
    net.conv_fc = _sj_conv_fashion_mnist()
    with pytest.raises(ValueError, match=r"'conv_fc\.10' is a IFNode, neither a prunable layer .* did you mean "
                                         r"\[.*'conv_fc\.11'"):
        snn_lats.SoftThresholdPruner(net, 0.05, total_steps=10, ignored_layers=["conv_fc.10"])
    with pytest.raises(ValueError, match=r"module 'conv_fc\.10' \(IFNode\) is neither.*'conv_fc\.11'"):
        snn_lats.MagnitudePruner(net, 0.5, 10, ignored_layers=[net.conv_fc[10]])
    assert snn_lats.parametrizations.pruning_parametrization(net.conv_fc[11]) is None  # nothing was prepared
    pruner = snn_lats.SoftThresholdPruner(net, 0.05, total_steps=10, ignored_layers=["conv_fc.11"])
    assert list(pruner.layers) == ["conv_fc.0", "conv_fc.4", "conv_fc.9"]


def test_ignoring_a_container_still_ignores_everything_inside(tiny_cnn):
    model = nn.Sequential(TinyCNN(), nn.Sequential(nn.ReLU(), nn.Linear(10, 3)))
    pruner = snn_lats.SoftThresholdPruner(model, 0.05, total_steps=10, ignored_layers=["0.conv1", model[1]])
    assert list(pruner.layers) == ["0.conv2", "0.fc"]
    with pytest.raises(ValueError, match=r"'1\.0' is a ReLU, neither .*did you mean"):
        snn_lats.find_prunable_layers(model, ignored_layers=["1.0"])
    with pytest.raises(ValueError, match=r"'fcc' names no module of the model; did you mean \['fc'"):
        snn_lats.SoftThresholdPruner(tiny_cnn, 0.05, total_steps=10, ignored_layers=["fcc"])
    with pytest.raises(ValueError, match=r"'bn1' is a BatchNorm2d, neither a prunable layer"):
        snn_lats.SoftThresholdPruner(tiny_cnn, 0.05, total_steps=10, ignored_layers=["bn1"])
