"""Weight storage: the bytes one weight tensor takes under a storage format and a value width, and a model's
footprint under every format and width.

A weight is viewed as a matrix with one row per output channel (or output feature) and one column per input
it reads: ``C_in / groups × kernel elements`` for a convolution, ``in_features`` for a linear layer. With
``nnz`` nonzero weights and ``bits`` bits per stored value:

- ``dense``: every weight, ``numel · bits / 8`` bytes;
- ``bitmask``: the nonzero values plus one bit per weight saying where they are,
  ``nnz · bits / 8 + ceil(numel / 8)`` bytes;
- ``csr``: the nonzero values, one column index per nonzero and ``rows + 1`` row pointers,
  ``nnz · (bits + index_bits) / 8 + (rows + 1) · pointer_bits / 8`` bytes.

One rule sets the CSR index widths: the narrowest unsigned integer that holds every value it must store. A
column index is the smallest of 8, 16 and 32 bits that holds ``cols − 1``; a row pointer the smallest of 16,
32 and 64 bits that holds ``nnz`` (a pointer counts the nonzeros before a row, 0 to nnz). This is what a
deployment tool packing a fixed layer would pick, and it is fair to CSR: a fixed 32-bit index would triple
the bytes of an 8-bit layer whose fan-in fits in one byte. ``csr_index_bits`` gives the widths chosen.

Every figure is an exact integer; the storage of biases, BatchNorm and neuron parameters is not counted.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_choice, check_int, check_type
from ..layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from ..parametrizations import deployed_weight

WEIGHT_FORMATS = ("dense", "bitmask", "csr")
WEIGHT_BITS = (32, 16, 8)
COLUMN_INDEX_BITS = (8, 16, 32)
ROW_POINTER_BITS = (16, 32, 64)


def _narrowest(value: int, widths: tuple[int, ...], what: str) -> int:
    for bits in widths:
        if value < 2 ** bits:
            return bits
    raise ValueError(f"{what} {value} does not fit in {widths[-1]} bits")


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) of a weight of ``shape``: rows = ``shape[0]`` (output channels or features), cols = the
    product of the rest (``C_in / groups × kernel``, or ``in_features``)."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("a weight must have at least one dimension (its output channels), got a scalar")
    return shape[0], math.prod(shape[1:])


def csr_index_bits(cols: int, nnz: int) -> tuple[int, int]:
    """(column index bits, row pointer bits) of the CSR layout of a matrix with ``cols`` columns and ``nnz``
    nonzeros: the narrowest of (8, 16, 32) holding ``cols − 1`` and of (16, 32, 64) holding ``nnz``."""
    cols = check_int("cols", cols, minimum=0)
    nnz = check_int("nnz", nnz, minimum=0)
    return (_narrowest(max(cols - 1, 0), COLUMN_INDEX_BITS, "largest column index"),
            _narrowest(nnz, ROW_POINTER_BITS, "nonzero count"))


def storage_bytes(rows: int, cols: int, nnz: int, format: str, bits: int) -> int:
    """The bytes of a ``rows × cols`` weight matrix with ``nnz`` nonzeros stored as ``format`` (one of
    ``WEIGHT_FORMATS``) with ``bits`` bits per value (one of ``WEIGHT_BITS``); see the module docstring."""
    format = check_choice("format", format, WEIGHT_FORMATS)
    bits = check_choice("bits", bits, WEIGHT_BITS)
    rows = check_int("rows", rows, minimum=0)
    cols = check_int("cols", cols, minimum=0)
    nnz = check_int("nnz", nnz, minimum=0, maximum=rows * cols)
    numel = rows * cols
    if format == "dense":
        return numel * bits // 8
    if format == "bitmask":
        return nnz * bits // 8 + (numel + 7) // 8
    index_bits, pointer_bits = csr_index_bits(cols, nnz)
    return nnz * (bits + index_bits) // 8 + (rows + 1) * pointer_bits // 8


def weight_bytes(weight: torch.Tensor, format: str, bits: int) -> int:
    """The bytes of ``weight`` (a conv or linear weight; its exact zeros are what a sparse format skips)
    stored as ``format`` with ``bits`` bits per value."""
    check_type("weight", weight, torch.Tensor, "a torch.Tensor")
    rows, cols = matrix_shape(weight.shape)
    return storage_bytes(rows, cols, int(torch.count_nonzero(weight)), format, bits)


@dataclass(frozen=True)
class LayerStorage:
    """One weight's matrix view and its bytes per (format, bits)."""

    shape: tuple[int, ...]
    rows: int
    cols: int
    nnz: int

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    def bytes(self, format: str, bits: int) -> int:
        return storage_bytes(self.rows, self.cols, self.nnz, format, bits)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "rows": self.rows, "cols": self.cols, "nnz": self.nnz,
                "numel": self.numel,
                "bytes": {f"{fmt}{bits}": self.bytes(fmt, bits) for fmt in WEIGHT_FORMATS
                          for bits in WEIGHT_BITS}}


def layer_storage(weight: torch.Tensor) -> LayerStorage:
    check_type("weight", weight, torch.Tensor, "a torch.Tensor")
    rows, cols = matrix_shape(weight.shape)
    return LayerStorage(tuple(weight.shape), rows, cols, int(torch.count_nonzero(weight)))


@dataclass
class FootprintReport:
    """``layers[name]`` is a :class:`LayerStorage`; ``bytes(format, bits)`` sums them."""

    layers: dict[str, LayerStorage] = field(default_factory=dict)

    def bytes(self, format: str, bits: int) -> int:
        format = check_choice("format", format, WEIGHT_FORMATS)
        bits = check_choice("bits", bits, WEIGHT_BITS)
        return sum(layer.bytes(format, bits) for layer in self.layers.values())

    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers.values())

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers.values())

    def to_dict(self) -> dict:
        return {"layers": {n: s.to_dict() for n, s in self.layers.items()},
                "total": {"nnz": self.nnz, "numel": self.numel,
                          "bytes": {f"{fmt}{bits}": self.bytes(fmt, bits) for fmt in WEIGHT_FORMATS
                                    for bits in WEIGHT_BITS}}}

    def __str__(self) -> str:
        columns = [(fmt, bits) for fmt in WEIGHT_FORMATS for bits in WEIGHT_BITS]
        width = max([len(n) for n in self.layers] + [5])
        head = f"{'layer':<{width}}  {'nnz':>10}  {'weights':>10}" + "".join(
            f"  {fmt + str(bits):>10}" for fmt, bits in columns)
        rows = [f"{n:<{width}}  {s.nnz:>10,}  {s.numel:>10,}" + "".join(
            f"  {s.bytes(fmt, bits):>10,}" for fmt, bits in columns) for n, s in self.layers.items()]
        rows.append(f"{'total':<{width}}  {self.nnz:>10,}  {self.numel:>10,}" + "".join(
            f"  {self.bytes(fmt, bits):>10,}" for fmt, bits in columns))
        return "\n".join(["weight bytes per storage format and value width", head, *rows])


@torch.no_grad()
def weight_footprint(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ignored_layers: IgnoredLayers = None,
) -> FootprintReport:
    """The weight storage of every layer of ``layer_types`` (conv and linear by default) not in
    ``ignored_layers``, under each format and bit width.

    A model prepared by an snn_lats pruner is read through its parametrization, as ``squash`` would bake it
    (LTP's hard mask included), so a prepared model and its squashed copy give the same figures.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    layers = find_prunable_layers(model, layer_types, ignored_layers)
    return FootprintReport({name: layer_storage(deployed_weight(m)) for name, m in layers.items()})
