"""``use_fused_neurons``: swap SpikingJelly LIF/IF/PLIF nodes in any model for snn_lats's fused ones.

Both namespaces: ``activation_based`` (``LIFNode``/``IFNode``/``ParametricLIFNode`` in either step mode) and
SpikingJelly 0.0.0.0.14's ``clock_driven`` (the ``MultiStep*`` classes the official spiking transformers use,
and the single-step ones), wherever the settings map exactly: outputs and gradients equal.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from .. import spiking
from .._checks import check_choice, check_type
from . import cuda_kernels
from .neurons import BACKENDS, MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode, surrogate_spec

FUSED = (MultiStepLIFNode, MultiStepIFNode, MultiStepParametricLIFNode)
SWAPPABLE = (neuron.LIFNode, neuron.IFNode, neuron.ParametricLIFNode)
# clock_driven class name -> (fused kind, step mode)
CLOCK_DRIVEN_SWAPPABLE = {
    "LIFNode": ("lif", "s"), "IFNode": ("if", "s"), "ParametricLIFNode": ("plif", "s"),
    "MultiStepLIFNode": ("lif", "m"), "MultiStepIFNode": ("if", "m"),
    "MultiStepParametricLIFNode": ("plif", "m"),
}


@dataclass
class SwapReport:
    replaced: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)  # module name -> reason

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)} neuron layers with fused ones"]
        lines += [f"  kept {name}: {reason}" for name, reason in self.unsupported.items()]
        return "\n".join(lines)


def _fused_equivalent(node: nn.Module, backend: str | None, recompute: bool | None) -> nn.Module:
    """The fused node with ``node``'s settings; raises TypeError or ValueError with the reason when there is
    none."""
    if spiking.is_clock_driven(node):
        return _clock_driven_equivalent(node, backend, recompute)
    if type(node) not in SWAPPABLE:
        raise ValueError(f"{type(node).__name__} has no fused equivalent "
                         f"(only {', '.join(t.__name__ for t in SWAPPABLE)})")
    if getattr(node, "store_v_seq", False):
        raise ValueError("store_v_seq=True is not supported by the fused nodes")
    surrogate_spec(node.surrogate_function)  # raises for surrogates the kernels do not implement
    common = dict(v_threshold=node.v_threshold, v_reset=node.v_reset,
                  surrogate_function=node.surrogate_function, detach_reset=node.detach_reset,
                  step_mode=node.step_mode, backend=backend, recompute=recompute)
    if type(node) is neuron.ParametricLIFNode:
        return _plif(node, common)
    if type(node) is neuron.LIFNode:
        return MultiStepLIFNode(tau=node.tau, decay_input=node.decay_input, **common)
    return MultiStepIFNode(**common)


def _plif(node: nn.Module, common: dict) -> nn.Module:
    if node.w.dim() != 0:
        raise ValueError(f"ParametricLIFNode.w of shape {tuple(node.w.shape)}: the kernels take one leak")
    fused = MultiStepParametricLIFNode(decay_input=node.decay_input, **common)
    fused.w = node.w  # the same Parameter: its value, device and any optimizer reference are kept
    return fused


def _clock_driven_surrogate(fn) -> nn.Module:
    """clock_driven's ATan/Sigmoid as activation_based's, same alpha (the same formulas in 0.0.0.0.14)."""
    cd = importlib.import_module("spikingjelly.clock_driven.surrogate")
    for cd_cls, ab_cls in ((cd.ATan, surrogate.ATan), (cd.Sigmoid, surrogate.Sigmoid)):
        if type(fn) is cd_cls:
            return ab_cls(alpha=fn.alpha, spiking=True)
    raise ValueError(f"surrogate {type(fn).__name__} has no fused equivalent (only ATan and Sigmoid)")


def _clock_driven_equivalent(node: nn.Module, backend: str | None, recompute: bool | None) -> nn.Module:
    cls = type(node)
    kind_mode = CLOCK_DRIVEN_SWAPPABLE.get(cls.__name__) if cls.__module__.endswith("clock_driven.neuron") \
        else None
    if kind_mode is None:
        raise ValueError(f"clock_driven {cls.__name__} has no fused equivalent "
                         f"(only {', '.join(CLOCK_DRIVEN_SWAPPABLE)})")
    kind, mode = kind_mode
    if getattr(node, "backend", "torch") not in ("torch", "cupy"):
        raise ValueError(f"backend={node.backend!r} (only 'torch' and 'cupy' are computed as the kernels do)")
    decay_input = getattr(node, "decay_input", True)
    if kind != "if" and not decay_input and node.v_reset in (None, 0.0):
        raise ValueError("decay_input=False with v_reset 0 or None: clock_driven charges V·(1 − 1/τ) + X, "
                         "the fused kernels V − V/τ + X, which round differently")
    common = dict(v_threshold=float(node.v_threshold), v_reset=node.v_reset,
                  surrogate_function=_clock_driven_surrogate(node.surrogate_function),
                  detach_reset=node.detach_reset, step_mode=mode, backend=backend, recompute=recompute)
    if kind == "plif":
        return _plif(node, common)
    if kind == "lif":
        return MultiStepLIFNode(tau=node.tau, decay_input=decay_input, **common)
    return MultiStepIFNode(**common)


def use_fused_neurons(model: nn.Module, backend: str | None = None,
                      recompute: bool | None = None) -> SwapReport:
    """Replace every SpikingJelly ``LIFNode`` / ``IFNode`` / ``ParametricLIFNode`` in ``model`` by
    ``MultiStepLIFNode`` / ``MultiStepIFNode`` / ``MultiStepParametricLIFNode`` with the same settings
    (threshold, reset, τ, decay_input, detach_reset, surrogate, step mode; PLIF keeps its very ``w``
    Parameter), in place. SpikingJelly 0.0.0.0.14's ``clock_driven`` nodes are swapped too: its
    ``MultiStep*Node`` classes become multi-step nodes, its single-step classes single-step ones; their
    ``backend`` ('torch' or 'cupy') is replaced by ``backend`` here, and they no longer keep ``v_seq``. Other
    neuron types, and settings the kernels do not cover, are kept and listed in the returned report's
    ``unsupported``, each with the reason. ``recompute`` is passed to every fused node (None: automatic).
    SpikingJelly 2.x's ``reset_net`` cache is refreshed."""
    check_type("model", model, nn.Module, "a torch.nn.Module")
    backend = check_choice("backend", backend, (*BACKENDS, None))  # here, not once per node as unsupported
    recompute = check_choice("recompute", recompute, (True, False, None))
    if backend == "cupy" and not cuda_kernels.cupy_available():  # before anything is swapped
        raise RuntimeError("backend='cupy' needs CuPy with a working CUDA GPU (pip install cupy-cuda13x), "
                           "and none is available here: use backend=None (cupy where it works, torch "
                           "elsewhere) or 'torch'")
    report = SwapReport()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not spiking.is_neuron(child) or isinstance(child, FUSED):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            try:
                setattr(parent, child_name, _fused_equivalent(child, backend, recompute))
                report.replaced.append(name)
            except (TypeError, ValueError) as exc:  # a setting the fused nodes do not take
                report.unsupported[name] = str(exc)
    if hasattr(functional, "invalidate_reset_cache"):  # 2.x caches the resettable modules per network
        functional.invalidate_reset_cache(model)
    return report
