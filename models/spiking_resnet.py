"""Spiking ResNet-18/34/50 and ResNeXt-50 (32×4d) from SpikingJelly, for direct-encoded classification over T.

The network is SpikingJelly's own ``SpikingResNet`` (subclassed), so module names and ``state_dict`` keys are
SpikingJelly's. The options are those of ``models.sew_resnet`` (``stem``, ``in_channels``,
``width_multiplier``, ``neuron_type``...): ``stem="cifar"`` is a 3×3/1 conv without the max-pool,
``width_multiplier`` rebuilds the stages narrower with SpikingJelly's ``_make_layer``. ``forward`` takes ``[B,
C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` and returns the logits averaged over T, ``[B,
num_classes]``. SpikingJelly 0.0.0.0.14 has the same class, and the wrapper works there too.
"""
from __future__ import annotations

from spikingjelly.activation_based.model import spiking_resnet

from ._registry import register_model
from .resnet_options import check_options, stage_widths
from .snn_options import NEURON_KWARGS, check_T, multi_step_resnet, neuron_setup

FAMILY = "spikingjelly.activation_based.model.spiking_resnet"


# _make_layer reads groups and width_per_group from the model, not from its arguments
@multi_step_resnet(constructor_only=("num_classes", "groups", "width_per_group"))
class SpikingResNetClassifier(spiking_resnet.SpikingResNet):
    """SpikingJelly's SpikingResNet in multi-step mode with direct encoding and a time-averaged output."""


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


_INFO = dict(snn=True, classifier="fc", options=("T", "neuron_type", "stem", "width_multiplier"),
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
