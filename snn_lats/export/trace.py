"""Tracing a model while running it: an ``fx.Tracer`` whose every value carries its real tensor.

Python that reads a traced value's shape (``x.dim() == 4``, ``x.shape[0]``) runs as usual, so the ``models/``
wrappers' input checks and direct encoding trace; leaf modules run their real forward (neurons update their
state), with the real parameters and without tracing their submodules.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn


class ValueProxy(fx.Proxy):
    """An fx proxy that carries the real value of what it stands for, so shape reads are plain Python."""

    value: Any = None

    def dim(self) -> int:
        return self.value.dim()

    def size(self, dim: int | None = None):
        return self.value.size() if dim is None else self.value.size(dim)

    def numel(self) -> int:
        return self.value.numel()

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    @property
    def device(self) -> torch.device:
        return self.value.device

    def __len__(self) -> int:
        return len(self.value)


def _values(args: Any) -> Any:
    return fx.node.map_aggregate(args, lambda a: a.value if isinstance(a, ValueProxy) else a)


class ValueTracer(fx.Tracer):
    """Traces ``forward`` while running it: every node's real value is kept in ``values``."""

    def __init__(self, example: torch.Tensor, is_leaf: Callable[[nn.Module], bool]):
        super().__init__()
        self.example = example
        self.is_leaf = is_leaf
        self.values: dict[fx.Node, Any] = {}
        self._leaf_forward: Callable | None = None
        self._running = False

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.is_leaf(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._running:  # inside a leaf's real forward: the real parameters
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m, forward, args, kwargs):
        if self._running:  # a submodule of a leaf: part of the leaf's own forward
            return forward(*args, **kwargs)
        self._leaf_forward = forward
        return super().call_module(m, forward, args, kwargs)

    def _run(self, fn: Callable, *args, **kwargs) -> Any:
        self._running = True
        try:
            return fn(*args, **kwargs)
        finally:
            self._running = False

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     lambda node: ValueProxy(node, self))
        if kind == "placeholder":
            value = self.example
        elif kind == "call_function":
            value = target(*_values(args), **_values(kwargs))
        elif kind == "call_method":
            receiver, *rest = _values(args)
            value = getattr(receiver, target)(*rest, **_values(kwargs))
        elif kind == "call_module":
            value = self._run(self._leaf_forward, *_values(args), **_values(kwargs))
        elif kind == "get_attr":
            value = self._run(_attribute, self.root, target)
        else:
            value = None
        proxy.value = value
        self.values[proxy.node] = value
        return proxy


def _attribute(root: nn.Module, target: str) -> Any:
    value = root
    for atom in target.split("."):
        value = getattr(value, atom)
    return value
