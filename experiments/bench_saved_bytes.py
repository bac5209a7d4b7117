"""Bytes saved for backward in one SEW ResNet-18 training step (forward + loss), measured on the CPU:
SpikingJelly's own neurons, ours storing h (``recompute=False``), ours recomputing h (``recompute=True``).

    python -m experiments.bench_saved_bytes                                  # batch 2, 64x64 px, full width
    python -m experiments.bench_saved_bytes --markdown                       # + the docs/benchmarks.md tables
    python -m experiments.bench_saved_bytes --batch-size 1 --image-size 16 --width-multiplier 0.125

How it counts. ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves for the backward
(``save_for_backward`` of custom ops and autograd Functions, and the saved variables of built-in ops; a
tensor stashed as a plain ``ctx`` attribute is invisible to it, and the script walks the graph afterwards to
report any such tensor as ``unhooked_bytes``). Tensors are deduplicated by storage
(``untyped_storage().data_ptr()``) and each storage's ``nbytes`` is counted once, whatever its views; the
pack hook keeps the tensor alive, so no address is reused during the forward. Forward pre/post hooks on the
neuron modules (``spikingjelly...neuron.BaseNode``, ours included) mark the tensors saved inside a neuron
layer's forward (our fused node saves in the custom op's ``setup_context``, SpikingJelly's neurons in their
autograd ops, both inside the module's forward). Then, per storage:

- ``neuron_bytes``: storages saved at least once inside a neuron layer (whether or not also saved elsewhere);
- ``shared_bytes``: the part of ``neuron_bytes`` also saved outside neuron layers (e.g. a layer's input that
  the previous layer saved too); ``neuron_only_bytes = neuron_bytes - shared_bytes``;
- ``other_bytes``: storages saved only outside neuron layers (conv/BN/linear activations, weights and, under
  autocast, their bf16 copies); ``parameter_bytes`` is the part of it that is a model parameter's storage;
- ``total_bytes = neuron_bytes + other_bytes`` (every storage once).

``neuron_elements`` is the sum over neuron layers of their input's numel (T x neurons per step);
``neurons`` the same per step (N); ``neuron_bytes_per_element = neuron_bytes / neuron_elements``.
bf16 runs the step under ``torch.autocast("cpu", torch.bfloat16)``. SpikingJelly is checked by feature: a
``LIFNode`` that takes ``backend=`` (0.0.0.0.14) runs with ``backend="torch"`` (the only CPU backend there).
``--markdown`` also prints the bytes-per-element model of the fused kernels and the throughput it implies at
nominal H200 / H100 SXM bandwidth for all neuron elements of a SEW ResNet-18 step (model, not measurement).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron

import models
from snn_lats.io import atomic_write
from snn_lats.snn import use_fused_neurons

VARIANTS = {"spikingjelly": None, "ours stored-h": False, "ours recompute": True}
NEURON_TYPES = ("lif", "plif", "if")
DTYPES = ("float32", "bfloat16")
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12}  # nominal HBM bytes/s


def spikingjelly_flavour() -> str:
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        return "spikingjelly with backend= (0.0.0.0.14-style), backend='torch'"
    return "spikingjelly without backend= (2.x-style)"


def build(neuron_type: str, variant: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", neuron_type=neuron_type, T=args.T, num_classes=10,
                                width_multiplier=args.width_multiplier)
    if VARIANTS[variant] is not None:
        report = use_fused_neurons(model, backend="torch", recompute=VARIANTS[variant])
        if report.unsupported:
            raise RuntimeError(f"neurons not swapped: {report.unsupported}")
    return model.train()


class SavedTensorCounter:
    """Pack hook + neuron-module hooks: per storage, its bytes and whether it was saved inside a neuron
    layer, outside one, or both; and the neuron layers' input sizes."""

    def __init__(self, model: torch.nn.Module, T: int):  # noqa: N803
        self.T = T
        self.depth = 0
        self.storages: dict[int, list] = {}  # data_ptr -> [nbytes, saved inside a neuron?, saved outside?]
        self.neuron_elements = 0
        self.neurons = 0
        self.neuron_layers = 0
        self.neuron_input_bytes: set[int] = set()  # element sizes of the neuron inputs
        self.parameter_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.handles = []
        for m in model.modules():
            if isinstance(m, neuron.BaseNode):
                self.handles.append(m.register_forward_pre_hook(self._enter))
                self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module, inputs):
        if self.depth == 0:
            x = inputs[0]
            self.neuron_elements += x.numel()
            self.neurons += x.numel() // self.T if x.shape[0] == self.T else x.numel()
            self.neuron_layers += 1
            self.neuron_input_bytes.add(x.element_size())
        self.depth += 1

    def _leave(self, module, inputs, output):
        self.depth -= 1

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        entry = self.storages.setdefault(storage.data_ptr(), [0, False, False])
        entry[0] = max(entry[0], storage.nbytes())
        entry[1 if self.depth else 2] = True
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def summary(self) -> dict:
        neuron_bytes = sum(n for n, inside, _ in self.storages.values() if inside)
        shared = sum(n for n, inside, outside in self.storages.values() if inside and outside)
        other = sum(n for n, inside, _ in self.storages.values() if not inside)
        params = sum(n for p, (n, inside, _) in self.storages.items()
                     if not inside and p in self.parameter_ptrs)
        return {"total_bytes": neuron_bytes + other, "neuron_bytes": neuron_bytes, "shared_bytes": shared,
                "neuron_only_bytes": neuron_bytes - shared, "other_bytes": other, "parameter_bytes": params,
                "saved_storages": len(self.storages), "neuron_layers": self.neuron_layers,
                "neurons": self.neurons, "neuron_elements": self.neuron_elements,
                "neuron_input_element_bytes": sorted(self.neuron_input_bytes),
                "neuron_bytes_per_element": neuron_bytes / max(self.neuron_elements, 1)}


def unhooked_bytes(loss: torch.Tensor, hooked: set[int]) -> int:
    """Bytes of tensors held as plain attributes of autograd Function contexts in the graph (invisible to the
    pack hook), not counted among the hooked storages."""
    seen, stack, found = set(), [loss.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for value in getattr(node, "__dict__", {}).values():
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() not in hooked:
                found[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        stack.extend(n for n, _ in node.next_functions)
    return sum(found.values())


def saved_bytes(model: torch.nn.Module, dtype: str, args, backward: bool = False) -> dict:
    """The saved-tensor summary of one forward + loss of ``model``; ``backward``: then run the backward
    through the saved graph (a check that it is a working one; not part of the count)."""
    torch.manual_seed(1)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 10, (args.batch_size,))
    counter = SavedTensorCounter(model, args.T)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack), autocast:
            loss = F.cross_entropy(model(x), y)
    finally:
        counter.remove()
    summary = {**counter.summary(), "unhooked_bytes": unhooked_bytes(loss, set(counter.storages))}
    if backward:
        loss.backward()
    functional.reset_net(model)
    return summary


def measure(neuron_type: str, variant: str, dtype: str, args, backward: bool = False) -> dict:
    return {"neuron_type": neuron_type, "variant": variant, "dtype": dtype, "T": args.T,
            "batch_size": args.batch_size, "image_size": args.image_size,
            "width_multiplier": args.width_multiplier,
            **saved_bytes(build(neuron_type, variant, args), dtype, args, backward)}


def count_neurons(T: int, image_size: int, batch_size: int) -> tuple[int, int]:  # noqa: N803
    """(neurons per step N, neuron elements T*N) of the full-width SEW ResNet-18 (ImageNet stem, 1000
    classes) at this size and batch: one forward of shapes only (meta tensors, our fused nodes' fake
    kernel), no arithmetic."""
    model = models.create_model("sew_resnet18", neuron_type="lif", T=T, num_classes=1000)
    use_fused_neurons(model, backend="torch")
    model.to("meta")
    counter = SavedTensorCounter(model, T)
    with torch.no_grad():
        model(torch.zeros(batch_size, 3, image_size, image_size, device="meta"))
    counter.remove()
    return counter.neurons, counter.neuron_elements


def kernel_model(b: int, plif: bool) -> dict[str, tuple[int, int]]:
    """Bytes moved per neuron element and per neuron by each fused kernel (b = bytes per x element):
    {kernel: (per element, per neuron)}; see docs/benchmarks.md."""
    stored_fwd = (2 * b + 4, 8)  # read x, write spikes, write h (fp32); read v0, write v_last
    stored_bwd = (2 * b + 4, 8)  # read grad_spikes, read h, write grad_x; read grad_v_last, write grad_v0
    rec_fwd = (2 * b, 8)  # read x, write spikes; read v0, write v_last
    rec_bwd = (3 * b, 12)  # read grad_spikes, x, write grad_x; read v0, grad_v_last, write grad_v0
    if plif:  # the stored-h backward also reads x and v0; both backwards write a per-neuron share of dL/dk
        stored_bwd = (stored_bwd[0] + b, stored_bwd[1] + 4 + 4)
        rec_bwd = (rec_bwd[0], rec_bwd[1] + 4)
    return {"stored-h fwd": stored_fwd, "stored-h bwd": stored_bwd,
            "recompute fwd": rec_fwd, "recompute bwd": rec_bwd}


def markdown(rows: list[dict], args, model_neurons: tuple[int, int], command: str) -> str:
    def mib(n):
        return f"{n / 2**20:.2f}"

    out = [f"Measured on CPU: `{command}` (SEW ResNet-18, T={args.T}, batch {args.batch_size}, "
           f"{args.image_size}x{args.image_size} px, width x{args.width_multiplier}; "
           f"{spikingjelly_flavour()}; ours on the torch backend, which saves what the CUDA kernels save).",
           "", "| neuron | dtype | variant | total saved MiB | neuron-layer saved MiB "
           "| shared with other layers MiB | other layers MiB (of which parameter storages) "
           "| neuron elements | neuron bytes / element |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['neuron_type']} | {r['dtype']} | {r['variant']} | {mib(r['total_bytes'])} | "
                   f"{mib(r['neuron_bytes'])} | {mib(r['shared_bytes'])} | {mib(r['other_bytes'])} "
                   f"({mib(r['parameter_bytes'])}) | "
                   f"{r['neuron_elements']:,} | {r['neuron_bytes_per_element']:.3f} |")
    n, elements = model_neurons
    t = elements // n
    out += ["", "**Model, not a measurement** (no GPU has run these kernels): bytes each fused kernel "
            "moves, and what that implies at nominal peak bandwidth for all neuron elements of one SEW "
            f"ResNet-18 step at T={t}, batch 32, 224x224 px: N = {n:,} neurons per step, T*N = {elements:,} "
            "neuron elements (counted from the full-width model by this script). "
            "ms = (T*N*bytes/element + N*bytes/neuron) / bandwidth; Gelem/s = T*N / that time.",
            "", "| neuron | dtype | kernel | bytes / element | bytes / neuron | H200 Gelem/s | H200 ms "
            "| H100 SXM Gelem/s | H100 SXM ms |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for plif in (False, True):
        for dtype, b in (("fp32", 4), ("fp16/bf16", 2)):
            kernels = kernel_model(b, plif)
            for variant in ("stored-h", "recompute"):
                fwd, bwd = kernels[f"{variant} fwd"], kernels[f"{variant} bwd"]
                kernels[f"{variant} fwd+bwd"] = (fwd[0] + bwd[0], fwd[1] + bwd[1])
            for name in ("stored-h fwd", "stored-h bwd", "stored-h fwd+bwd", "recompute fwd", "recompute bwd",
                         "recompute fwd+bwd"):
                per_el, per_n = kernels[name]
                moved = elements * per_el + n * per_n
                cells = []
                for bw in PEAK_BANDWIDTH.values():
                    cells += [f"{elements / (moved / bw) / 1e9:.0f}", f"{moved / bw * 1e3:.3f}"]
                out.append(f"| {'PLIF' if plif else 'LIF/IF'} | {dtype} | {name} | {per_el} | {per_n} | "
                           + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--neurons", nargs="+", default=["lif", "plif"], choices=NEURON_TYPES)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--backward", action="store_true",
                        help="also run each step's backward (checks the graph; slow for bf16 on CPU)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the docs/benchmarks.md tables (measured, and the kernel bytes model)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.image_size, args.T) <= 0 or args.width_multiplier <= 0:
        parser.error("--batch-size, --image-size, --T and --width-multiplier must be > 0")
    print(f"{spikingjelly_flavour()}; torch {torch.__version__}")
    rows = []
    for neuron_type in args.neurons:
        for dtype in args.dtypes:
            for variant in args.variants:
                try:
                    row = measure(neuron_type, variant, dtype, args, args.backward)
                except RuntimeError as exc:  # e.g. an op without a bf16 CPU kernel in this torch
                    if dtype == "float32":
                        raise
                    print(f"{neuron_type} {dtype} {variant}: skipped, bf16 autocast failed on CPU: {exc}")
                    continue
                rows.append(row)
                mib = {k: row[k] / 2**20 for k in ("total_bytes", "neuron_bytes", "shared_bytes",
                                                   "other_bytes")}
                print(f"{neuron_type:>5} {dtype:>9} {variant:<15} total {mib['total_bytes']:9.2f} MiB  "
                      f"neurons {mib['neuron_bytes']:8.2f} MiB (shared {mib['shared_bytes']:.2f})  "
                      f"other {mib['other_bytes']:8.2f} MiB  "
                      f"{row['neuron_bytes_per_element']:.3f} B/elem of {row['neuron_elements']:,}"
                      + (f"  unhooked {row['unhooked_bytes']:,} B" if row["unhooked_bytes"] else ""),
                      flush=True)
    if args.markdown:
        shown = [a if " " not in a else repr(a) for a in (sys.argv[1:] if argv is None else argv)
                 if a != "--markdown"]
        command = " ".join(["python -m experiments.bench_saved_bytes", *shown, "--markdown"])
        print()
        print(markdown(rows, args, count_neurons(args.T, 224, 32), command))
    if args.out:
        atomic_write(args.out, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
