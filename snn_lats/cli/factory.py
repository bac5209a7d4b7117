"""Building the user's model from the command line: a registry name or ``PACKAGE.MODULE:FACTORY``.

Shared by ``snn-lats-measure``, ``snn-lats-export`` and ``experiments/train.py`` so that one spelling builds
a model everywhere, and so that a checkpoint that stores ``model_name`` (a registry name or the factory path)
and ``model_kwargs`` can be rebuilt by any of them. Every problem is a :class:`UsageError`: one line, exit
code 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import torch


def registry():
    """The repository's ``models`` package (the model registry), or None where it is not importable (an
    installed snn_lats used outside the repository). Run from the repository's root, its folder is put on
    sys.path (a console script's sys.path does not hold the working directory)."""
    for attempt in range(2):
        try:
            module = importlib.import_module("models")
        except ImportError:
            module = None
        if module is not None and hasattr(module, "list_models") and hasattr(module, "create_model"):
            return module
        cwd = os.getcwd()
        if attempt or not (os.path.isfile(os.path.join(cwd, "models", "__init__.py"))
                           and os.path.isdir(os.path.join(cwd, "snn_lats")) and cwd not in sys.path):
            return None
        sys.path.append(cwd)
    return None


class UsageError(ValueError):
    """A problem with the command line or its files, reported as one line and exit code 2."""


def json_object(text: str) -> dict:
    """--model-kwargs: a JSON object, else argparse's own one-line error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"T\": 4}}', got {text!r}")
    return value


def resolve_factory(name: str):
    """``package.module:factory`` → the callable; a registry name → ``models.create_model`` for it."""
    if ":" not in name:
        models = registry()
        if models is None:
            raise UsageError(f"--model {name!r} is a registry name, available inside the snn_lats "
                             "repository; installed, use PACKAGE.MODULE:FACTORY")
        if name not in models.list_models():
            raise UsageError(f"--model {name!r} is not a registry model ({', '.join(models.list_models())}) "
                             "nor PACKAGE.MODULE:FACTORY")
        return lambda structure=None, **kwargs: models.create_model(name, structure=structure, **kwargs)
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--model {name!r}: expected PACKAGE.MODULE:FACTORY, e.g. my_pkg.nets:build_csnn")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # also a module that fails to import one of its own dependencies
        raise UsageError(f"--model {name!r}: cannot import {module_name!r}: {exc}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"--model {name!r}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"--model {name!r}: {attr!r} is a {type(factory).__name__}, not a callable")
    return factory


def is_factory(name: str) -> bool:
    """``PACKAGE.MODULE:FACTORY`` (a user's model), not a registry name."""
    return ":" in name


def create(name: str, kwargs: dict, structure: dict | None = None) -> torch.nn.Module:
    """The model ``name`` builds with ``kwargs``; a channel-pruned ``structure`` (OCS) is applied to it, so a
    thin checkpoint loads strictly (registry models and factories alike)."""
    factory = resolve_factory(name)
    try:
        if structure is not None and not is_factory(name):  # the registry applies it itself
            model = factory(structure=structure, **kwargs)
        else:
            model = factory(**kwargs)
    except TypeError as exc:  # kwargs the factory does not take (or misses); its other errors are its own
        raise UsageError(f"--model {name!r} with --model-kwargs {json.dumps(kwargs)}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if structure is not None and is_factory(name):
        from snn_lats.structured.spec import apply_structure

        try:
            apply_structure(model, structure)
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"--model {name!r}: the checkpoint's channel structure does not fit the model "
                             f"it builds: {exc}") from None
    return model


def output_selector(text: str) -> int | str:
    """--output: which element of a tuple/list/dict output holds the logits: an integer index or a key."""
    try:
        return int(text)
    except ValueError:
        return text
