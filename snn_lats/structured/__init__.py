"""Structured (channel) pruning: OCSPruner, a MAC counter that understands SpikingJelly layers, and channel
structure specs for saving and rebuilding pruned models. See docs/structured.md."""
from .flops import ChannelMacModel, LayerGeometry, count_macs, layer_geometry
from .groups import ChannelGroup, GraphTraceError, GroupMember, build_channel_groups
from .importance import channels_to_keep, flops_cost_softmax, group_saliency, protected_channels
from .ocs import OCSPruner
from .regularizers import REGULARIZERS, ChannelRegularizer, GroupLasso, Shrink, build_regularizer
from .spec import apply_structure, structure_spec
from .stability import StabilityTracker, jaccard, mean_jaccard, regularization_should_start

__all__ = [
    "REGULARIZERS", "ChannelGroup", "ChannelMacModel", "ChannelRegularizer", "GraphTraceError", "GroupLasso",
    "GroupMember", "LayerGeometry", "OCSPruner", "Shrink", "StabilityTracker", "apply_structure",
    "build_channel_groups", "build_regularizer", "channels_to_keep", "count_macs",
    "flops_cost_softmax", "group_saliency", "jaccard", "layer_geometry", "mean_jaccard", "protected_channels",
    "regularization_should_start", "structure_spec",
]
