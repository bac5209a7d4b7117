"""Brute-force synaptic-operation counts, independent of snn_lats.metrics, for the zoo matrix.

Layers: a forward hook on every conv/linear layer recomputes the layer on the magnitude of its input with a
0/1 mask of its nonzero weights, ``Σ conv(|x|, 1[w ≠ 0])``: one accumulate per spike (an integer n counts n
times) that meets a nonzero weight. Real-valued inputs count MACs: nonzero weights × output positions.

Matrix products without a module (attention): a ``TorchFunctionMode`` (a different mechanism from the one
``measure`` uses) sees every ``matmul``/``@``/``bmm``/``mm``/``einsum`` and redoes it on ``m(a)`` and
``m(b)``, where ``m(x) = |x|`` for whole-number tensors and ``1[x ≠ 0]`` for real ones, in float64; the sum of
the result is the number of product terms with both factors nonzero, an integer n counted n times.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from torch.overrides import TorchFunctionMode

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm, torch.mm,
            torch.Tensor.mm}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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
        self.inside_layer = 0


class _MatmulCounter(TorchFunctionMode):
    def __init__(self, counts: _Counts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.counts.inside_layer:
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


@torch.no_grad()
def brute_force_counts(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """``{"sops", "macs", "matmul_sops"}`` of one eval-mode forward of ``x`` (``sops`` includes the
    matmuls)."""
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

    handles = []
    for module in model.modules():
        if isinstance(module, LAYERS):
            if getattr(module, "padding_mode", "zeros") != "zeros":
                raise NotImplementedError("the reference assumes zero padding")
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    try:
        with _MatmulCounter(counts):
            model(x)
    finally:
        for h in handles:
            h.remove()
        functional.reset_net(model)
        model.train(was_training)
    return {"sops": counts.sops + counts.matmul_sops, "macs": counts.macs, "matmul_sops": counts.matmul_sops}
