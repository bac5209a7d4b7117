"""SEW ResNet-18/34/50 from SpikingJelly, configured for direct-encoded classification over T time steps.

The network is SpikingJelly's own ``SEWResNet`` (subclassed, not re-implemented), so module names and
``state_dict`` keys are those of SpikingJelly's model zoo. Differences are configuration only:

- ``stem="imagenet"`` keeps the 7×7/2 conv and the max-pool (224×224 inputs); ``stem="cifar"`` uses a 3×3/1
  conv and no max-pool, for small inputs (32×32 CIFAR, 28×28 Fashion-MNIST, 8×8 digits).
- ``width_multiplier`` scales the stage widths (64, 128, 256, 512), rebuilding the stages with SpikingJelly's
  ``_make_layer`` and blocks; 0.25 gives a CPU-sized model for small data.
- ``forward`` takes ``[B, C, H, W]`` (repeated over T: direct encoding) or ``[T, B, C, H, W]`` and returns the
  logits averaged over T, ``[B, num_classes]``. Call ``spikingjelly.activation_based.functional.reset_net``
  after every batch, as in any SpikingJelly training loop.
"""
from __future__ import annotations

from spikingjelly.activation_based.model import sew_resnet
from torch import nn

from ._registry import register_model
from .resnet_options import STEMS, check_options
from .snn_options import NEURON_KWARGS, NEURONS, SURROGATES, check_T, multi_step_resnet, neuron_setup

CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")
__all__ = ["CONNECT_FUNCTIONS", "NEURONS", "STEMS", "SURROGATES", "SEWResNetClassifier"]


@multi_step_resnet
class SEWResNetClassifier(sew_resnet.SEWResNet):
    """SpikingJelly's SEWResNet in multi-step mode with direct encoding and a time-averaged output."""


def _build(
    block: type[nn.Module],
    layers: list[int],
    *,
    T: int = 4,
    cnf: str = "ADD",
    neuron_type: str = "if",
    surrogate_function: str = "atan",
    surrogate_alpha: float | None = None,
    detach_reset: bool = True,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    num_classes: int = 1000,
    stem: str = "imagenet",
    in_channels: int = 3,
    width_multiplier: float = 1.0,
) -> SEWResNetClassifier:
    check_T(T)
    if cnf not in CONNECT_FUNCTIONS:
        raise ValueError(f"cnf must be one of {CONNECT_FUNCTIONS}, got {cnf!r}")
    check_options(stem, width_multiplier, in_channels)
    spiking_neuron, neuron_kwargs = neuron_setup(neuron_type, surrogate_function, surrogate_alpha,
                                                 detach_reset, tau, v_threshold, v_reset)
    return SEWResNetClassifier(
        block, layers, T=T, stem=stem, in_channels=in_channels, width_multiplier=width_multiplier,
        num_classes=num_classes, cnf=cnf,
        spiking_neuron=spiking_neuron, **neuron_kwargs,
    )


_INFO = dict(snn=True, classifier="fc", options=("T", "neuron_type", "cnf", "stem", "width_multiplier"),
             arch_kwargs=NEURON_KWARGS,
             family="spikingjelly.activation_based.model.sew_resnet")


@register_model(**_INFO)
def sew_resnet18(**kwargs) -> SEWResNetClassifier:
    """SEW ResNet-18 (11.69M parameters with the ImageNet stem and 1000 classes)."""
    return _build(sew_resnet.BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(**_INFO)
def sew_resnet34(**kwargs) -> SEWResNetClassifier:
    return _build(sew_resnet.BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(**_INFO)
def sew_resnet50(**kwargs) -> SEWResNetClassifier:
    return _build(sew_resnet.Bottleneck, [3, 4, 6, 3], **kwargs)
