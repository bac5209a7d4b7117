"""Spiking VGG-11/13/16/19 (with and without BatchNorm) from SpikingJelly, for direct-encoded classification.

The network is SpikingJelly's own ``SpikingVGG`` (subclassed: SpikingJelly's module names and ``state_dict``
keys), in multi-step mode; ``forward`` takes ``[B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` and
returns the logits averaged over T, ``[B, num_classes]``. Options for small inputs:

- ``in_channels`` replaces the first conv; ``width_multiplier`` scales every conv width (SpikingJelly's cfg);
- ``ceil_mode=True`` lets 28×28 input through the five 2×2 max-pools (28, 14, 7, 4, 2, 1; with floor, 7 -> 3
  -> 1 -> 0 fails);
- ``pool_size`` (SpikingJelly: 7) and ``classifier_width`` (SpikingJelly: 4096) size the three-layer
  classifier ``classifier.0``, ``.3``, ``.6`` (the last is the classifier SNN runs leave dense).

SpikingJelly 0.0.0.0.14 has the same class, and the wrapper works there too.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model import spiking_vgg
from torch import nn

from ._registry import register_model
from .resnet_options import check_width_multiplier, scaled_width
from .snn_options import NEURON_KWARGS, check_int, check_T, neuron_setup, time_sequence

FAMILY = "spikingjelly.activation_based.model.spiking_vgg"
CFGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


class SpikingVGGClassifier(spiking_vgg.SpikingVGG):
    """SpikingJelly's SpikingVGG in multi-step mode with direct encoding and a time-averaged output."""

    def __init__(self, cfg: list, *, T: int, in_channels: int, ceil_mode: bool, pool_size: int,
                 classifier_width: int, num_classes: int, batch_norm: bool, spiking_neuron, **neuron_kwargs):
        super().__init__(cfg, batch_norm=batch_norm, num_classes=num_classes, spiking_neuron=spiking_neuron,
                         **neuron_kwargs)
        self.T = T
        if in_channels != 3:
            first = self.features[0]
            self.features[0] = layer.Conv2d(in_channels, first.out_channels, kernel_size=3, padding=1)
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = ceil_mode
        last = [v for v in cfg if v != "M"][-1]
        if (pool_size, classifier_width, last) != (7, 4096, 512):
            self.avgpool = layer.AdaptiveAvgPool2d((pool_size, pool_size))
            self.classifier[0] = layer.Linear(last * pool_size * pool_size, classifier_width)
            self.classifier[3] = layer.Linear(classifier_width, classifier_width)
            self.classifier[6] = layer.Linear(classifier_width, num_classes)
        if in_channels != 3 or (pool_size, classifier_width, last) != (7, 4096, 512):
            self._initialize_weights()  # SpikingJelly's initialisation, over the replaced modules too
        functional.set_step_mode(self, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(time_sequence(x, self.T)).mean(0)


def _build(cfg_key: str, batch_norm: bool, *, T: int = 4, neuron_type: str = "if", num_classes: int = 1000,
           in_channels: int = 3, width_multiplier: float = 1.0, ceil_mode: bool = False, pool_size: int = 7,
           classifier_width: int = 4096, **neuron_options) -> SpikingVGGClassifier:
    check_T(T)
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    check_int("pool_size", pool_size)
    check_int("classifier_width", classifier_width)
    check_width_multiplier(width_multiplier)
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    cfg = [v if v == "M" else scaled_width(v, width_multiplier) for v in spiking_vgg.cfgs[cfg_key]]
    spiking_neuron, neuron_kwargs = neuron_setup(neuron_type, **neuron_options)
    return SpikingVGGClassifier(cfg, T=T, in_channels=in_channels, ceil_mode=ceil_mode, pool_size=pool_size,
                                classifier_width=classifier_width, num_classes=num_classes,
                                batch_norm=batch_norm,
                                spiking_neuron=spiking_neuron, **neuron_kwargs)


_INFO = dict(snn=True, classifier="classifier.6", options=("T", "neuron_type", "width_multiplier"),
             arch_kwargs=("ceil_mode", "pool_size", "classifier_width", *NEURON_KWARGS), family=FAMILY)


def _register(name: str, cfg_key: str, batch_norm: bool) -> None:
    def builder(**kwargs) -> SpikingVGGClassifier:
        return _build(cfg_key, batch_norm, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"SpikingJelly's ``{name}`` (cfg {cfg_key}{', BatchNorm' if batch_norm else ''})."
    globals()[name] = register_model(**_INFO)(builder)


for _arch, _key in CFGS.items():
    _register(f"spiking_{_arch}", _key, False)
    _register(f"spiking_{_arch}_bn", _key, True)
