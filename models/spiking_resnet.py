"""Spiking ResNet-18/34/50 and ResNeXt-50 (32×4d) from SpikingJelly, for direct-encoded classification over T.

The network is SpikingJelly's own ``SpikingResNet`` (subclassed), so module names and ``state_dict`` keys are
SpikingJelly's. The options are those of ``models.sew_resnet`` (``stem``, ``in_channels``,
``width_multiplier``, ``neuron_type``...): ``stem="cifar"`` is a 3×3/1 conv without the max-pool,
``width_multiplier`` rebuilds the stages narrower with SpikingJelly's ``_make_layer``. ``forward`` takes ``[B,
C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` and returns the logits averaged over T, ``[B,
num_classes]``. SpikingJelly 0.0.0.0.14 has the same class, and the wrapper works there too.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model import spiking_resnet
from torch import nn

from .registry import register_model
from .resnet_options import check_options, init_rebuilt, stage_widths, stem_geometry
from .snn_options import NEURON_KWARGS, check_T, neuron_setup, time_sequence

FAMILY = "spikingjelly.activation_based.model.spiking_resnet"


class SpikingResNetClassifier(spiking_resnet.SpikingResNet):
    """SpikingJelly's SpikingResNet in multi-step mode with direct encoding and a time-averaged output."""

    def __init__(self, block, layers, T: int, stem: str, in_channels: int, width_multiplier: float, **kwargs):
        super().__init__(block, layers, **kwargs)
        self.T = T
        widths = stage_widths(width_multiplier)
        k, s, p = stem_geometry(stem)
        replaced = stem == "cifar" or in_channels != 3 or widths[0] != 64
        if replaced:
            self.conv1 = layer.Conv2d(in_channels, widths[0], kernel_size=k, stride=s, padding=p, bias=False)
            self.bn1 = self._norm_layer(widths[0])
        if stem == "cifar":
            self.maxpool = nn.Identity()
        if widths != [64, 128, 256, 512]:
            # Rebuild the stages narrower with SpikingJelly's own _make_layer and blocks.
            neuron_kwargs = {k: v for k, v in kwargs.items()
                             if k not in ("num_classes", "spiking_neuron", "groups", "width_per_group")}
            self.inplanes, self.dilation = widths[0], 1
            for i, (width, blocks) in enumerate(zip(widths, layers)):
                stage = self._make_layer(block, width, blocks, stride=1 if i == 0 else 2,
                                         spiking_neuron=kwargs["spiking_neuron"], **neuron_kwargs)
                setattr(self, f"layer{i + 1}", stage)
            self.fc = layer.Linear(widths[3] * block.expansion, kwargs.get("num_classes", 1000))
        if replaced:  # SpikingJelly's initialisation for replaced modules
            init_rebuilt(self)
        functional.set_step_mode(self, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(time_sequence(x, self.T)).mean(0)


def _build(block, layers, *, T: int = 4, neuron_type: str = "if", num_classes: int = 1000,
           stem: str = "imagenet",
           in_channels: int = 3, width_multiplier: float = 1.0, groups: int = 1, width_per_group: int = 64,
           **neuron_options) -> SpikingResNetClassifier:
    check_T(T)
    check_options(stem, width_multiplier, in_channels)
    if groups > 1 and int(stage_widths(width_multiplier)[0] * width_per_group / 64) < 1:
        raise ValueError(f"width_multiplier {width_multiplier} leaves the first stage's grouped convolution "
                         "no "
                         f"channel per group (ResNeXt {groups}x{width_per_group}d); use at least "
                         f"{64 / width_per_group / 64:g}")
    spiking_neuron, neuron_kwargs = neuron_setup(neuron_type, **neuron_options)
    return SpikingResNetClassifier(block, layers, T=T, stem=stem, in_channels=in_channels,
                                   width_multiplier=width_multiplier, num_classes=num_classes, groups=groups,
                                   width_per_group=width_per_group, spiking_neuron=spiking_neuron,
                                   **neuron_kwargs)


_INFO = dict(snn=True, classifier="fc", options=("T", "neuron", "stem", "width_multiplier"),
             arch_kwargs=NEURON_KWARGS, family=FAMILY)


@register_model(**_INFO)
def spiking_resnet18(**kwargs) -> SpikingResNetClassifier:
    """Spiking ResNet-18 (11.69M parameters with the ImageNet stem and 1000 classes)."""
    return _build(spiking_resnet.BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(**_INFO)
def spiking_resnet34(**kwargs) -> SpikingResNetClassifier:
    return _build(spiking_resnet.BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(**_INFO)
def spiking_resnet50(**kwargs) -> SpikingResNetClassifier:
    return _build(spiking_resnet.Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(**_INFO)
def spiking_resnext50_32x4d(**kwargs) -> SpikingResNetClassifier:
    """Spiking ResNeXt-50 32×4d (25.03M parameters at 1000 classes); width_multiplier >= 0.25 keeps 1 channel
    a group."""
    return _build(spiking_resnet.Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)
