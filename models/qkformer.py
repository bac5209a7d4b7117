"""QKFormer (Zhou et al. 2024) from SpikingJelly 2.0.0's model zoo, for direct-encoded classification.

The network is SpikingJelly's own ``QKFormer`` (subclassed: SpikingJelly's module names and ``state_dict``
keys): a patch stem that downsamples 4×, then three stages of ``embed_dims // 4``, ``// 2`` and ``embed_dims``
channels (each later stage downsamples 2×: 28×28 input ends at 2×2 tokens, 32×32 at 2×2, 224×224 at 14×14)
with ``depths[i]`` blocks of ``num_heads[i]`` heads (Q-K attention in the first two, self-attention in the
third). SpikingJelly repeats a ``[B, C, H, W]`` input over T and averages over T before its head, so the
wrapper only checks the input; ``forward`` returns ``[B, num_classes]``.

- ``qkformer``: every architecture argument; the defaults are SpikingJelly's (384 dims, heads (3, 6, 6),
  depths (1, 2, 7)).
- ``qkformer_tiny``: a CPU-sized one for 28×28 input (64 dims, heads (1, 2, 2), depths (1, 1, 1)).
"""
from __future__ import annotations

from ._registry import register_model
from .snn_options import check_int, check_T, checked_input, preset_kwargs, zoo_attr, zoo_class, zoo_module

QKFormer = zoo_class("qkformer", "QKFormer")

FAMILY = "spikingjelly.activation_based.model.qkformer"
QKA_TYPES = ("token", "channel")


@checked_input
class QKFormerClassifier(QKFormer):
    """SpikingJelly's QKFormer with its input checked (its output is already ``[B, classes]``)."""


def _triple(name: str, value) -> tuple[int, int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name} must be three ints (one per stage), got {value!r}")
    for v in value:
        check_int(name, v)
    return tuple(int(v) for v in value)


def _build(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dims: int = 384,
           num_heads=(3, 6, 6), depths=(1, 2, 7), mlp_ratio: float = 4.0, qka_type: str = "token"):
    zoo_attr(zoo_module("qkformer"), "QKFormer")
    check_T(T)
    check_int("in_channels", in_channels)
    check_int("num_classes", num_classes)
    check_int("embed_dims", embed_dims, 4)
    num_heads, depths = _triple("num_heads", num_heads), _triple("depths", depths)
    if embed_dims % 4:
        raise ValueError("embed_dims must be a multiple of 4 (stages of embed_dims // 4 and // 2), got "
                         f"{embed_dims}")
    for dim, heads in zip((embed_dims // 4, embed_dims // 2, embed_dims), num_heads, strict=True):
        if dim % heads:
            raise ValueError(f"num_heads {num_heads}: a stage of {dim} channels cannot split into {heads} "
                             "heads")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) \
            or int(embed_dims // 4 * mlp_ratio) < 1:
        raise ValueError("mlp_ratio must be a number with int(embed_dims // 4 * mlp_ratio) >= 1, got "
                         f"{mlp_ratio!r}")
    if qka_type not in QKA_TYPES:
        raise ValueError(f"qka_type must be one of {QKA_TYPES}, got {qka_type!r}")
    return QKFormerClassifier(T=T, in_channels=in_channels, num_classes=num_classes, embed_dims=embed_dims,
                              num_heads=num_heads, depths=depths, mlp_ratio=float(mlp_ratio),
                              qka_type=qka_type)


ARCH = ("embed_dims", "num_heads", "depths", "mlp_ratio", "qka_type")


@register_model(snn=True, classifier="head", options=("T",), arch_kwargs=ARCH, family=FAMILY)
def qkformer(**kwargs) -> QKFormerClassifier:
    """SpikingJelly's ``QKFormer`` with every architecture argument (its defaults)."""
    return _build(**kwargs)


@register_model(snn=True, classifier="head", options=("T",), family=FAMILY)
def qkformer_tiny(**kwargs) -> QKFormerClassifier:
    """A CPU-sized QKFormer for 28×28 input: 64 dims (16, 32, 64 a stage), heads (1, 2, 2), one block a stage.
    """
    fixed = dict(embed_dims=64, num_heads=(1, 2, 2), depths=(1, 1, 1), mlp_ratio=4.0)
    kwargs = preset_kwargs("qkformer_tiny", "qkformer", fixed, kwargs)
    return _build(**{"in_channels": 1, "num_classes": 10, **kwargs})
