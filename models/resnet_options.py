"""What the ResNet builders share (SEW ResNets and torchvision's ResNets): stage widths, the stem, their checks
and the initialisation of rebuilt modules."""
from __future__ import annotations

from torch import nn

STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)


def check_options(stem: str, width_multiplier: float, in_channels: int) -> None:
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or not 0 < width_multiplier <= 4:
        raise ValueError(f"width_multiplier must be a number in (0, 4], got {width_multiplier!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an int >= 1, got {in_channels!r}")


def stage_widths(width_multiplier: float) -> list[int]:
    return [max(1, round(w * width_multiplier)) for w in STAGE_WIDTHS]


def stem_geometry(stem: str) -> tuple[int, int, int]:
    """(kernel, stride, padding) of the first conv: 7×7/2 for 224×224 inputs, 3×3/1 (and no max-pool) for small."""
    return (7, 2, 3) if stem == "imagenet" else (3, 1, 1)


def init_rebuilt(model: nn.Module) -> None:
    """torchvision's (and SpikingJelly's) ResNet initialisation: Kaiming fan-out convs, BN γ = 1 and β = 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
