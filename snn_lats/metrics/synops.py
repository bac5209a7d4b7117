"""Exact synaptic-operation counts for conv (1-D, 2-D, 3-D) and linear layers, on the weights as they are
(pruned zeros skipped).

For a conv with nonzero-weight mask M and input x, the accumulates that reach a nonzero weight, summed over
all outputs, are Σ_{n,o,p} Σ_{c,k} M[o,c,k]·x[n,c,p·s+k·d] = Σ_{c,k} fanout[c,k]·U[c,k], where fanout[c,k]
counts the nonzero weights that input channel c feeds through kernel offset k, and U[c,k] = Σ_n Σ_p
x[n,c,p·s+k·d] is the batch-summed input unfolded over the output grid. That is exactly Σ conv(x, M) but costs
an unfold of one input-sized tensor instead of a second convolution. The unfold is ``Tensor.unfold`` once per
spatial dimension (a strided view: torch has no 3-D ``F.unfold``), summed over the output grid in float64, so
it is exact for any number of spatial dimensions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_type
from ..spiking import is_multi_step

INPUT_KINDS = ("binary", "integer", "real")
# SpikingJelly's layer.Conv1d/2d/3d and layer.Linear subclass these
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_TYPES: tuple[type[nn.Module], ...] = (*CONV_TYPES, nn.Linear)


def classify(x: torch.Tensor) -> tuple[str, float, float]:
    """The kind of ``x`` (see :func:`classify_and_sum`) and its min and max (meaningless for ``real``)."""
    if x.is_complex():
        return "real", 0.0, 0.0
    if x.dtype == torch.bool:
        return "binary", 0.0, 1.0
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo >= 0 and hi <= 1:
        if x.is_floating_point() and float(torch.addcmul(x, x, x, value=-1).amax()) > 0:
            return "real", lo, hi
        return "binary", lo, hi
    if x.is_floating_point() and not torch.equal(x, torch.round(x)):
        return "real", lo, hi
    return "integer", lo, hi


def classify_and_sum(x: torch.Tensor) -> tuple[str, torch.Tensor | None]:
    """The input's kind and, unless it is ``real``, ``Σ_n |x[n]|`` over the first dimension in float64.

    ``binary``: all 0/1 (spikes); ``integer``: whole numbers such as SEW ADD's 0/1/2; ``real``: anything else.
    A spike input costs a min/max pass, one fused x − x² pass with its max, and the sum the SOP count needs
    anyway; nothing is converted to float64. For x in [0, 1], x − x² is 0 exactly at 0 and 1 and stays > 0 in
    floating point for every value in between (x² rounds to at most x, and the subtraction is exact).
    """
    kind, summed, _, _ = _classify_and_sum(x)
    return kind, summed


def _classify_and_sum(x: torch.Tensor) -> tuple[str, torch.Tensor | None, float, float]:
    """:func:`classify_and_sum` with the input's min and max."""
    kind, lo, hi = classify(x)
    if kind == "real":
        return "real", None, lo, hi
    if x.dtype == torch.bool:
        return kind, x.sum(0, dtype=torch.float64), lo, hi
    return kind, exact_sum(x.abs() if lo < 0 else x, 0, bound=max(abs(lo), abs(hi))), lo, hi


def exact_sum(x: torch.Tensor, dim: int | tuple[int, ...], bound: float) -> torch.Tensor:
    """Sum whole-number data over ``dim`` exactly, as float64, without converting all of ``x`` to float64.

    float32 holds every integer up to 2^24, so summing n values of magnitude <= ``bound`` in float32 is exact
    while n·bound < 2^24; only then is the (small) result widened. Otherwise accumulate in float64.
    """
    dims = (dim,) if isinstance(dim, int) else dim
    n = 1
    for d in dims:
        n *= x.shape[d]
    if x.dtype == torch.float32 and n * bound < 2**24:
        return x.sum(dims).double()
    return x.sum(dims, dtype=torch.float64)


def input_kind(x: torch.Tensor) -> str:
    """``binary`` (all 0/1: spikes), ``integer`` (whole numbers, e.g. SEW ADD's 0/1/2) or ``real``."""
    return classify_and_sum(x.reshape(-1))[0]


def _wider(a: str | None, b: str) -> str:
    return b if a is None or INPUT_KINDS.index(b) > INPUT_KINDS.index(a) else a


@dataclass
class CallGroup:
    """The calls of one layer with one input kind and one input/output shape, summed: what the energy models
    and NeuroBench's definitions need beyond the SOP count (:mod:`snn_lats.metrics.energy`).

    ``events`` = Σ|x| (spikes, an integer n counted n times), ``taps`` = Σ over events of the kernel taps that
    land on the output grid (border-aware; = ``events`` for a linear layer), so that a spike's dense fan-out,
    zeros included, is ``taps · C_out/groups``. ``nb_pairs`` (only when NeuroBench figures are asked for):
    nonzero input × nonzero weight pairs, padding skipped, NeuroBench's count for any input kind; ``nb_dense``
    its all-ones count (every weight, every input, padding taps skipped).
    """

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    time_steps: int  # passes in one call: T for a multi-step or time-major call, else 1
    samples: int  # samples in one call (T·B for a [T·B, ...] call of a plain layer)
    nb_spiking: bool  # every input value in {-1, 0, 1}: NeuroBench counts the call as ACs
    calls: int = 0
    events: float = 0.0
    taps: float = 0.0
    sops: float = 0.0
    macs: float = 0.0
    dense_macs: int = 0  # weights × output positions × images: every weight, zero padding included
    nb_pairs: float = 0.0
    nb_dense: float = 0.0

    @property
    def in_elements(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_elements(self) -> int:
        return math.prod(self.out_shape)


@dataclass
class SynapseCounter:
    """Per-layer accumulator: accumulates (SOPs) from spike or integer inputs, MACs from real inputs."""

    module: nn.Module
    fanout: torch.Tensor  # [C_in, K] for conv, [in_features] for linear: nonzero weights each input feeds
    nonzero: int
    weights: int
    sops: float = 0.0
    macs: float = 0.0
    dense_macs_per_sample: float | None = None
    kind: str | None = None
    calls: int = field(default=0)
    executed_dense_macs: int = 0  # weights x output positions over every call (all time steps): for coverage
    batch_samples: int | None = None  # the model input's sample count, set by measure before each batch
    neurobench: bool = False  # also count NeuroBench's nonzero pairs and all-ones pass (CallGroup)
    groups: dict[tuple, CallGroup] = field(default_factory=dict)
    _nb_dense_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    @torch.no_grad()
    def for_module(cls, module: nn.Module) -> SynapseCounter:
        check_type("module", module, LAYER_TYPES,
                   "a layer SynapseCounter supports: nn.Conv1d, nn.Conv2d, nn.Conv3d and nn.Linear")
        mask = module.weight != 0
        if isinstance(module, CONV_TYPES):
            c_out, c_in_g = mask.shape[:2]
            g = module.groups
            fanout = mask.reshape(g, c_out // g, c_in_g, -1).sum(1, dtype=torch.float64)
            fanout = fanout.reshape(c_in_g * g, -1)
        else:
            fanout = mask.sum(0, dtype=torch.float64)
        return cls(module, fanout, int(mask.sum()), mask.numel())

    @torch.no_grad()
    def update(self, x: torch.Tensor, out: torch.Tensor) -> None:
        m = self.module
        in_shape, out_shape = tuple(x.shape), tuple(out.shape)
        if is_multi_step(m):
            time_steps, samples = x.shape[0], x.shape[1]
        elif self._time_major(x):  # [T, B, ...] into a plain layer (a clock_driven model's head)
            time_steps, samples = x.shape[0], x.shape[1]
        else:  # [B, ...], or [T*B, ...] flattened: each row one image of one time step
            time_steps, samples = 1, x.shape[0]
        conv = isinstance(m, CONV_TYPES)
        if conv:
            dims = m.weight.dim() - 2  # spatial dimensions
            x = x.reshape(-1, *x.shape[-dims - 1:])  # [images, C, *spatial]: T·B images, or T·B already flat
            positions = math.prod(out.shape[-dims:])  # output positions per image
            self.dense_macs_per_sample = self.weights * positions
            images = x.shape[0]
        else:
            x = x.reshape(-1, m.in_features)
            self.dense_macs_per_sample = self.weights * (x.shape[0] // (time_steps * samples))
            positions, images = 1, x.shape[0]
        dense = self.weights * positions * images
        self.executed_dense_macs += dense
        pairs = self.nonzero * positions * images
        kind, summed, lo, hi = _classify_and_sum(x)
        self.kind = _wider(self.kind, kind)
        self.calls += 1
        nb_spiking = kind != "real" and lo >= -1 and hi <= 1
        key = (kind, nb_spiking, in_shape, out_shape)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = CallGroup(kind, in_shape, out_shape, time_steps, samples, nb_spiking)
        group.calls += 1
        group.dense_macs += dense
        if kind == "real":
            self.macs += pairs
            group.macs += pairs
            sops = 0.0
        else:
            unfolded = self._unfolded(summed) if conv else summed
            sops = float((unfolded * self.fanout).sum())
            self.sops += sops
            group.sops += sops
            group.events += float(summed.sum())
            group.taps += float(unfolded.sum())
        if self.neurobench:
            self._count_neurobench(group, x, kind, sops, conv)

    def _count_neurobench(self, group: CallGroup, x: torch.Tensor, kind: str, sops: float,
                          conv: bool) -> None:
        """NeuroBench's counts of one call (x as reshaped by update): nonzero pairs and the all-ones pass."""
        if kind == "binary":
            group.nb_pairs += sops  # each spike is one nonzero input
        else:
            nonzero = (x != 0).sum(0, dtype=torch.float64)
            group.nb_pairs += float(((self._unfolded(nonzero) if conv else nonzero) * self.fanout).sum())
        images = x.shape[0]
        if conv:
            key = tuple(x.shape[1:])
            per_image = self._nb_dense_cache.get(key)
            if per_image is None:  # valid taps of every input channel over the output grid, all weights
                ones = torch.ones(key, dtype=torch.float64, device=x.device)
                m = self.module
                per_image = self._nb_dense_cache[key] = float(self._unfolded(ones).sum()) * (
                    m.out_channels // m.groups)
            group.nb_dense += per_image * images
        else:
            group.nb_dense += float(self.weights) * images

    def _time_major(self, x: torch.Tensor) -> bool:
        """A plain linear layer's input laid out [T, B, ...]: its second dimension is the batch's sample count
        and its first is not (SpikingJelly layers say so with step_mode; plain ones cannot)."""
        b = self.batch_samples
        return (b is not None and isinstance(self.module, nn.Linear) and x.dim() >= 3 and x.shape[1] == b
                and x.shape[0] != b)

    def _unfolded(self, xbar: torch.Tensor) -> torch.Tensor:
        """U[c, k] = Σ_p xbar[c, p·stride + k·dilation − padding]; xbar [C, *spatial] is the batch sum."""
        m = self.module
        dims = xbar.dim() - 1
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            xbar = F.pad(xbar.unsqueeze(0), m._reversed_padding_repeated_twice, mode=mode)[0]
        elif any(m.padding):
            xbar = F.pad(xbar, [p for p in reversed(m.padding) for _ in range(2)])
        cols = xbar
        for i in range(dims):  # windows of each dimension go last: [C, *out, *kernel] once done
            k, s, d = m.kernel_size[i], m.stride[i], m.dilation[i]
            cols = cols.unfold(1 + i, (k - 1) * d + 1, s)[..., ::d]
        return cols.sum(tuple(range(1, 1 + dims))).reshape(xbar.shape[0], -1)
