"""ANN models: torchvision's ResNet-50."""
from __future__ import annotations

import torchvision

from . import register_model


@register_model
def resnet50(num_classes: int = 1000, **kwargs) -> torchvision.models.ResNet:
    """torchvision ResNet-50 (25.56M parameters at 1000 classes); never downloads weights."""
    return torchvision.models.resnet50(weights=None, num_classes=num_classes, **kwargs)
