"""Adapters for training frameworks. Each imports its framework lazily:
``snn_lats.integrations.lightning``."""
