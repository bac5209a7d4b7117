"""A small timm-style model registry: ``create_model(name, **kw)``, ``list_models()``, ``model_info(name)``.

The registry itself is in ``models._registry``, which the model modules import (no import cycle)."""
# ruff: noqa: F401  (the model modules are imported for their registrations, not used by name)
from __future__ import annotations

# Importing the model modules registers their builders (each imports the registry from _registry itself).
from . import (
    mobilenet_v1,
    ms_resnet,
    qkformer,
    resnet,
    sew_resnet,
    spike_driven_transformer,
    spikformer,
    spiking_resnet,
    spiking_vgg,
)
from ._registry import TRAIN_OPTIONS, ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["TRAIN_OPTIONS", "ModelInfo", "create_model", "list_models", "model_info", "register_model"]
