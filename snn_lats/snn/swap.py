"""``use_fused_neurons``: swap SpikingJelly LIF/IF/PLIF nodes in any model for snn_lats's fused ones."""
from __future__ import annotations

from dataclasses import dataclass, field

from spikingjelly.activation_based import functional, neuron
from torch import nn

from .._checks import check_choice, check_type
from .neurons import BACKENDS, MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode, surrogate_spec

FUSED = (MultiStepLIFNode, MultiStepIFNode, MultiStepParametricLIFNode)
SWAPPABLE = (neuron.LIFNode, neuron.IFNode, neuron.ParametricLIFNode)


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
        if node.w.dim() != 0:
            raise ValueError(f"ParametricLIFNode.w of shape {tuple(node.w.shape)}: the kernels take one leak")
        fused = MultiStepParametricLIFNode(decay_input=node.decay_input, **common)
        fused.w = node.w  # the same Parameter: its value, device and any optimizer reference are kept
        return fused
    if type(node) is neuron.LIFNode:
        return MultiStepLIFNode(tau=node.tau, decay_input=node.decay_input, **common)
    return MultiStepIFNode(**common)


def use_fused_neurons(model: nn.Module, backend: str | None = None,
                      recompute: bool | None = None) -> SwapReport:
    """Replace every SpikingJelly ``LIFNode`` / ``IFNode`` / ``ParametricLIFNode`` in ``model`` by
    ``MultiStepLIFNode`` / ``MultiStepIFNode`` / ``MultiStepParametricLIFNode`` with the same settings
    (threshold, reset, τ, decay_input, detach_reset, surrogate, step mode; PLIF keeps its very ``w``
    Parameter), in place. Other neuron types, and settings the kernels do not cover, are kept and listed in
    the returned report's ``unsupported``. ``recompute`` is passed to every fused node (None: automatic).
    SpikingJelly 2.x's ``reset_net`` cache is refreshed."""
    check_type("model", model, nn.Module, "a torch.nn.Module")
    backend = check_choice("backend", backend, (*BACKENDS, None))  # here, not once per node as unsupported
    recompute = check_choice("recompute", recompute, (True, False, None))
    report = SwapReport()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            fused = isinstance(child, FUSED)
            if not isinstance(child, neuron.BaseNode) or fused:
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
