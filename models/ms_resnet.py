"""MS-ResNet-18/34 (membrane-shortcut ResNets, Hu et al.) from SpikingJelly 2.0.0's model zoo.

The network is SpikingJelly's own ``MSResNet`` (subclassed: SpikingJelly's module names and ``state_dict``
keys), with its neurons (LIF τ = 4/3, threshold 0.5, rectangular surrogate). SpikingJelly repeats a ``[B, C,
H, W]`` input over T and averages the logits over T, so the wrapper only checks the input; ``forward`` returns
``[B, num_classes]``. Options as the other ResNets: ``stem="imagenet"`` (SpikingJelly's 7×7/2 conv) or
``"cifar"`` (3×3/1, for 28×28 and 32×32 input), ``width_multiplier`` scales the stage widths 64, 128, 256,
512.
"""
from __future__ import annotations

from ._registry import register_model
from .resnet_options import check_options, stage_widths, stem_geometry
from .snn_options import check_int, check_T, checked_input, zoo_attr, zoo_class, zoo_module

MSResNet = zoo_class("ms_resnet", "MSResNet")

FAMILY = "spikingjelly.activation_based.model.ms_resnet"


@checked_input
class MSResNetClassifier(MSResNet):
    """SpikingJelly's MSResNet with its input checked (its output is already ``[B, classes]``)."""


def _build(layers: tuple[int, ...], *, T: int = 6, in_channels: int = 3, num_classes: int = 1000,
           stem: str = "imagenet", width_multiplier: float = 1.0) -> MSResNetClassifier:
    zoo_attr(zoo_module("ms_resnet"), "MSResNet")
    check_T(T)
    check_int("num_classes", num_classes)
    check_options(stem, width_multiplier, in_channels)
    k, s, _ = stem_geometry(stem)
    widths = stage_widths(width_multiplier)
    return MSResNetClassifier(T=T, in_channels=in_channels, num_classes=num_classes, layers=layers,
                              base_channels=widths[0], stage_channels=tuple(widths), stem_kernel_size=k,
                              stem_stride=s)


_INFO = dict(snn=True, classifier="head", options=("T", "stem", "width_multiplier"), family=FAMILY)


@register_model(**_INFO)
def ms_resnet18(**kwargs) -> MSResNetClassifier:
    """SpikingJelly's ``ms_resnet18`` (T=6 by default, as SpikingJelly's)."""
    return _build((2, 2, 2, 2), **kwargs)


@register_model(**_INFO)
def ms_resnet34(**kwargs) -> MSResNetClassifier:
    """SpikingJelly's ``ms_resnet34``."""
    return _build((3, 4, 6, 3), **kwargs)
