"""Spike-level sparsity: firing rates, exact synaptic operations on pruned weights, MACs and energy."""
from .firing import SPIKING_NEURON_TYPES, FiringCounter, new_batch, recording_firing
from .measure import E_AC_PJ, E_MAC_PJ, MetricsReport, measure
from .products import ProductCounter, product_count, synaptic_weights
from .synops import LAYER_TYPES, SynapseCounter, classify_and_sum, input_kind

__all__ = ["E_AC_PJ", "E_MAC_PJ", "LAYER_TYPES", "SPIKING_NEURON_TYPES", "FiringCounter", "MetricsReport",
           "ProductCounter", "SynapseCounter", "classify_and_sum", "input_kind", "measure", "new_batch",
           "product_count", "recording_firing", "synaptic_weights"]
