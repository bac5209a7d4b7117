"""Spikformer (Zhou et al. 2023) from SpikingJelly 2.0.0's model zoo, for direct-encoded classification.

The network is SpikingJelly's own ``Spikformer`` (subclassed), so module names and ``state_dict`` keys are
SpikingJelly's; its neurons are SpikingJelly's paper defaults (LIF, τ = 2, detach_reset, the attention's
threshold 0.5). SpikingJelly's ``Spikformer`` already repeats a ``[B, C, H, W]`` input over T; the wrapper
only checks the input and averages its ``[T, B, classes]`` logits over T, so ``forward`` returns ``[B,
num_classes]``.

Prunable layers: the patch stem's Conv2d, the attention's and MLP's 1×1 Conv1d, and the Linear ``head`` (the
classifier, which SNN runs leave dense by default).

- ``spikformer``: every architecture argument of SpikingJelly's ``Spikformer``; its defaults are
  SpikingJelly's (224×224, patch 16, 256 dims, 8 heads, 4 blocks).
- ``spikformer_cifar10``: SpikingJelly's ``spikformer_cifar10`` preset (32×32, patch 4, 384 dims, 12 heads, 4
  blocks, 9.3M parameters), with ``in_channels`` and ``image_size`` settable for other data.
- ``spikformer_tiny``: a CPU-sized one for 28×28 Fashion-MNIST (patch 4: 7×7 tokens, 64 dims, 4 heads, 2
  blocks, 0.16M parameters).
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .snn_options import check_int, check_T, check_time_input, image_hw, zoo_attr, zoo_module

try:
    from spikingjelly.activation_based.model.spikformer import Spikformer
except ImportError:  # an older SpikingJelly: the builders raise zoo_module's error, naming what is missing
    Spikformer = nn.Module

FAMILY = "spikingjelly.activation_based.model.spikformer"
PATCH_SIZES = (4, 16)
ARCH = ("image_size", "patch_size", "embed_dims", "num_heads", "mlp_ratio", "depths")


class SpikformerClassifier(Spikformer):
    """SpikingJelly's Spikformer with checked input and logits averaged over T."""

    def __init__(self, *, T: int, in_channels: int, image_size: tuple[int, int], patch_size: int,
                 num_classes: int, embed_dims: int, num_heads: int, mlp_ratio: float, depths: int):
        super().__init__(T=T, in_channels=in_channels, img_size_h=image_size[0], img_size_w=image_size[1],
                         patch_size=patch_size, num_classes=num_classes, embed_dims=embed_dims,
                         num_heads=num_heads,
                         mlp_ratio=mlp_ratio, depths=depths)
        self.in_channels, self.image_size = in_channels, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_time_input(x, self.T, self.in_channels, self.image_size)
        return super().forward(x).mean(0)  # SpikingJelly repeats [B, C, H, W] over T itself


def check_transformer(T, in_channels, num_classes, embed_dims, num_heads, mlp_ratio, depths,
                      dims_multiple: int = 1) -> None:
    check_T(T)
    check_int("in_channels", in_channels)
    check_int("num_classes", num_classes)
    check_int("num_heads", num_heads)
    check_int("depths", depths)
    check_int("embed_dims", embed_dims)
    if embed_dims % num_heads:
        raise ValueError(f"embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})")
    if embed_dims % dims_multiple:
        raise ValueError(f"embed_dims must be a multiple of {dims_multiple} (the patch stem's first stage "
                         f"has embed_dims // {dims_multiple} channels), got {embed_dims}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) \
            or int(embed_dims * mlp_ratio) < 1:
        raise ValueError("mlp_ratio must be a number with int(embed_dims * mlp_ratio) >= 1, got "
                         f"{mlp_ratio!r}")


def _build(*, T: int = 4, in_channels: int = 3, image_size=224, patch_size: int = 16, num_classes: int = 1000,
           embed_dims: int = 256, num_heads: int = 8, mlp_ratio: float = 4.0,
           depths: int = 4) -> SpikformerClassifier:
    zoo_attr(zoo_module("spikformer"), "Spikformer")
    hw = image_hw(image_size)
    check_transformer(T, in_channels, num_classes, embed_dims, num_heads, mlp_ratio, depths, dims_multiple=8)
    if patch_size not in PATCH_SIZES:
        raise ValueError(f"patch_size must be one of {PATCH_SIZES} (SpikingJelly's patch stem), got "
                         f"{patch_size!r}")
    return SpikformerClassifier(T=T, in_channels=in_channels, image_size=hw, patch_size=patch_size,
                                num_classes=num_classes, embed_dims=embed_dims, num_heads=num_heads,
                                mlp_ratio=float(mlp_ratio), depths=depths)


_INFO = dict(snn=True, classifier="head", options=("T", "image_size"), family=FAMILY)


def _preset(name: str, fixed: dict, kwargs: dict) -> dict:
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{name} fixes {clash}; use the model 'spikformer' to set them")
    return {**fixed, **kwargs}


@register_model(**_INFO, arch_kwargs=ARCH[1:])
def spikformer(**kwargs) -> SpikformerClassifier:
    """SpikingJelly's ``Spikformer`` with every architecture argument (its defaults)."""
    return _build(**kwargs)


@register_model(**_INFO)
def spikformer_cifar10(**kwargs) -> SpikformerClassifier:
    """SpikingJelly's ``spikformer_cifar10``: 32×32, patch 4, 384 dims, 12 heads, 4 blocks, 10 classes."""
    fixed = dict(patch_size=4, embed_dims=384, num_heads=12, mlp_ratio=4.0, depths=4)
    return _build(**{"image_size": 32, "num_classes": 10, **_preset("spikformer_cifar10", fixed, kwargs)})


@register_model(**_INFO)
def spikformer_tiny(**kwargs) -> SpikformerClassifier:
    """A CPU-sized Spikformer for 28×28 Fashion-MNIST: patch 4, 64 dims, 4 heads, 2 blocks, T=4."""
    fixed = dict(patch_size=4, embed_dims=64, num_heads=4, mlp_ratio=4.0, depths=2)
    return _build(**{"image_size": 28, "in_channels": 1, "num_classes": 10,
                     **_preset("spikformer_tiny", fixed, kwargs)})
