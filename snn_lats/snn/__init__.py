"""Fused multi-step spiking neurons (CuPy kernels, PyTorch reference) that plug into SpikingJelly."""
from .neurons import BACKENDS, MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode, surrogate_spec
from .swap import SwapReport, use_fused_neurons
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["BACKENDS", "MultiStepIFNode", "MultiStepLIFNode", "MultiStepParametricLIFNode", "SwapReport",
           "SyncBatchNorm", "convert_sync_batchnorm", "surrogate_spec", "use_fused_neurons"]
