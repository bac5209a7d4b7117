"""Brute-force synaptic-operation counts, independent of snn_lats.metrics, for the zoo matrix.

Layers: a forward hook on every conv/linear layer recomputes the layer on the magnitude of its input with a
0/1 mask of its nonzero weights, ``Σ conv(|x|, 1[w ≠ 0])``: one accumulate per spike (an integer n counts n
times) that meets a nonzero weight. Real-valued inputs count MACs: nonzero weights × output positions.

Matrix products without a module (attention): a ``TorchFunctionMode`` (a different mechanism from the one
``measure`` uses) sees every ``matmul``/``@``/``bmm``/``mm``/``einsum`` and redoes it on ``m(a)`` and
``m(b)``, where ``m(x) = |x|`` for whole-number tensors and ``1[x ≠ 0]`` for real ones, in float64; the sum of
the result is the number of product terms with both factors nonzero, an integer n counted n times.

Elementwise products and sums outside layers and neurons, seen by the same mode: a ``mul`` of two tensors of
more than one element, one of them all 0/1, is a mask (its nonzero results counted one by one in Python); a
``sum`` of a whole-number tensor adds Σ|x| accumulates, read element by element.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

try:  # SpikingJelly 0.0.0.0.14: models written on clock_driven reset through its own reset_net
    from spikingjelly.clock_driven import base as cd_base
    from spikingjelly.clock_driven import functional as cd_functional
except ImportError:
    cd_base = cd_functional = None
from torch.overrides import TorchFunctionMode

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm, torch.mm,
            torch.Tensor.mm}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MULS = {torch.mul, torch.Tensor.mul, torch.Tensor.mul_, torch.Tensor.__mul__, torch.Tensor.__rmul__,
         torch.Tensor.__imul__}
_SUMS = {torch.sum, torch.Tensor.sum}


def _whole(x: torch.Tensor) -> bool:
    return bool(torch.equal(x, torch.round(x)))


def _m(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().double()
    return x.abs() if _whole(x) else (x != 0).double()


class _Counts:
    def __init__(self):
        self.sops = 0.0
        self.macs = 0.0
        self.matmul_sops = 0.0
        self.sum_sops = 0.0
        self.mask_selected = 0
        self.inside_layer = 0  # a conv/linear layer or a spiking neuron is running


class _MatmulCounter(TorchFunctionMode):
    def __init__(self, counts: _Counts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.counts.inside_layer:
            return out
        if func in _MULS or func in _SUMS:
            with torch._C.DisableTorchFunction():
                self._elementwise(func, args, out)
            return out
        if func in _MATMULS:
            a, b = args[0], args[1]
        elif func is torch.einsum:
            equation, (a, b) = args[0], (args[1:] if len(args) == 3 else args[1])
        else:
            return out
        with torch._C.DisableTorchFunction():
            spiking = _whole(a.detach()) or _whole(b.detach())
            ma, mb = _m(a), _m(b)
            if not spiking:
                ma, mb = (ma != 0).double(), (mb != 0).double()
            terms = float((torch.einsum(equation, ma, mb) if func is torch.einsum else ma @ mb).sum())
        if spiking:
            self.counts.matmul_sops += terms
        else:
            self.counts.macs += terms
        return out

    def _elementwise(self, func, args, out):
        if func in _SUMS:
            x = args[0].detach()
            if _whole(x):
                self.counts.sum_sops += sum(abs(v) for v in x.double().flatten().tolist())
            return
        a, b = args[0], args[1]
        tensors = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        if not tensors or a.numel() < 2 or b.numel() < 2:
            return
        binary = [bool(((t == 0) | (t == 1)).all()) for t in (a, b)]
        if any(binary):
            self.counts.mask_selected += sum(1 for v in out.detach().flatten().tolist() if v != 0)


def reset(model: nn.Module) -> None:
    """SpikingJelly's own reset_net of the namespace the model is written on."""
    if cd_base is not None and any(isinstance(m, cd_base.MemoryModule) for m in model.modules()):
        cd_functional.reset_net(model)
    else:
        functional.reset_net(model)


@torch.no_grad()
def brute_force_counts(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """``{"sops", "macs", "matmul_sops", "sum_sops", "mask_selected"}`` of one eval-mode forward of ``x``
    (``sops`` includes the matmuls and the sums)."""
    counts = _Counts()

    def pre(module, args):
        counts.inside_layer += 1

    def post(module, args, out):
        counts.inside_layer -= 1
        inp = args[0].detach()
        mask = (module.weight != 0).to(inp.dtype)
        if isinstance(module, nn.Linear):
            inp = inp.reshape(-1, module.in_features)
        elif inp.dim() > module.weight.dim():  # multi-step [T, B, ...]
            inp = inp.flatten(0, 1)
        with torch._C.DisableTorchFunction():
            if not _whole(inp):
                out_channels = mask.shape[0]
                counts.macs += float(mask.sum()) * (out.numel() // out_channels)
                return
            magnitude = inp.abs().double()
            if isinstance(module, nn.Linear):
                counts.sops += float((magnitude @ mask.double().t()).sum())
            else:
                conv = _CONV[mask.dim() - 2]
                counts.sops += float(conv(magnitude, mask.double(), None, module.stride, module.padding,
                                          module.dilation, module.groups).sum())

    def enter(module, args):
        counts.inside_layer += 1

    def leave(module, args, out):
        counts.inside_layer -= 1

    handles = []
    for module in model.modules():
        if hasattr(module, "v_threshold"):  # a spiking neuron: its charge and reset are no products
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        if isinstance(module, LAYERS):
            if getattr(module, "padding_mode", "zeros") != "zeros":
                raise NotImplementedError("the reference assumes zero padding")
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    reset(model)  # from a clean state, as measure starts
    try:
        with _MatmulCounter(counts):
            model(x)
    finally:
        for h in handles:
            h.remove()
        reset(model)
        model.train(was_training)
    return {"sops": counts.sops + counts.matmul_sops + counts.sum_sops, "macs": counts.macs,
            "matmul_sops": counts.matmul_sops, "sum_sops": counts.sum_sops,
            "mask_selected": counts.mask_selected}


def loop_fanout(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0, dilation: int = 1,
                groups: int = 1) -> dict[str, float]:
    """Walk every input unit of a 2-D conv (``weight`` [C_out, C_in/g, kh, kw]) or, for a 2-D ``weight``, a
    linear layer, one spike at a time (an integer n is n spikes), and every weight it reaches.

    ``x`` is [N, C, H, W] (conv) or [N, features] (linear). Returns ``events`` (spikes), ``lists`` (spike ×
    kernel tap that lands on the output grid; one per spike for a linear layer), ``reached`` (spike × weight
    that lands on the output grid, zero weights included) and ``nonzero`` (those with a nonzero weight)."""
    counts = {"events": 0.0, "lists": 0.0, "reached": 0.0, "nonzero": 0.0}
    if weight.dim() == 2:
        for n in range(x.shape[0]):
            for i in range(x.shape[1]):
                units = abs(float(x[n, i]))
                counts["events"] += units
                counts["lists"] += units
                for o in range(weight.shape[0]):
                    counts["reached"] += units
                    counts["nonzero"] += units * float(weight[o, i] != 0)
        return counts
    n_samples, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    per_group = c_out // groups
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    for n in range(n_samples):
        for c in range(c_in):
            for r in range(h):
                for s in range(w):
                    units = abs(float(x[n, c, r, s]))
                    if units == 0:
                        continue
                    counts["events"] += units
                    for ki in range(kh):
                        for kj in range(kw):
                            # the output this tap lands on: r = i*stride + ki*dilation - padding
                            i, ri = divmod(r + padding - ki * dilation, stride)
                            j, sj = divmod(s + padding - kj * dilation, stride)
                            if ri or sj or not (0 <= i < h_out and 0 <= j < w_out):
                                continue
                            counts["lists"] += units
                            group = c // c_in_g
                            for o in range(group * per_group, (group + 1) * per_group):
                                counts["reached"] += units
                                counts["nonzero"] += units * float(weight[o, c % c_in_g, ki, kj] != 0)
    return counts


def loop_output_rows(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0,
                     dilation: int = 1, groups: int = 1) -> dict[str, float]:
    """A real-valued input read output by output (a dense-activation layer): ``outputs`` (output elements,
    each one row of the weight matrix), ``dense`` (weights read at every output, padding taps included) and
    ``nonzero`` (the nonzero ones), for the same conv or linear ``weight`` as :func:`loop_fanout`."""
    if weight.dim() == 2:
        rows = x.shape[0]
        return {"outputs": float(rows * weight.shape[0]), "dense": float(rows * weight.numel()),
                "nonzero": float(rows * int((weight != 0).sum()))}
    n_samples, _, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    counts = {"outputs": 0.0, "dense": 0.0, "nonzero": 0.0}
    for _n in range(n_samples):
        for o in range(c_out):
            for _i in range(h_out):
                for _j in range(w_out):
                    counts["outputs"] += 1
                    for c in range(c_in_g):
                        for ki in range(kh):
                            for kj in range(kw):
                                counts["dense"] += 1
                                counts["nonzero"] += float(weight[o, c, ki, kj] != 0)
    return counts
