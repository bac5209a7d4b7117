"""Round trips of exported NIR graphs: the model's own spikes against those of the graph imported by
SpikingJelly, snnTorch or Norse (code nobody here wrote), step by step, neuron layer by neuron layer.

``reference(model, x, T)`` runs the model (a copy) once, recording every neuron layer's and max pool's output
per time step. ``imported(framework, graph, inputs)`` runs the graph as a framework imports it, one step per
input, recording its neuron nodes' spikes. ``compare`` checks them equal, exactly, and the graph's output
averaged over steps against the model's output.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

FRAMEWORKS = ("spikingjelly", "snntorch", "norse")


def is_multi_step(model: nn.Module) -> bool:
    return any(getattr(m, "step_mode", "s") == "m" for m in model.modules())


@torch.no_grad()
def reference(model: nn.Module, x: torch.Tensor, steps: int):
    """({module name: [its output at each step]} for neurons and max pools, the model's output). A
    multi-step model runs once on ``x``; a single-step one ``steps`` times on it (its output: the steps'
    outputs stacked, ``[steps, ...]``)."""
    twin = copy.deepcopy(model).eval()
    records: dict[str, list[torch.Tensor]] = {}
    multi = is_multi_step(twin)

    def hook(name):
        def record(module, inputs, output):
            if multi and x.dim() == 5 and x.shape[0] != x.shape[0] * x.shape[1] == output.shape[0]:
                output = output.reshape(*x.shape[:2], *output.shape[1:])  # [T*B, ...] in a SeqToANNContainer
            records.setdefault(name, []).extend(output.unbind(0) if multi else [output])
        return record

    for name, m in twin.named_modules():
        if isinstance(m, (neuron.BaseNode, nn.MaxPool2d)):
            m.register_forward_hook(hook(name))
    functional.reset_net(twin)
    if multi:
        out = twin(x)
    else:
        out = torch.stack([twin(x) for _ in range(steps)])
    return records, out


def _neuron_nodes(graph) -> dict[str, str]:
    """{NIR neuron node: the model module it stands for} (a max pool for the OR neurons)."""
    import nir

    out = {}
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            module = node.metadata["module"]
            module = module.decode() if isinstance(module, bytes) else str(module)
            out[name] = module.split(" (max pooling as OR)")[0]
    return out


def _load(framework: str, graph, dt: float):
    if framework == "spikingjelly":
        from spikingjelly.activation_based.nir_exchange import import_from_nir

        return import_from_nir(graph, dt=dt)
    if framework == "snntorch":
        from snntorch.import_nir import import_from_nir

        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per LIF node
            return import_from_nir(copy.deepcopy(graph))
    if framework == "norse":
        import norse.torch

        logging.getLogger().disabled = True  # it logs a warning per IF node (r != 1, which it ignores)
        try:
            return norse.torch.from_nir(graph, dt=dt, ignore_warnings=True)
        finally:
            logging.getLogger().disabled = False
    raise ValueError(framework)


@torch.no_grad()
def imported(framework: str, graph, inputs: list[torch.Tensor], dt: float = 1e-4):
    """({neuron node: [spikes per step]}, [graph output per step]) of ``graph`` imported by ``framework``."""
    net = _load(framework, graph, dt)
    names = _neuron_nodes(graph)
    records: dict[str, list[torch.Tensor]] = {}
    modules = dict(net.named_modules())

    def hook(name):
        def record(module, args, output):
            records.setdefault(name, []).append(output[0] if isinstance(output, tuple) else output)
        return record

    for name in names:
        modules[name].register_forward_hook(hook(name))
    outputs, state = [], None
    for x in inputs:
        if framework == "snntorch":  # hidden state inside the modules (init_hidden=True)
            out = net(x)
            out = out[0] if isinstance(out, tuple) else out
        else:
            out, state = net(x, state)
        outputs.append(out)
    return records, outputs


def as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def compare(graph, model_records, model_output, records, outputs, *, rtol=1e-5, atol=1e-6) -> list[str]:
    """What differs: each neuron node whose spikes differ at some step (shapes compared after reshaping:
    snnTorch and Norse drop the batch dimension at nir.Flatten), and the output: the graph's per-step outputs
    put through the readout the export left to the simulator (graph.metadata["readout"]) against the
    model's output."""
    problems = []
    for name, module in _neuron_nodes(graph).items():
        ref, got = model_records[module], records.get(name, [])
        if len(got) != len(ref):
            problems.append(f"{name}: {len(got)} steps recorded, the model has {len(ref)}")
            continue
        for t, (a, b) in enumerate(zip(ref, got, strict=True)):
            if a.numel() != b.numel() or not torch.equal(a.float(), b.reshape(a.shape).float()):
                problems.append(f"{name} ({module}): spikes differ at step {t}")
                break
    readout = as_text(graph.metadata.get("readout", "none"))
    steps = torch.stack([o.reshape(-1) for o in outputs])
    if readout == "none":
        got = steps.reshape(model_output.shape)
    else:
        got = (steps.mean(0) if readout == "mean over T" else steps.sum(0)).reshape(model_output.shape)
    if not torch.allclose(got, model_output, rtol=rtol, atol=atol):
        problems.append(f"output: max |difference| {float((got - model_output).abs().max()):.3g}")
    return problems


def spike_count(records: dict[str, list[torch.Tensor]]) -> int:
    return int(sum(float(t.sum()) for steps in records.values() for t in steps))
