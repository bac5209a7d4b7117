"""Spike-level sparsity: firing rates, exact synaptic operations on pruned weights, MACs, energy (the compute
proxy and the memory-aware Lemaire model with weight storage formats) and the weights' footprint."""
from .energy import ENERGY_MODELS, LemaireCosts
from .firing import SPIKING_NEURON_TYPES, FiringCounter, new_batch, recording_firing
from .measure import E_AC_PJ, E_MAC_PJ, MeasureSession, MetricsReport, measure
from .products import ProductCounter, product_count, synaptic_weights
from .storage import WEIGHT_BITS, WEIGHT_FORMATS, weight_footprint
from .synops import LAYER_TYPES, SynapseCounter, classify_and_sum, input_kind

__all__ = ["E_AC_PJ", "E_MAC_PJ", "ENERGY_MODELS", "LAYER_TYPES", "SPIKING_NEURON_TYPES", "WEIGHT_BITS",
           "WEIGHT_FORMATS", "FiringCounter", "LemaireCosts", "MeasureSession", "MetricsReport",
           "ProductCounter", "SynapseCounter", "classify_and_sum", "input_kind", "measure", "new_batch",
           "product_count", "recording_firing", "synaptic_weights", "weight_footprint"]
