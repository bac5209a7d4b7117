"""``to_nir``: a (pruned) SpikingJelly model to a NIR graph, through SpikingJelly's own exporter."""
from __future__ import annotations

import io
import os
import warnings
from typing import Any

import torch
from torch import nn

from .._checks import check_number, check_type
from ..io import atomic_write
from ..parametrizations import deployed_weight
from .step_graph import StepGraph, build_step_graph

NIR_EXTRA = "pip install snn_lats[nir]"


def require_nir():
    """(nir, SpikingJelly's export_to_nir), or an ImportError naming the extra."""
    try:
        import nir
        import nirtorch  # noqa: F401  (SpikingJelly's exporter needs it)
        from spikingjelly.activation_based.nir_exchange import export_to_nir
    except ImportError as exc:
        raise ImportError(f"NIR export needs nir and nirtorch, and SpikingJelly >= 2.0 (its nir_exchange): "
                          f"{NIR_EXTRA} ({exc})") from None
    return nir, export_to_nir


def _node_targets(step: StepGraph) -> dict[str, str]:
    """{NIR node name: StepGraph target}. SpikingJelly's exporter traces ``step.module`` again with nirtorch;
    fx names a module's node after its target the same way both times."""
    return {n.name: n.target for n in step.module.graph.nodes if n.op == "call_module"}


def to_nir(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike | None = None, *,
           dt: float = 1e-4, on_unsupported: str = "error"):
    """Export ``model`` (prepared by an snn_lats pruner or squashed; single- or multi-step) to a NIR graph.

    The model is not changed: the export works on a squashed, eval-mode deepcopy. One time step of it is
    traced (``snn_lats.export.step_graph``: direct encoding and readout over T left to the simulator,
    BatchNorm folded, max pooling of spikes as OR) and handed to SpikingJelly's exporter, which maps layers to
    ``nir.Conv2d``/``nir.Affine``/``nir.Linear``/``nir.AvgPool2d``/``nir.Flatten`` and neurons to ``nir.IF``
    (r = 1/dt) and ``nir.LIF`` (τ = tau·dt, r = 1 with ``decay_input=True``, τ/dt without; ParametricLIF
    with its learned τ = 1/sigmoid(w), frozen). Residual additions become edges that converge on a node.

    Args:
        model: the network; any ``nn.Module`` whose forward takes one tensor.
        example_input: what the model takes: ``[B, C, H, W]`` (repeated over T by the ``models/`` wrappers),
            ``[T, B, ...]`` for a multi-step network, ``[B, ...]`` for a single-step one.
        path: where to write the graph (NIR's HDF5 format), atomically; nothing is written when the export
            fails.
        dt: the time step in seconds that the neuron time constants are expressed in (NIR's importers read
            them with their own dt: 1e-4 in SpikingJelly and snnTorch).
        on_unsupported: ``"error"`` refuses a neuron setting NIR cannot express (soft reset, a surrogate
            with ``spiking=False``), naming each layer; ``"warn"`` exports NIR's model there (hard reset to 0,
            a step) with a warning naming them.

    Returns:
        The ``nir.NIRGraph``. Each node's ``metadata["module"]`` names the module it comes from; the graph's
        ``metadata`` holds ``dt``, the readout left to the simulator and what the pre-pass did
        (``notes``).

    Raises:
        NIRExportError: every module or operation NIR cannot express, each named, before anything is
            written.
        ImportError: nir/nirtorch are not installed (``pip install snn_lats[nir]``).
    """
    nir, export_to_nir = require_nir()
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("example_input", example_input, torch.Tensor, "a torch.Tensor")
    dt = check_number("dt", dt, above=0)
    if path is not None:
        check_type("path", path, (str, os.PathLike), "a file path")
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"path: folder {folder!r} does not exist")
    step = build_step_graph(model, example_input, on_unsupported=on_unsupported)
    with torch.no_grad():
        graph = export_to_nir(step.module, step.example, dt=dt)
    targets = _node_targets(step)
    unknown = sorted(set(graph.nodes) - set(targets) - {n for n, v in graph.nodes.items()
                                                       if isinstance(v, (nir.Input, nir.Output))})
    if unknown:  # fx named the nodes differently on the second trace: the report would misname layers
        raise RuntimeError(f"internal: NIR nodes {unknown} do not match the traced step graph")
    for name, node in graph.nodes.items():
        if name in targets:
            node.metadata = {**(node.metadata or {}), "module": step.sources[targets[name]]}
    notes = list(step.notes) + _check_nonzeros(model, step, graph, targets)
    graph.metadata = {**(graph.metadata or {}), "exporter": "snn_lats.export.to_nir", "dt": dt,
                      "readout": step.readout or "none", "model": type(model).__name__,
                      "notes": "\n".join(notes)}
    if path is not None:
        write_nir(graph, path)
    return graph


def write_nir(graph, path: str | os.PathLike) -> None:
    """``nir.write`` atomically (:func:`snn_lats.io.atomic_write`): the previous file or the new one, never a
    truncated one."""
    nir, _ = require_nir()
    buffer = io.BytesIO()  # HDF5 reads back while it writes: a write-only temporary file will not do
    nir.write(buffer, graph)
    atomic_write(path, buffer.getvalue())


def _check_nonzeros(model: nn.Module, step: StepGraph, graph: Any, targets: dict[str, str]) -> list[str]:
    """Each exported weight has the model's nonzero count; a difference (a BatchNorm γ of 0 zeroing a
    channel) is warned about and noted."""
    modules = dict(model.named_modules())
    changed = []
    for name, node in graph.nodes.items():
        source = step.weights.get(targets.get(name, ""))
        if source is None or source not in modules:
            continue
        with torch.no_grad():
            expected = int(torch.count_nonzero(deployed_weight(modules[source])))
        exported = int((node.weight != 0).sum())
        if exported != expected:
            changed.append(f"{name} ({source}): {exported} nonzero weights exported, the model has "
                           f"{expected} (BatchNorm folding scaled some to zero)")
    if changed:
        warnings.warn("; ".join(changed), stacklevel=3)
    return changed
