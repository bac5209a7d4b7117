"""Spike-level sparsity: firing rates, exact synaptic operations on pruned weights, MACs and energy."""
from .firing import SPIKING_NEURON_TYPES, FiringCounter, new_batch, recording_firing
from .measure import E_AC_PJ, E_MAC_PJ, MetricsReport, measure
from .synops import SynapseCounter, classify_and_sum, input_kind

__all__ = ["E_AC_PJ", "E_MAC_PJ", "SPIKING_NEURON_TYPES", "FiringCounter", "MetricsReport", "SynapseCounter",
           "classify_and_sum", "input_kind", "measure", "new_batch", "recording_firing"]
