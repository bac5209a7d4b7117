"""SyncBatchNorm for SpikingJelly's batch-norm layers: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``
replaces ``layer.BatchNorm2d`` with a plain ``SyncBatchNorm`` that drops the step mode, so in multi-step mode
it reads ``[T, B, C, H, W]`` with B as the channels and fails (or, with B == C, silently normalises the wrong
axis)."""
from __future__ import annotations

import torch
from spikingjelly.activation_based import base
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


class SyncBatchNorm(nn.SyncBatchNorm, base.StepModule):
    """``nn.SyncBatchNorm`` with SpikingJelly's ``step_mode``: in ``'m'`` it normalises ``[T, B, C, ...]`` as
    ``[T·B, C, ...]``, as SpikingJelly's own ``layer.BatchNorm2d`` does."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 step_mode: str = "s"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, process_group)
        self.step_mode = step_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        if x.dim() < 3:
            raise ValueError(f"step_mode 'm' expects [T, B, C, ...], got shape {tuple(x.shape)}")
        return super().forward(x.flatten(0, 1)).view(x.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", step_mode={self.step_mode}"


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps SpikingJelly's step modes.

    Batch-norm layers with a ``step_mode`` become :class:`SyncBatchNorm` with the same mode; other batch-norm
    layers get torch's conversion. Parameters and buffers are shared with the old layers, as in torch.
    """
    if isinstance(module, _BatchNorm) and isinstance(getattr(module, "step_mode", None), str):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, step_mode=module.step_mode)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    if isinstance(module, _BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module
