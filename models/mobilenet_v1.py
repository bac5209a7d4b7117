"""MobileNet-V1 (Howard et al. 2017) with a width multiplier, in the channel layout LATS/STR prune.

As in the STR/LATS reference code, the classifier is a 1×1 convolution (named ``fc``) after global average
pooling, so it is pruned along with every other convolution, depthwise ones included.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .resnet_options import check_width_multiplier, scaled_width

# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1)]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, width_multiplier: float = 1.0, in_channels: int = 3):
        super().__init__()
        check_width_multiplier(width_multiplier)

        def width(c: int) -> int:
            return scaled_width(c, width_multiplier, minimum=8, rounding=int)

        layers = [_conv_bn(in_channels, width(32), 3, 2)]
        c_in = width(32)
        for c_out, stride in BLOCKS:
            layers += [_conv_bn(c_in, c_in, 3, stride, groups=c_in), _conv_bn(c_in, width(c_out), 1, 1)]
            c_in = width(c_out)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(c_in, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.avgpool(self.features(x))).flatten(1)


@register_model(classifier="fc", options=("width_multiplier",), family="models.mobilenet_v1")
def mobilenet_v1(num_classes: int = 1000, width_multiplier: float = 1.0, in_channels: int = 3) -> MobileNetV1:
    """MobileNet-V1 (4.23M parameters at width 1.0 and 1000 classes)."""
    return MobileNetV1(num_classes, width_multiplier, in_channels)
