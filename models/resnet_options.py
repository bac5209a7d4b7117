"""The stem and width options, in one place: the stem choice (``imagenet`` | ``cifar``) and its geometry, the
width multiplier's check and rounding, and the rebuilding (and initialisation) of a ResNet's stem and stages.

Every ResNet builder (torchvision's, SpikingJelly's SEW, Spiking and MS ResNets) takes its stem and stage
widths from here; the VGGs and MobileNet-V1 take the width multiplier's check and rounding (``scaled_width``).
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)


def check_width_multiplier(width_multiplier: float) -> None:
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or not 0 < width_multiplier <= 4:
        raise ValueError(f"width_multiplier must be a number in (0, 4], got {width_multiplier!r}")


def check_options(stem: str, width_multiplier: float, in_channels: int) -> None:
    """The ResNets' options: the stem, the width multiplier and the input channels."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    check_width_multiplier(width_multiplier)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an int >= 1, got {in_channels!r}")


def scaled_width(channels: int, width_multiplier: float, minimum: int = 1,
                 rounding: Callable[[float], int] = round) -> int:
    """``channels`` scaled by the width multiplier: rounded to the nearest int (the ResNets and VGGs), or
    truncated, with at least 8 channels (``minimum=8, rounding=int``: MobileNet-V1, as the STR/LATS code)."""
    return max(minimum, rounding(channels * width_multiplier))


def stage_widths(width_multiplier: float) -> list[int]:
    return [scaled_width(w, width_multiplier) for w in STAGE_WIDTHS]


def stem_geometry(stem: str) -> tuple[int, int, int]:
    """(kernel, stride, padding) of the first conv: 7×7/2 for 224×224 inputs, 3×3/1 (and no max-pool) for
    small."""
    return (7, 2, 3) if stem == "imagenet" else (3, 1, 1)


def init_rebuilt(model: nn.Module) -> None:
    """torchvision's (and SpikingJelly's) ResNet initialisation: Kaiming fan-out convs, BN γ = 1 and β = 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def configure_resnet(model: nn.Module, block, layers, *, stem: str, in_channels: int, width_multiplier: float,
                     num_classes: int, make_stage: Callable[..., nn.Module],
                     conv: type[nn.Conv2d] = nn.Conv2d, linear: type[nn.Linear] = nn.Linear) -> None:
    """Give a built ResNet (torchvision's, or SpikingJelly's: the same attribute names) the stem and stage
    widths asked for. Only what differs from the defaults is rebuilt, so the default model stays the library's
    own; ``make_stage(block, width, blocks, stride)`` builds a stage with the library's ``_make_layer``."""
    widths = stage_widths(width_multiplier)
    replaced = stem == "cifar" or in_channels != 3 or widths[0] != 64
    if replaced:
        k, s, p = stem_geometry(stem)
        model.conv1 = conv(in_channels, widths[0], kernel_size=k, stride=s, padding=p, bias=False)
        model.bn1 = model._norm_layer(widths[0])
    if stem == "cifar":
        model.maxpool = nn.Identity()
    if widths != list(STAGE_WIDTHS):
        model.inplanes, model.dilation = widths[0], 1  # what _make_layer reads
        for i, (width, blocks) in enumerate(zip(widths, layers, strict=True)):
            setattr(model, f"layer{i + 1}", make_stage(block, width, blocks, 1 if i == 0 else 2))
        model.fc = linear(widths[3] * block.expansion, num_classes)
    if replaced:  # the libraries' own initialisation, for the modules replaced
        init_rebuilt(model)
