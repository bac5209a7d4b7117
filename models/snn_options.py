"""What the SpikingJelly wrappers share: argument checks, the neuron options, the direct-encoded input and the
classifier mixins."""
from __future__ import annotations

import importlib
from types import ModuleType

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from .resnet_options import configure_resnet

NEURONS = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}
SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}


def check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_T(T) -> None:  # noqa: N802
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"T must be an int > 0, got {T!r}")


def image_hw(image_size) -> tuple[int, int]:
    """``image_size`` as (H, W): an int or a pair of ints >= 1."""
    single = isinstance(image_size, int) and not isinstance(image_size, bool)
    pair = (image_size, image_size) if single else image_size
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"image_size must be an int >= 1 or a pair (H, W) of them, got {image_size!r}")
    return int(pair[0]), int(pair[1])


def time_sequence(x: torch.Tensor, T: int) -> torch.Tensor:  # noqa: N803
    """``[B, C, H, W]`` repeated over T (direct encoding), or ``[T, B, C, H, W]`` checked against T."""
    if x.dim() == 4:
        return x.unsqueeze(0).expand(T, *x.shape)
    if x.dim() == 5:
        if x.shape[0] != T:
            raise ValueError(f"input has T={x.shape[0]} time steps but the model was built with T={T}")
        return x
    raise ValueError(f"input must be [B, C, H, W] or [T, B, C, H, W], got shape {tuple(x.shape)}")


def check_time_input(x: torch.Tensor, T: int, in_channels: int,  # noqa: N803
                     hw: tuple[int, int] | None = None) -> None:
    """The checks of ``time_sequence`` (for models that repeat the input over T themselves), plus channels and
    (when given) the image size the model was built for."""
    time_sequence(x, T)
    if x.shape[-3] != in_channels:
        raise ValueError(f"input has {x.shape[-3]} channels but the model was built with "
                         f"in_channels={in_channels}")
    if hw is not None and tuple(x.shape[-2:]) != tuple(hw):
        raise ValueError(f"input is {tuple(x.shape[-2:])} (H, W) but the model was built with "
                         f"image_size={hw}")


def zoo_module(name: str) -> ModuleType:
    """``spikingjelly.activation_based.model.<name>``, or a clear error naming what the installed SpikingJelly
    lacks (a feature check, not a version check: 0.0.0.0.14 has spiking_resnet, spiking_vgg, sew_resnet and
    parametric_lif_net, and none of the transformers)."""
    full = f"spikingjelly.activation_based.model.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name is not None and not full.startswith(e.name):
            raise
        import spikingjelly

        where = getattr(spikingjelly, "__file__", "?")
        raise ImportError(f"the installed SpikingJelly ({where}) has no {full}: this model needs a "
                          "SpikingJelly "
                          "whose model zoo includes it (2.0.0 does)") from e


def zoo_attr(module: ModuleType, attr: str):
    if not hasattr(module, attr):
        raise ImportError(f"the installed SpikingJelly's {module.__name__} has no {attr!r} (2.0.0 has)")
    return getattr(module, attr)


def zoo_class(name: str, attr: str) -> type[nn.Module]:
    """``spikingjelly.activation_based.model.<name>.<attr>`` to subclass, or ``nn.Module`` where the installed
    SpikingJelly lacks it (so the module still imports; its builders raise ``zoo_module``'s error)."""
    try:
        return getattr(importlib.import_module(f"spikingjelly.activation_based.model.{name}"), attr)
    except (ImportError, AttributeError):
        return nn.Module


def neuron_setup(neuron_type: str = "if", surrogate_function: str = "atan",
                 surrogate_alpha: float | None = None,
                 detach_reset: bool = True, tau: float = 2.0, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0):
    """(neuron class, its keyword arguments) for SpikingJelly's ``spiking_neuron=`` builders (the ResNets,
    VGGs).
    """
    neurons, surrogates = NEURONS, SURROGATES
    if neuron_type not in neurons:
        raise ValueError(f"neuron_type must be one of {sorted(neurons)}, got {neuron_type!r}")
    if surrogate_function not in surrogates:
        raise ValueError(f"surrogate_function must be one of {sorted(surrogates)}, got "
                         f"{surrogate_function!r}")
    sg = surrogates[surrogate_function]
    kwargs = dict(surrogate_function=sg() if surrogate_alpha is None else sg(alpha=surrogate_alpha),
                  detach_reset=detach_reset, v_threshold=v_threshold, v_reset=v_reset)
    if neuron_type == "lif":
        kwargs["tau"] = tau
    elif neuron_type == "plif":
        kwargs["init_tau"] = tau
    return neurons[neuron_type], kwargs


NEURON_KWARGS = ("surrogate_function", "surrogate_alpha", "detach_reset", "tau", "v_threshold", "v_reset")


def preset_kwargs(name: str, full: str, fixed: dict, kwargs: dict) -> dict:
    """A preset's ``fixed`` architecture with the caller's ``kwargs``, which may not override it."""
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"{name} fixes {clash}; use '{full}' to set them")
    return {**fixed, **kwargs}


# Class decorators rather than mixins: the decorated class's base (what super() reaches) stays SpikingJelly's.
def checked_input(cls: type[nn.Module]) -> type[nn.Module]:
    """For zoo models that repeat a ``[B, C, H, W]`` input over T and average over T themselves: ``__init__``
    keeps ``in_channels`` and ``forward`` checks the input (the output is already ``[B, classes]``)."""

    def __init__(self, *, in_channels: int, **kwargs):
        super(cls, self).__init__(in_channels=in_channels, **kwargs)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_time_input(x, self.T, self.in_channels)
        return super(cls, self).forward(x)

    cls.__init__, cls.forward = __init__, forward
    return cls


def multi_step_resnet(cls: type[nn.Module] | None = None, *,
                      constructor_only: tuple[str, ...] = ("num_classes",)):
    """For SpikingJelly's ResNets: the stem and widths of ``configure_resnet``, multi-step mode, direct
    encoding and logits averaged over T. ``constructor_only``: the constructor's keyword arguments that
    ``_make_layer`` does not take; the rest (the neuron options) go to it."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        def __init__(self, block, layers, T: int, stem: str, in_channels: int,  # noqa: N803
                     width_multiplier: float, **kwargs):
            super(cls, self).__init__(block, layers, **kwargs)
            self.T = T
            stage_kwargs = {k: v for k, v in kwargs.items() if k not in constructor_only}

            def make_stage(block, width, blocks, stride):
                return self._make_layer(block, width, blocks, stride=stride, **stage_kwargs)

            configure_resnet(self, block, layers, stem=stem, in_channels=in_channels,
                             width_multiplier=width_multiplier, num_classes=kwargs.get("num_classes", 1000),
                             make_stage=make_stage, conv=layer.Conv2d, linear=layer.Linear)
            functional.set_step_mode(self, "m")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super(cls, self).forward(time_sequence(x, self.T)).mean(0)

        cls.__init__, cls.forward = __init__, forward
        return cls

    return decorate if cls is None else decorate(cls)
