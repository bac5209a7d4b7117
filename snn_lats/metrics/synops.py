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
    kind, lo, hi = classify(x)
    if kind == "real":
        return "real", None
    if x.dtype == torch.bool:
        return kind, x.sum(0, dtype=torch.float64)
    return kind, exact_sum(x.abs() if lo < 0 else x, 0, bound=max(abs(lo), abs(hi)))


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
        self.executed_dense_macs += self.weights * positions * images
        pairs = self.nonzero * positions * images
        kind, summed = classify_and_sum(x)
        self.kind = _wider(self.kind, kind)
        self.calls += 1
        if kind == "real":
            self.macs += pairs
        elif conv:
            self.sops += float((self._unfolded(summed) * self.fanout).sum())
        else:
            self.sops += float((summed * self.fanout).sum())

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
