"""snn_lats: prune SpikingJelly spiking networks and ordinary CNNs during training.

Soft-threshold pruning as implicit ISTA (LATS, Chen et al. ICLR 2023), learned threshold pruning (LTP, Azarian
et al. 2020) and a gradual-magnitude baseline.
"""
from .base import Attachment
from .checkpoint import export_dense, load_dense, squash_state_dict
from .layers import DEFAULT_LAYER_TYPES, find_prunable_layers
from .learned_threshold import LayerThreshold, LearnedThresholdPruner, ThresholdReport
from .magnitude import MagnitudePruner
from .parametrizations import BinaryMask, LearnedThreshold, SoftThreshold
from .pruner import Pruner
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
from .thresholds import relative_weight_scale, suggest_threshold

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYER_TYPES",
    "Attachment",
    "BinaryMask",
    "CallableSchedule",
    "ConstantSchedule",
    "LATSSchedule",
    "LRProportionalSchedule",
    "LayerSparsity",
    "LayerThreshold",
    "LearnedThreshold",
    "LearnedThresholdPruner",
    "MagnitudePruner",
    "PGHSchedule",
    "Pruner",
    "SLATSSchedule",
    "SoftThreshold",
    "SoftThresholdPruner",
    "SparsityReport",
    "ThresholdReport",
    "ThresholdSchedule",
    "export_dense",
    "find_prunable_layers",
    "load_dense",
    "relative_weight_scale",
    "sparsity_report",
    "squash_state_dict",
    "suggest_threshold",
]


def __getattr__(name: str):
    # Subpackages on first use, without importing them (and SpikingJelly, torch-pruning) eagerly
    if name in ("metrics", "integrations", "snn", "structured"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'snn_lats' has no attribute {name!r}")
