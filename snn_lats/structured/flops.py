"""Multiply-accumulate counts of conv and linear layers, from shapes, for ANNs and SpikingJelly SNNs alike.

Convention: ``count_macs(model, example_inputs)`` is the number of multiply-accumulates that the conv and
linear layers perform in **one forward pass of ``example_inputs``**: every sample of the batch and, for a
multi-step SNN, every time step (a SEW ResNet at T=4 on direct-encoded input reports 4 × the per-step count).
Pass one sample to get per-sample numbers. BN, pooling, additions and neuron updates are not counted, which is
what ``torch.utils.flop_counter.FlopCounterMode`` counts (divided by 2) on a ResNet and what papers call
"FLOPs".

The count is dense (zeros in weights are not skipped; for that see ``snn_lats.metrics``). It comes from
forward hooks on every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` (SpikingJelly's ``layer.Conv2d``/``layer.Linear``
subclass these, which torch-pruning's ``count_ops_and_params`` does not recognise and counts as 0):
``MACs = output elements × in_channels / groups × kernel elements``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .. import spiking
from ..training_flags import preserved_training_flags

MAC_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

ForwardFn = Callable[[nn.Module, object], object]


def default_forward(model: nn.Module, example_inputs: object) -> object:
    """``model(*x)`` for a tuple/list, ``model(**x)`` for a dict, ``model(x)`` otherwise."""
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    return model(example_inputs)


@dataclass
class LayerGeometry:
    """What one conv/linear layer costs: ``positions × out_channels × in_channels / groups × kernel``."""

    name: str
    kind: str  # "conv" or "linear"
    out_channels: int
    in_channels: int
    groups: int
    kernel: int  # kernel elements (1 for linear)
    positions: int  # output elements per output channel, summed over every call in the forward

    @property
    def depthwise(self) -> bool:
        return (self.kind == "conv" and self.groups > 1
                and self.groups == self.in_channels == self.out_channels)

    @property
    def macs(self) -> int:
        return self.positions * self.out_channels * (self.in_channels // self.groups) * self.kernel


def _channels(module: nn.Module) -> tuple[str, int, int, int, int]:
    if isinstance(module, nn.Linear):
        return "linear", module.out_features, module.in_features, 1, 1
    return "conv", module.out_channels, module.in_channels, module.groups, math.prod(module.kernel_size)


def reset_spiking_state(model: nn.Module) -> None:
    """Reset SpikingJelly state of either namespace (:func:`snn_lats.spiking.reset_state`); a no-op for
    models without any."""
    if spiking.has_state(model):
        spiking.reset_state(model)


@contextmanager
def evaluation_pass(model: nn.Module):
    """Eval mode (BN running stats untouched) and reset neuron state, restoring every module's flag after."""
    with preserved_training_flags(model):
        model.eval()
        reset_spiking_state(model)
        try:
            yield
        finally:
            reset_spiking_state(model)


class LayerTrace:
    """Forward hooks that name the layer a failing forward was in (innermost module entered, not left)."""

    def __init__(self, model: nn.Module):
        self.stack: list[str] = []
        self._handles = []
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name):
        def hook(module, args):
            self.stack.append(name)
        return hook

    def _leave(self, name):
        # not called when the module raises, so the failing layer stays on top
        def hook(module, args, output):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
        return hook

    def innermost(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def describe_layer(model: nn.Module, name: str | None) -> str:
    if name is None:
        return "outside any submodule"
    if name == "":
        return f"the model's own forward ({type(model).__name__})"
    return f"layer {name!r} ({type(model.get_submodule(name)).__name__})"


def layer_geometry(
    model: nn.Module, example_inputs: object, forward_fn: ForwardFn | None = None
) -> tuple[dict[str, LayerGeometry], list[str], object]:
    """Per-layer geometry from one no-grad forward in eval mode, the layers in call order, and the output.

    The forward runs as the model is configured (multi-step SNNs in multi-step mode). A forward that raises is
    re-raised as a ``RuntimeError`` naming the layer it failed in.
    """
    forward_fn = forward_fn or default_forward
    named = {m: n for n, m in model.named_modules()}
    geometry: dict[str, LayerGeometry] = {}
    order: list[str] = []

    def hook(module, args, output):
        name = named[module]
        out_channels = _channels(module)[1]
        if not isinstance(output, torch.Tensor) or output.numel() % out_channels:
            raise RuntimeError(f"layer {name!r}: cannot read its output shape")
        positions = output.numel() // out_channels
        if name in geometry:
            geometry[name].positions += positions
        else:
            kind, c_out, c_in, groups, kernel = _channels(module)
            geometry[name] = LayerGeometry(name, kind, c_out, c_in, groups, kernel, positions)
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, MAC_LAYER_TYPES)]
    trace = LayerTrace(model)
    try:
        with evaluation_pass(model), torch.no_grad():
            try:
                output = forward_fn(model, example_inputs)
            except Exception as exc:
                where = describe_layer(model, trace.innermost())
                raise RuntimeError(f"the forward pass of example_inputs failed in {where}: {exc}") from exc
    finally:
        trace.remove()
        for h in handles:
            h.remove()
    return geometry, order, output


def count_macs(model: nn.Module, example_inputs: object, *, forward_fn: ForwardFn | None = None,
               by_layer: bool = False) -> int | tuple[int, dict[str, int]]:
    """Multiply-accumulates of the conv/linear layers in one forward of ``example_inputs`` (see module doc).

    Runs in eval mode under ``torch.no_grad`` and resets SpikingJelly neuron state before and after; the
    model's training flags are restored. ``by_layer=True`` also returns ``{layer name: MACs}``.
    """
    geometry, _, _ = layer_geometry(model, example_inputs, forward_fn)
    per_layer = {name: g.macs for name, g in geometry.items()}
    total = sum(per_layer.values())
    return (total, per_layer) if by_layer else total


class ChannelMacModel:
    """MACs of the model after removing channels of coupled groups, computed from shapes without pruning.

    ``couplings[g]`` lists ``(layer name, dim, per_root)`` for group ``g``: removing root channel ``c`` of the
    group removes ``per_root[c]`` channels of that layer along ``dim`` (0 = output, 1 = input; usually 1, more
    after a flatten). A depthwise conv loses its output, input and group together.
    """

    def __init__(self, geometry: dict[str, LayerGeometry],
                 couplings: Sequence[Sequence[tuple[str, int, torch.Tensor]]]):
        self.names = list(geometry)
        index = {n: i for i, n in enumerate(self.names)}
        g = [geometry[n] for n in self.names]
        self.out_ch = torch.tensor([x.out_channels for x in g], dtype=torch.float64)
        self.in_ch = torch.tensor([x.in_channels for x in g], dtype=torch.float64)
        self.groups = torch.tensor([x.groups for x in g], dtype=torch.float64)
        self.unit = torch.tensor([x.positions * x.kernel for x in g], dtype=torch.float64)
        self.depthwise = torch.tensor([x.depthwise for x in g], dtype=torch.bool)
        # For each group: layer indices, dims, and a [members, C] matrix of per-root channel counts.
        self.couplings = []
        for members in couplings:
            members = [(index[name], dim, per_root.to(torch.float64)) for name, dim, per_root in members
                       if name in index]
            if members:
                layers = torch.tensor([m[0] for m in members])
                dims = torch.tensor([m[1] for m in members])
                counts = torch.stack([m[2] for m in members])
            else:
                layers = dims = torch.zeros(0, dtype=torch.long)
                counts = torch.zeros(0, 0, dtype=torch.float64)
            self.couplings.append((layers, dims, counts))

    def macs(self, removed: Sequence[torch.Tensor | None]) -> int:
        """MACs with the root channels ``removed[g]`` (bool mask or None) of every group taken out."""
        cut = torch.zeros(2, len(self.names), dtype=torch.float64)
        for (layers, dims, counts), mask in zip(self.couplings, removed, strict=True):
            if mask is None or not bool(mask.any()) or len(layers) == 0:
                continue
            cut.index_put_((dims, layers), counts @ mask.to(torch.float64), accumulate=True)
        out_cut, in_cut = cut
        dw_cut = torch.maximum(out_cut, in_cut)
        out = torch.where(self.depthwise, self.out_ch - dw_cut, self.out_ch - out_cut)
        per_group_in = torch.where(self.depthwise, torch.ones_like(self.in_ch),
                                   torch.div(self.in_ch - in_cut, self.groups, rounding_mode="floor"))
        return int(round(float((self.unit * out * per_group_in).sum())))
