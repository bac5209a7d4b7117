"""ANN models: torchvision's ResNet-18 and ResNet-50."""
from __future__ import annotations

import torchvision

from . import register_model


@register_model
def resnet18(num_classes: int = 1000, **kwargs) -> torchvision.models.ResNet:
    """torchvision ResNet-18 (11.69M parameters at 1000 classes, 1.82 GMACs at 224x224); never downloads weights.

    The ANN counterpart of SEW ResNet-18, and the network of OCSPruner's released ImageNet log.
    """
    return torchvision.models.resnet18(weights=None, num_classes=num_classes, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, **kwargs) -> torchvision.models.ResNet:
    """torchvision ResNet-50 (25.56M parameters at 1000 classes); never downloads weights."""
    return torchvision.models.resnet50(weights=None, num_classes=num_classes, **kwargs)
