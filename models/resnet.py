"""ANN models: torchvision's ResNet-18 and ResNet-50, with the SEW ResNets' stem and width options.

With the defaults (``stem="imagenet"``, ``in_channels=3``, ``width_multiplier=1``) the model is torchvision's,
unchanged. Otherwise the stem and the stages are rebuilt with torchvision's own ``_make_layer`` and blocks
(``resnet_options.configure_resnet``, as ``models.sew_resnet`` does with SpikingJelly's), so
``resnet18(stem=..., width_multiplier=w)`` is the ANN counterpart of ``sew_resnet18`` with the same options:
the same layers and widths, ReLU instead of spiking neurons, and torchvision's add-then-ReLU residual instead
of SEW's spike-wise ADD.
"""
from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ._registry import register_model
from .resnet_options import check_options, configure_resnet

_INFO = dict(classifier="fc", options=("stem", "width_multiplier"), family="torchvision.models.resnet")


def _build(block: type[nn.Module], layers: list[int], num_classes: int = 1000, stem: str = "imagenet",
           in_channels: int = 3, width_multiplier: float = 1.0, **kwargs) -> torchvision.models.ResNet:
    check_options(stem, width_multiplier, in_channels)
    model = torchvision.models.ResNet(block, layers, num_classes=num_classes, **kwargs)
    configure_resnet(model, block, layers, stem=stem, in_channels=in_channels,
                     width_multiplier=width_multiplier, num_classes=num_classes, make_stage=model._make_layer)
    return model


@register_model(**_INFO)
def resnet18(num_classes: int = 1000, **kwargs) -> torchvision.models.ResNet:
    """torchvision ResNet-18 (11.69M parameters at 1000 classes, 1.82 GMACs at 224x224); never downloads
    weights.

    The ANN counterpart of SEW ResNet-18, and the network of OCSPruner's released ImageNet log. Takes
    ``stem``, ``in_channels`` and ``width_multiplier`` like ``sew_resnet18``.
    """
    return _build(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


@register_model(**_INFO)
def resnet50(num_classes: int = 1000, **kwargs) -> torchvision.models.ResNet:
    """torchvision ResNet-50 (25.56M parameters at 1000 classes); never downloads weights. Options as
    resnet18."""
    return _build(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)
