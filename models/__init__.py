"""A small timm-style model registry: ``create_model(name, **kw)``, ``list_models()``, ``model_info(name)``.

The registry itself is in ``models._registry``, which the model modules import (no import cycle)."""
from __future__ import annotations

from ._registry import TRAIN_OPTIONS, ModelInfo, create_model, list_models, model_info, register_model

# Importing the model modules registers their builders.
from . import mobilenet_v1, resnet, sew_resnet  # noqa: E402,F401,I001
from . import ms_resnet, qkformer, spike_driven_transformer, spikformer  # noqa: E402,F401
from . import spiking_resnet, spiking_vgg  # noqa: E402,F401

__all__ = ["TRAIN_OPTIONS", "ModelInfo", "create_model", "list_models", "model_info", "register_model"]
