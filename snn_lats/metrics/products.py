"""Matrix products that belong to no counted layer (spiking attention's spike @ spike); the model's coverage.

A torch dispatch mode (the mechanism ``torch.utils.flop_counter`` uses, no monkey-patching) sees every aten op
of the forward pass. ``mm``/``bmm``/``addmm``/``baddbmm``/``addbmm``/``mv``/``addmv``/``dot`` are what ``@``,
``matmul``, ``einsum`` and ``F.linear`` decompose into. For operands A [.., I, K] and B [.., K, J] the count
is

    Σ_{i,k,j} m(a_ik)·m(b_kj) = Σ_k colsum(m(A))[k] · rowsum(m(B))[k]    (per batch matrix, exact in float64)

with m(x) = |x| for spike (0/1) and whole-number operands (an integer n counts n times, as in the layers) and
m(x) = 1[x ≠ 0] for real ones. So spike×spike is the number of nonzero pairs, integer×spike Σ|a|·1[b ≠ 0],
spike×real weights the layer rule, and integer×integer Σ|a|·|b| (each product as |a|·|b| accumulates). A
product with a spike or integer operand counts SOPs; real×real counts MACs on nonzero pairs.

Elementwise products with a spike operand (``k * v``, ``torch.mul(attn, k)``: the Spike-Driven Transformer's
and QKFormer's attention) are **masks**: a spike selects or drops the other factor, so no arithmetic is
executed (the Spike-Driven Transformer paper's own accounting: "mask and addition" operations only, its SDSA
charged E_AC per addition of the column sum over K⊗V, the Hadamard masks nothing). Each call site is a row
of type ``"mask"`` with 0 SOPs and 0 MACs, its ``selected`` results (nonzero outputs) and its ``dense_ops``
(elementwise products a dense network computes). Sums over spike or integer tensors (``kv.sum(-2)``,
``torch.sum(q, 3)``) are rows of type ``"sum"`` whose SOPs are Σ|x| over the summed elements: one
accumulate per spike, an integer n counted n times, the same rule as a layer's. Averages (``mean``,
pooling) are not counted, as pooling layers are not.

Products issued inside a counted nn.Conv1d/2d/3d or nn.Linear are that layer's own and are not counted again;
nothing issued inside a spiking neuron (its charge and reset) is a product. Every other op that
``torch.utils.flop_counter`` has a formula for (convolutions of uncounted modules, fused attention) adds its
dense MACs to the model's total and to the uncounted ops, so coverage shows what is missed.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .. import spiking
from .synops import LAYER_TYPES, _wider, classify, exact_sum

aten = torch.ops.aten
# op -> (index of the first operand, how the pair is laid out): "mm" [I,K]@[K,J], "bmm" batched, "mv", "dot"
PRODUCT_OPS = {
    aten.mm: (0, "mm"), aten.addmm: (1, "mm"), aten.bmm: (0, "bmm"), aten.baddbmm: (1, "bmm"),
    aten.addbmm: (1, "bmm"), aten.mv: (0, "mv"), aten.addmv: (1, "mv"), aten.dot: (0, "dot"),
}
# elementwise products: a mask when one factor is spikes (see the module docstring)
MASK_OPS = {aten.mul, aten.mul_, aten.logical_and, aten.bitwise_and}
SUM_OPS = {aten.sum}
ROOT = "(model)"  # name of the model itself, whose named_modules() name is ""
# data movement and lookups that take a weight without multiplying it: never "unknown products"
_NOT_PRODUCTS = {aten._to_copy, aten.copy_, aten.clone, aten.cat, aten.stack, aten.embedding,
                 aten.index_select, aten.gather, aten.index, aten.detach, aten.alias, aten.lift_fresh}


def _native_mha_macs(query, key, value, embed_dim, num_head, *args, **kwargs) -> int:
    """nn.MultiheadAttention's fused inference path: q, k, v projections, Q·Kᵀ, A·V, output projection."""
    batch = query.shape[0] if query.dim() == 3 else 1
    lq, lk = query.shape[-2], key.shape[-2]
    e = embed_dim
    return batch * (lq * e * e + 2 * lk * e * e + 2 * lq * lk * e + lq * e * e)


def _fused_macs(packet, args, kwargs, out) -> int | None:
    """Dense MACs of the ops torch's flop counter has a formula for, and of fused ones it lacks on CPU."""
    if packet in flop_registry:
        return flop_registry[packet](*args, **kwargs, out_val=out) // 2
    if packet is getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None):
        return flop_registry[aten._scaled_dot_product_flash_attention](*args[:3], out_val=out) // 2
    if packet is aten._native_multi_head_attention:
        return _native_mha_macs(*args, **kwargs)
    return None


@dataclass
class ProductRow:
    """Counts of one call site: the n-th matrix product, mask or sum a module's forward issues."""

    module: str
    module_type: str
    type: str = "matmul"  # "matmul", "mask" or "sum"
    ops: list[str] = field(default_factory=list)
    sops: float = 0.0
    macs: float = 0.0
    executed_dense_macs: int = 0  # matmul: I·K·J over every batch matrix and call (all time steps)
    executed_dense_ops: int = 0  # mask: elementwise products; sum: summed elements (all time steps)
    selected: int = 0  # mask: nonzero results
    # for the energy models: matmul: Σ m(x) of the spike or integer operand (the events; 0 for real × real),
    # elements of the other operand and of the output; sum: elements of the output (all calls)
    events: float = 0.0
    executed_operand_elements: int = 0
    executed_out_elements: int = 0
    kinds: tuple[str | None, ...] = (None, None)
    calls: int = 0


def _as_batched(a: torch.Tensor, b: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both operands as [n, I, K] and [n, K, J]."""
    if layout == "mm":
        return a.unsqueeze(0), b.unsqueeze(0)
    if layout == "mv":
        return a.unsqueeze(0), b.reshape(1, -1, 1)
    if layout == "dot":
        return a.reshape(1, 1, -1), b.reshape(1, -1, 1)
    return a, b


def _weighted_sum(x: torch.Tensor, kind: str, lo: float, hi: float, dim: int) -> torch.Tensor:
    """Σ over ``dim`` of m(x) (|x| for spikes and integers, 1[x ≠ 0] for real values), exact, float64."""
    if kind == "real" or x.dtype == torch.bool:
        return (x != 0).sum(dim, dtype=torch.float64)
    return exact_sum(x.abs() if lo < 0 else x, dim, bound=max(abs(lo), abs(hi)))


def product_count(a: torch.Tensor, b: torch.Tensor) -> tuple[float, str, str]:
    """Σ_{n,i,k,j} m(a[n,i,k])·m(b[n,k,j]) for a [n, I, K] and b [n, K, J], and both operands' kinds."""
    count, ka, kb, _ = _product_count(a, b)
    return count, ka, kb


def _product_count(a: torch.Tensor, b: torch.Tensor) -> tuple[float, str, str, float]:
    """:func:`product_count` and the events: Σ m(x) of the first spike or integer operand (0 if neither)."""
    ka, *range_a = classify(a)
    kb, *range_b = classify(b)
    col = _weighted_sum(a, ka, *range_a, dim=-2)  # [n, K]
    row = _weighted_sum(b, kb, *range_b, dim=-1)  # [n, K]
    events = float(col.sum()) if ka != "real" else float(row.sum()) if kb != "real" else 0.0
    return float((col * row).sum()), ka, kb, events


class ProductCounter(TorchDispatchMode):
    """Counts products by calling module, and the dense MACs of every op, counted or not (see the module)."""

    def __init__(self, model: nn.Module, counted: set[int]):
        super().__init__()
        self.names = {id(m): n for n, m in model.named_modules()}
        self.types = {id(m): type(m).__name__ for m in model.modules()}
        self.counted = counted  # ids of the hooked layers
        self.neurons = {id(m) for m in model.modules() if spiking.is_neuron(m)}
        self.stack: list[list] = []  # [module id, {row type: call sites issued so far in this forward}]
        self.inside_counted = 0
        self.inside_neuron = 0
        self.paused_depth = 0  # snn_lats's own hooks (firing counters) run inside the forward: not counted
        self.rows: dict[str, ProductRow] = {}
        self.model_dense_macs = 0  # every product and convolution, executed (all time steps)
        # (module, op) -> executed dense MACs
        self.uncounted_ops: dict[tuple[str, str], int] = defaultdict(int)
        self.operand_params: dict[int, str] = {}  # storage pointer -> parameter name, for weight coverage
        self.seen_params: set[str] = set()  # weights seen as operands of counted products
        # (module, op) -> calls of ops that take a weight outside its layer and whose cost is unknown
        self.unknown_ops: dict[tuple[str, str], int] = defaultdict(int)
        self.plain_ops: dict = {}

    @contextlib.contextmanager
    def tracking(self, model: nn.Module) -> Iterator[None]:
        """Keep the stack of running modules with pre/post forward hooks (removed on exit)."""
        hooks = []
        for m in model.modules():
            hooks.append(m.register_forward_pre_hook(lambda m, i: self._enter(m)))
            hooks.append(m.register_forward_hook(lambda m, i, o: self._leave(m), always_call=True))
        try:
            with self:
                yield
        finally:
            for h in hooks:
                h.remove()
            self.stack.clear()
            self.inside_counted = self.inside_neuron = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Ops issued inside are not the model's (a measuring hook's own sums): not counted."""
        self.paused_depth += 1
        try:
            yield
        finally:
            self.paused_depth -= 1

    def _enter(self, m: nn.Module) -> None:
        self.stack.append([id(m), defaultdict(int)])
        self.inside_counted += id(m) in self.counted
        self.inside_neuron += id(m) in self.neurons

    def _leave(self, m: nn.Module) -> None:
        if self.stack and self.stack[-1][0] == id(m):
            self.stack.pop()
            self.inside_counted -= id(m) in self.counted
            self.inside_neuron -= id(m) in self.neurons

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        # the model's own ops: inside its forward (a module is running), outside counted layers and neurons
        mine = bool(self.stack) and not (self.paused_depth or self.inside_counted or self.inside_neuron)
        # a mask's factors are classified before the op runs: mul_ overwrites the first
        factors = self._mask_factors(args) if mine and packet in MASK_OPS else None
        out = func(*args, **kwargs)
        if self.paused_depth:
            return out
        if packet in MASK_OPS or packet in SUM_OPS:
            if factors is not None:
                self._mask(str(packet).removeprefix("aten."), factors, out)
            elif mine and packet in SUM_OPS:
                self._sum(str(packet).removeprefix("aten."), args, out)
        elif packet in PRODUCT_OPS:
            first, layout = PRODUCT_OPS[packet]
            a, b = _as_batched(args[first], args[first + 1], layout)
            self._product(str(packet).removeprefix("aten."), a, b)
        else:
            macs = _fused_macs(packet, args, kwargs, out)
            if macs is not None:
                self.model_dense_macs += macs
                if not self.inside_counted:
                    self.uncounted_ops[(self._caller(), str(packet).removeprefix("aten."))] += macs
            elif not self.inside_counted and self.operand_params and not self._plain(func, packet):
                self._unknown(packet, args)
        return out

    def _plain(self, func, packet) -> bool:
        """Views, data movement, pointwise ops and reductions: they multiply no weight into a sum (cached)."""
        plain = self.plain_ops.get(func)
        if plain is None:
            tags = {torch.Tag.pointwise, torch.Tag.reduction} & set(func.tags)
            plain = self.plain_ops[func] = func.is_view or packet in _NOT_PRODUCTS or bool(tags)
        return plain

    def _unknown(self, packet, args) -> None:
        """An op with no MAC formula that takes a weight outside its layer (a fused kernel?): MACs unknown."""
        for t in args:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 \
                    and t.untyped_storage().data_ptr() in self.operand_params:
                self.unknown_ops[(self._caller(), str(packet).removeprefix("aten."))] += 1
                return

    def _caller(self) -> str:
        return self.names.get(self.stack[-1][0], "?") or ROOT if self.stack else ROOT

    def _product(self, op: str, a: torch.Tensor, b: torch.Tensor) -> None:
        dense = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        self.model_dense_macs += dense
        if self.inside_counted:  # the layer's own product: its hook counts it
            return
        row = self._row("matmul", op)
        row.executed_dense_macs += dense
        if self.operand_params:
            for t in (a, b):
                param = self.operand_params.get(t.untyped_storage().data_ptr())
                if param is not None:
                    self.seen_params.add(param)
        row.executed_out_elements += a.shape[0] * a.shape[1] * b.shape[2]
        if a.numel() == 0 or b.numel() == 0:
            return
        count, ka, kb, events = _product_count(a, b)
        row.kinds = (_wider(row.kinds[0], ka), _wider(row.kinds[1], kb))
        row.events += events
        row.executed_operand_elements += b.numel() if ka != "real" else a.numel()
        if ka == kb == "real":
            row.macs += count
        else:
            row.sops += count

    def _row(self, kind: str, op: str) -> ProductRow:
        """The row of this call site: the n-th ``kind`` the innermost running module issues, created once."""
        if self.stack:
            key, issued = self.stack[-1]
            index = issued[kind]
            issued[kind] += 1
        else:
            key, index = None, 0
        module = self.names.get(key, "?") or ROOT if key is not None else ROOT
        name = f"{module}/{kind}.{index}"
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = ProductRow(module, self.types.get(key, "?") if key is not None else "?",
                                               type=kind)
        if op not in row.ops:
            row.ops.append(op)
        row.calls += 1
        return row

    @staticmethod
    def _mask_factors(args) -> tuple[str, str] | None:
        """Both factors' kinds if this elementwise product is a mask (a factor is spikes), else None (plain
        arithmetic, or scaling by a constant)."""
        a, b = args[0], args[1] if len(args) > 1 else None
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.numel() <= 1 \
                or b.numel() <= 1:
            return None
        ka, kb = classify(a)[0], classify(b)[0]
        return (ka, kb) if "binary" in (ka, kb) else None

    def _mask(self, op: str, factors: tuple[str, str], out) -> None:
        ka, kb = factors
        row = self._row("mask", op)
        row.kinds = (_wider(row.kinds[0], ka), _wider(row.kinds[1], kb))
        row.executed_dense_ops += out.numel()
        row.selected += int(torch.count_nonzero(out))

    def _sum(self, op: str, args, out) -> None:
        """A sum of spikes or integers: Σ|x| accumulates over the summed elements."""
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.numel() == 0 or x.is_complex():
            return
        kind, lo, hi = classify(x)
        if kind == "real":
            return
        row = self._row("sum", op)
        row.kinds = (_wider(row.kinds[0], kind),)
        row.executed_dense_ops += x.numel()
        row.executed_out_elements += out.numel() if isinstance(out, torch.Tensor) else 1
        row.sops += float(exact_sum((x.abs() if lo < 0 else x).reshape(-1), 0, bound=max(abs(lo), abs(hi))))


def synaptic_weights(model: nn.Module) -> dict[str, tuple[str, str, int, nn.Parameter | None]]:
    """Every synaptic weight of ``model``: parameter name -> (module name, module type, size, parameter).

    The rule: a parameter with two or more dimensions is a synaptic weight (conv kernels, linear matrices, a
    custom module's ``weight``). 0-D and 1-D parameters are not: biases, normalization affine weights, neuron
    time constants and thresholds. A parametrized weight counts once, at its owner, with its parametrized size
    (torch.nn.utils.prune's ``weight_orig`` is the owner's own parameter, so it counts once too).
    """
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, parametrize.ParametrizationList):
            continue  # its ``original`` is counted at the module it parametrizes
        prefix = f"{name}." if name else ""
        for pname, p in m.named_parameters(recurse=False):
            if p.dim() >= 2:
                found[prefix + pname] = (name, type(m).__name__, p.numel(), p)
        if parametrize.is_parametrized(m):
            for pname in m.parametrizations:
                value = getattr(m, pname)
                if value.dim() >= 2:
                    found[prefix + pname] = (name, type(m).__name__, value.numel(), None)
    return found


def counted_layer_weight(name: str, module: nn.Module) -> set[str]:
    """The parameter names under which a counted layer's weight can appear in :func:`synaptic_weights`."""
    prefix = f"{name}." if name else ""
    return {prefix + "weight", prefix + "weight_orig"} if isinstance(module, LAYER_TYPES) else set()
