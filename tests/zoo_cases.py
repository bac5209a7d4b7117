"""Tiny configurations of every SpikingJelly model family, built as a user would build them, for the zoo
matrix.

Each case builds the SpikingJelly model itself (its own classes and module names), in multi-step mode, small
enough that the whole matrix stays within the suite's budget on 2 CPU cores. ``input`` is what the model's own
forward takes: ``[T, B, C, H, W]`` for the models that expect a sequence, ``[B, C, H, W]`` for those that
repeat the image over T themselves.

This module is imported by tests/test_zoo.py and, with SpikingJelly 0.0.0.0.14 first on the path, by
tests/legacy_zoo_check.py: it checks features, not versions (``available``).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

T = 2
BATCH = 2


@dataclass(frozen=True)
class ZooCase:
    name: str
    family: str  # the module of spikingjelly.activation_based.model
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one batch
    classifier: str  # qualified name of the last linear layer

    @property
    def available(self) -> bool:
        try:
            importlib.import_module(f"spikingjelly.activation_based.model.{self.family}")
        except ImportError:
            return False
        return True

    def inputs(self, seed: int = 0) -> torch.Tensor:
        return 4 * torch.rand(*self.input_shape, generator=torch.Generator().manual_seed(seed))


def _zoo(family: str):
    return importlib.import_module(f"spikingjelly.activation_based.model.{family}")


def _multi_step(net: nn.Module) -> nn.Module:
    functional.set_step_mode(net, "m")
    return net


def _spiking_resnet() -> nn.Module:
    m = _zoo("spiking_resnet")
    return _multi_step(m.SpikingResNet(m.BasicBlock, [1, 1, 1, 1], num_classes=10,
                                       spiking_neuron=neuron.LIFNode))


def _spiking_resnext() -> nn.Module:
    # Grouped 3x3 convs (groups=4) in every bottleneck, as spiking_resnext50_32x4d has groups=32
    m = _zoo("spiking_resnet")
    return _multi_step(m.SpikingResNet(m.Bottleneck, [1, 1, 1, 1], num_classes=10, groups=4,
                                       width_per_group=4, spiking_neuron=neuron.IFNode))


def _sew_resnet() -> nn.Module:
    m = _zoo("sew_resnet")
    return _multi_step(m.SEWResNet(m.BasicBlock, [1, 1, 1, 1], num_classes=10, cnf="ADD",
                                   spiking_neuron=neuron.IFNode))


def _spiking_vgg() -> nn.Module:
    m = _zoo("spiking_vgg")
    net = m.SpikingVGG([16, "M", 32, "M"], batch_norm=True, num_classes=10, spiking_neuron=neuron.LIFNode)
    # SpikingVGG's classifier is fixed at 512·7·7 → 4096 → 4096 (120M weights): the same layer kinds, narrower
    net.classifier = nn.Sequential(layer.Linear(32 * 7 * 7, 64), neuron.LIFNode(), layer.Linear(64, 10))
    return _multi_step(net)


def _plif_net() -> nn.Module:
    return _multi_step(_zoo("parametric_lif_net").FashionMNISTNet(channels=8, spiking_neuron=neuron.LIFNode))


def _ms_resnet() -> nn.Module:
    return _zoo("ms_resnet").MSResNet(T=T, in_channels=3, num_classes=10, base_channels=8)


def _firing(net: nn.Module) -> nn.Module:
    """PyTorch's default init instead of the transformers' trunc_normal(std=0.02), and thresholds at a fifth:
    an untrained tiny transformer is otherwise almost silent, and every spike count would be trivially 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.reset_parameters()
        elif isinstance(m, neuron.BaseNode):
            m.v_threshold = m.v_threshold / 5
    return net


def _spikformer() -> nn.Module:
    return _firing(_zoo("spikformer").Spikformer(T=T, in_channels=3, img_size_h=16, img_size_w=16,
                                                 patch_size=4, num_classes=10, embed_dims=32, num_heads=2,
                                                 depths=1))


def _sdt() -> nn.Module:
    sdt = _zoo("spike_driven_transformer").SpikeDrivenTransformer
    return _firing(sdt(T=T, in_channels=3, num_classes=10, embed_dims=32, num_heads=2, depths=1))


def _qkformer() -> nn.Module:
    return _firing(_zoo("qkformer").QKFormer(T=T, in_channels=3, num_classes=10, embed_dims=48,
                                             num_heads=(1, 2, 2), depths=(1, 1, 1)))


def _maxformer() -> nn.Module:
    return _firing(_zoo("maxformer").MaxFormer(T=T, in_channels=3, num_classes=10, embed_dims=48,
                                               depths=(1, 1, 1)))


SEQ = (T, BATCH, 3, 16, 16)
IMG = (BATCH, 3, 32, 32)
CASES = [
    ZooCase("spiking_resnet", "spiking_resnet", _spiking_resnet, SEQ, "fc"),
    ZooCase("spiking_resnext", "spiking_resnet", _spiking_resnext, SEQ, "fc"),
    ZooCase("sew_resnet", "sew_resnet", _sew_resnet, SEQ, "fc"),
    ZooCase("spiking_vgg", "spiking_vgg", _spiking_vgg, (T, BATCH, 3, 32, 32), "classifier.2"),
    ZooCase("parametric_lif_net", "parametric_lif_net", _plif_net, (T, BATCH, 1, 28, 28), "conv_fc.13"),
    ZooCase("ms_resnet", "ms_resnet", _ms_resnet, IMG, "head"),
    ZooCase("spikformer", "spikformer", _spikformer, (BATCH, 3, 16, 16), "head"),
    ZooCase("spike_driven_transformer", "spike_driven_transformer", _sdt, IMG, "head"),
    ZooCase("qkformer", "qkformer", _qkformer, IMG, "head"),
    ZooCase("maxformer", "maxformer", _maxformer, IMG, "head"),
]
BY_NAME = {c.name: c for c in CASES}
