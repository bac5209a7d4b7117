"""snn_lats: prune SpikingJelly spiking networks and ordinary CNNs during training.

Soft-threshold pruning as implicit ISTA (LATS, Chen et al. ICLR 2023) and a gradual-magnitude baseline.
"""
from .checkpoint import export_dense, load_dense, squash_state_dict
from .layers import find_prunable_layers
from .magnitude import MagnitudePruner
from .parametrizations import BinaryMask, SoftThreshold
from .schedules import (
    CallableSchedule,
    ConstantSchedule,
    LATSSchedule,
    LRProportionalSchedule,
    PGHSchedule,
    SLATSSchedule,
    ThresholdSchedule,
)
from .soft_threshold import SoftThresholdPruner
from .sparsity import LayerSparsity, SparsityReport, sparsity_report

__version__ = "0.1.0"

__all__ = [
    "BinaryMask",
    "CallableSchedule",
    "ConstantSchedule",
    "LATSSchedule",
    "LRProportionalSchedule",
    "LayerSparsity",
    "MagnitudePruner",
    "PGHSchedule",
    "SLATSSchedule",
    "SoftThreshold",
    "SoftThresholdPruner",
    "SparsityReport",
    "ThresholdSchedule",
    "export_dense",
    "find_prunable_layers",
    "load_dense",
    "sparsity_report",
    "squash_state_dict",
]
