"""snn_lats.metrics.storage: each format's bytes against the arrays of that format built explicitly (numpy
for dense and bitmask, scipy.sparse for CSR), on random sparse conv and linear weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from snn_lats import MagnitudePruner
from snn_lats.metrics.storage import (
    WEIGHT_BITS,
    WEIGHT_FORMATS,
    csr_index_bits,
    layer_storage,
    storage_bytes,
    weight_bytes,
    weight_footprint,
)

scipy_sparse = pytest.importorskip("scipy.sparse", reason="scipy builds the reference CSR arrays")

VALUE_DTYPES = {32: np.float32, 16: np.float16, 8: np.int8}


def explicit_bytes(weight: torch.Tensor, fmt: str, bits: int) -> int:
    """The byte size of the arrays a deployment would store, built one by one."""
    matrix = weight.detach().reshape(weight.shape[0], -1).numpy()
    values = matrix.astype(VALUE_DTYPES[bits])  # 8-bit: the integer codes of a quantised weight
    if fmt == "dense":
        return values.nbytes
    nonzero = matrix != 0
    if fmt == "bitmask":
        return values[nonzero].nbytes + np.packbits(nonzero.reshape(-1)).nbytes
    csr = scipy_sparse.csr_matrix(np.where(nonzero, 1.0, 0.0))  # the pattern only: values are counted above
    assert csr.nnz == int(nonzero.sum())
    # the narrowest unsigned type holding the largest column index, and (at least 16 bits) nnz
    index_type = np.min_scalar_type(max(matrix.shape[1] - 1, 0))
    pointer_type = np.promote_types(np.min_scalar_type(csr.nnz), np.uint16)
    return (values[nonzero].nbytes + csr.indices.astype(index_type).nbytes
            + csr.indptr.astype(pointer_type).nbytes)


def sparse_weight(shape, density, seed):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=gen)
    return weight * (torch.rand(shape, generator=gen) < density)


SHAPES = [(16, 3, 3, 3), (8, 4, 1, 1), (10, 300), (5, 4, 7, 7), (2, 70000), (3, 1), (64, 256, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_bytes_match_the_explicit_arrays_of_each_format(shape, density):
    weight = sparse_weight(shape, density, seed=len(shape) + int(density * 10))
    for fmt in WEIGHT_FORMATS:
        for bits in WEIGHT_BITS:
            assert weight_bytes(weight, fmt, bits) == explicit_bytes(weight, fmt, bits), (fmt, bits)


def test_index_widths_follow_the_stated_rule():
    # columns: 256 fit 8 bits (largest index 255), 257 need 16; pointers: at least 16 bits, then by nnz
    assert csr_index_bits(256, 10) == (8, 16)
    assert csr_index_bits(257, 10) == (16, 16)
    assert csr_index_bits(65537, 65535) == (32, 16)
    assert csr_index_bits(10, 65536) == (8, 32)
    assert csr_index_bits(10, 2 ** 32) == (8, 64)
    # a 3x3 conv over 64 channels has 576 columns: 16-bit indices
    weight = sparse_weight((8, 64, 3, 3), 0.1, seed=1)
    nnz = int(torch.count_nonzero(weight))
    assert weight_bytes(weight, "csr", 8) == nnz * (1 + 2) + 9 * 2


def test_closed_forms_on_a_known_weight():
    weight = torch.zeros(4, 2, 3, 3)  # 4 rows x 18 columns, 72 weights
    weight[0, 0, 0, 0] = weight[3, 1, 2, 2] = weight[3, 0, 1, 1] = 1.5
    assert weight_bytes(weight, "dense", 32) == 72 * 4
    assert weight_bytes(weight, "dense", 8) == 72
    assert weight_bytes(weight, "bitmask", 16) == 3 * 2 + 9
    assert weight_bytes(weight, "csr", 32) == 3 * 4 + 3 * 1 + 5 * 2
    report = layer_storage(weight)
    assert (report.rows, report.cols, report.nnz, report.numel) == (4, 18, 3, 72)


def test_bad_format_or_width_names_the_argument_and_the_allowed_values():
    weight = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"format must be one of \('dense', 'bitmask', 'csr'\), got 'coo'"):
        weight_bytes(weight, "coo", 8)
    with pytest.raises(ValueError, match=r"bits must be one of \(32, 16, 8\), got 4"):
        weight_bytes(weight, "csr", 4)
    with pytest.raises(TypeError, match="bits must be one of"):
        weight_bytes(weight, "dense", 8.0)
    with pytest.raises(ValueError, match="nnz must be an int in"):
        storage_bytes(2, 2, 5, "csr", 8)
    with pytest.raises(ValueError, match="at least one dimension"):
        weight_bytes(torch.tensor(1.0), "dense", 8)


def test_footprint_reads_a_prepared_model_through_its_parametrization():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    MagnitudePruner(model, pruning_ratio=0.9, total_steps=1, initial_ratio=0.9)
    prepared = weight_footprint(model)
    squashed = {name: m.parametrizations.weight.original * m.parametrizations.weight[0].mask
                for name, m in model.named_modules() if hasattr(m, "parametrizations")}
    assert set(prepared.layers) == {"0", "3"} == set(squashed)
    for name, weight in squashed.items():
        assert prepared.layers[name].nnz == int(torch.count_nonzero(weight)) < weight.numel() * 0.11
        for fmt in WEIGHT_FORMATS:
            for bits in WEIGHT_BITS:
                assert prepared.layers[name].bytes(fmt, bits) == explicit_bytes(weight, fmt, bits)
    assert prepared.bytes("csr", 8) == sum(explicit_bytes(w, "csr", 8) for w in squashed.values())
    assert prepared.bytes("dense", 32) == 4 * sum(w.numel() for w in squashed.values())
    totals = prepared.to_dict()["total"]
    assert totals["bytes"]["bitmask16"] == prepared.bytes("bitmask", 16) and totals["nnz"] == prepared.nnz
    assert "csr8" in str(prepared) and "total" in str(prepared)
    ignored = weight_footprint(model, ignored_layers=["3"])
    assert set(ignored.layers) == {"0"}
