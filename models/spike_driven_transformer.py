"""Spike-driven Transformer (Yao et al. 2023) from SpikingJelly 2.0.0's model zoo, for direct-encoded
classification.

The network is SpikingJelly's own ``SpikeDrivenTransformer`` (subclassed: SpikingJelly's module names and
``state_dict`` keys). SpikingJelly repeats a ``[B, C, H, W]`` input over T and averages over T before its
head, so the wrapper only checks the input; ``forward`` returns ``[B, num_classes]``. ``pooling_stat`` says
which of the patch stem's four stages max-pool (stride 2): SpikingJelly's "1111" takes 224×224 to 14×14
tokens, "0011" takes 28×28 to 7×7.

- ``spike_driven_transformer``: every architecture argument; the defaults are SpikingJelly's (384 dims, 8
  heads, 8 blocks, "1111").
- ``spike_driven_transformer_tiny``: a CPU-sized one for 28×28 input ("0011", 64 dims, 4 heads, 2 blocks).
"""
from __future__ import annotations

from ._registry import register_model
from .snn_options import checked_input, preset_kwargs, zoo_attr, zoo_class, zoo_module
from .spikformer import check_transformer

SpikeDrivenTransformer = zoo_class("spike_driven_transformer", "SpikeDrivenTransformer")

FAMILY = "spikingjelly.activation_based.model.spike_driven_transformer"


@checked_input
class SpikeDrivenTransformerClassifier(SpikeDrivenTransformer):
    """SpikingJelly's SpikeDrivenTransformer with its input checked (its output is already ``[B, classes]``).
    """


def _build(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dims: int = 384,
           num_heads: int = 8,
           depths: int = 8, mlp_ratio: float = 4.0,
           pooling_stat: str = "1111") -> SpikeDrivenTransformerClassifier:
    zoo_attr(zoo_module("spike_driven_transformer"), "SpikeDrivenTransformer")
    check_transformer(T, in_channels, num_classes, embed_dims, num_heads, mlp_ratio, depths, dims_multiple=8)
    if not isinstance(pooling_stat, str) or len(pooling_stat) != 4 or set(pooling_stat) - set("01"):
        raise ValueError("pooling_stat must be a string of four 0/1 (which stem stages pool), got "
                         f"{pooling_stat!r}")
    return SpikeDrivenTransformerClassifier(T=T, in_channels=in_channels, num_classes=num_classes,
                                            embed_dims=embed_dims, num_heads=num_heads, depths=depths,
                                            mlp_ratio=float(mlp_ratio), pooling_stat=pooling_stat)


ARCH = ("embed_dims", "num_heads", "depths", "mlp_ratio", "pooling_stat")


@register_model(snn=True, classifier="head", options=("T",), arch_kwargs=ARCH, family=FAMILY)
def spike_driven_transformer(**kwargs) -> SpikeDrivenTransformerClassifier:
    """SpikingJelly's ``SpikeDrivenTransformer`` with every architecture argument (its defaults)."""
    return _build(**kwargs)


@register_model(snn=True, classifier="head", options=("T",), family=FAMILY)
def spike_driven_transformer_tiny(**kwargs) -> SpikeDrivenTransformerClassifier:
    """A CPU-sized Spike-driven Transformer for 28×28 input: pooling "0011" (7×7 tokens), 64 dims, 4 heads,
    2 blocks."""
    fixed = dict(embed_dims=64, num_heads=4, depths=2, mlp_ratio=4.0, pooling_stat="0011")
    kwargs = preset_kwargs("spike_driven_transformer_tiny", "spike_driven_transformer", fixed, kwargs)
    return _build(**{"in_channels": 1, "num_classes": 10, **kwargs})
