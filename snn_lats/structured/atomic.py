"""Undo for in-place structural edits: a snapshot of every module's attributes, and of torch-pruning's graph.

torch-pruning prunes by assigning new tensors (``layer.weight = nn.Parameter(index_select(...))``,
``bn.running_mean = ...``, ``conv.out_channels -= k``), and SpikingJelly neurons store their state by
assignment too. So keeping a shallow copy of each module's ``__dict__`` (and one level of the dicts and lists
in it: ``_parameters``, ``_buffers``, ``_modules``, neuron ``_memories``) and putting it back restores the
model exactly: the same Parameter objects (those an optimizer holds), the same values, the same widths.
Nothing is copied, so taking a snapshot costs no memory for the weights.
"""
from __future__ import annotations

import torch_pruning as tp
from torch import nn


def _shallow(d: dict) -> dict:
    return {k: v.copy() if isinstance(v, (dict, list, set)) else v for k, v in d.items()}


class StructureSnapshot:
    """``restore()`` puts ``model`` (and ``graph``, if given) back as they were at the snapshot."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph | None = None):
        self._objects = [(m, _shallow(m.__dict__)) for m in model.modules()]
        self._nodes = []
        if graph is not None:
            self._objects.append((graph, _shallow(graph.__dict__)))
            # pruning an unwrapped nn.Parameter re-points its node (Group.prune); nothing else in it changes
            self._nodes = [(node, node.module) for node in graph.module2node.values()]

    def restore(self) -> None:
        for obj, saved in self._objects:
            obj.__dict__.clear()
            obj.__dict__.update(_shallow(saved))
        for node, module in self._nodes:
            node.module = module
