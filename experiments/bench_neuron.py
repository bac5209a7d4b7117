"""Forward+backward time of a multi-step LIF and PLIF layer: our cupy kernels, our torch backend,
SpikingJelly's fastest, side by side.

    python -m experiments.bench_neuron --device cuda          # on a GPU machine with cupy-cuda13x
    python -m experiments.bench_neuron --device cpu --shapes 4,8,64,56,56 --neuron plif

Neurons (``--neuron``, default both): LIF (τ=2) and PLIF (k = sigmoid(w), init_tau=2), decay_input, hard
reset, ATan, detach_reset; ours are MultiStepLIFNode / MultiStepParametricLIFNode. SpikingJelly's fastest
path is its LIFNode / ParametricLIFNode as installed: in 2.x its own CUDA selection (native CUDA if built,
else Triton: the row names the one it took), backend='cupy' in 0.0.0.0.14 (a node taking backend= gets
triton, else cupy, else torch, detected by feature). All variants of one neuron run interleaved in one
process, per shape and dtype (fp32, fp16, bf16), and each row's speed-ups compare it with that neuron's own
torch backend and SpikingJelly rows. Rows are written after each (neuron, shape, dtype), so a run cut off
keeps what it measured.

Bandwidth: each variant has its bytes model (``bytes_moved``; b = bytes per input element: x, spikes,
grad_spikes and grad_x in the input dtype; h and the per-neuron state v0, v_last and their gradients fp32):
- LIF stored h (``recompute=False``): forward reads x, writes spikes and h; backward reads grad_spikes and h,
  writes grad_x; v0, v_last, grad_v_last, grad_v0 once: T·N·(4·b + 8) + 16·N bytes per forward+backward;
- LIF recompute (``recompute=True``): forward reads x, writes spikes; backward reads grad_spikes and x,
  writes grad_x, and reads v0 again: T·N·5·b + 20·N.
- PLIF adds the leak's traffic: each kernel reads k (4 bytes), the backward writes each neuron's share of
  dL/dk (4·N) and the op sums them (reads 4·N): 8·N + 8 more than LIF, in both variants; the stored-h
  backward also reads v0 (V[t-1] at t = 0: 4·N) and, with decay_input (dL/dk needs X[t]), x again (T·N·b):
  stored h T·N·(5·b + 8) + 28·N + 8, recompute T·N·5·b + 28·N + 8.
Ours run both, on the cupy backend (CUDA with CuPy) and on the torch backend; SpikingJelly's row uses the
stored-h model as its reference amount of data (its own traffic is not modelled). GB/s is that over the
time; on CUDA also as a fraction of a device-to-device copy measured in the same run and of the GPU's nominal
peak (H200 4.8 TB/s, H100 SXM 3.35 TB/s; another GPU gets no fraction of peak, and says so). Not modelled:
the scalar kernels around PLIF's k (sigmoid(w) forward and backward, the sum's 4-byte result), whose cost is
launch latency, not bytes.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import statistics
from pathlib import Path

import torch
from spikingjelly.activation_based import neuron, surrogate

from experiments.timing import device_from_args, timed
from snn_lats.io import atomic_write
from snn_lats.snn import MultiStepLIFNode, MultiStepParametricLIFNode
from snn_lats.snn.cuda_kernels import cupy_available

DEFAULT_SHAPES = ["4,32,64,56,56", "4,32,128,28,28", "8,16,256,14,14"]
NEURONS = ("lif", "plif")
SJ_NODES = {"lif": ("LIFNode", {"tau": 2.0}), "plif": ("ParametricLIFNode", {"init_tau": 2.0})}
SJ_AUTO = "spikingjelly 2.x"


def spikingjelly_fastest(kind: str = "lif") -> tuple[str, neuron.BaseNode]:
    """(label, node): SpikingJelly's LIFNode or ParametricLIFNode on its fastest path."""
    cls_name, leak = SJ_NODES[kind]
    cls = getattr(neuron, cls_name)
    kwargs = dict(leak, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    if "backend" in inspect.signature(cls.__init__).parameters:  # 0.0.0.0.14 (or a later backend=)
        supported = getattr(cls(step_mode="m"), "supported_backends", ("torch", "cupy"))
        backend = next(b for b in ("triton", "cupy", "torch")
                       if b in supported and (b != "cupy" or cupy_available()) or b == "torch")
        return f"spikingjelly backend={backend}", cls(backend=backend, **kwargs)
    return SJ_AUTO, cls(**kwargs)


def spikingjelly_implementation(kind: str, device: torch.device) -> str:
    """Which implementation SpikingJelly 2.x's own selection took for ``kind`` on ``device`` (after a call):
    its CPU op, or the CUDA one it chose (native "cuda", "triton" or "torch"); "unknown" if this
    SpikingJelly does not say."""
    if device.type != "cuda":
        return "cpu op"
    try:  # spikingjelly._ops.<lif|plif>._selection: private, so read defensively
        import importlib

        selection = importlib.import_module(f"spikingjelly._ops.{kind}")._selection
        chosen = selection._selections.get(device.index or 0) or next(iter(selection._selections.values()))
        return chosen.name
    except Exception:  # noqa: BLE001 - another SpikingJelly version: say so rather than guess
        return "unknown"


# Nominal HBM bandwidth by GPU name (substring, lower case); an unknown GPU gets no fraction of peak.
PEAK_BANDWIDTH = {"h200": 4.8e12, "h100 sxm": 3.35e12, "h100 80gb hbm3": 3.35e12}


def peak_bandwidth(gpu_name: str) -> float | None:
    name = gpu_name.lower()
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def bytes_moved(shape: tuple[int, ...], element_size: int, recompute: bool = False, neuron: str = "lif",
                decay_input: bool = True) -> int:
    """Bytes one forward+backward of the fused kernels moves. LIF stored h: forward reads x, writes spikes and
    h (fp32); backward reads grad_spikes and h, writes grad_x; plus v0, v_last, grad_v_last, grad_v0 (fp32)
    once: T*N*(4*b + 8) + 16*N. LIF recompute: forward reads x, writes spikes; backward reads grad_spikes and
    x, writes grad_x; per neuron v0 (twice), v_last, grad_v_last, grad_v0: T*N*5*b + 20*N. PLIF: + k read by
    both kernels (8), the per-neuron dL/dk shares written and summed (8*N); its stored-h backward also reads
    v0 (4*N) and, with ``decay_input``, x (T*N*b)."""
    t_steps, n = shape[0], math.prod(shape[1:])
    if recompute:
        moved = t_steps * n * 5 * element_size + 20 * n
    else:
        moved = t_steps * n * (4 * element_size + 8) + 16 * n
    if neuron == "plif":
        moved += 8 * n + 8
        if not recompute:
            moved += 4 * n + (t_steps * n * element_size if decay_input else 0)
    elif neuron != "lif":
        raise ValueError(f"neuron must be 'lif' or 'plif', got {neuron!r}")
    return moved


def fwd_bwd(node, x, grad):
    x = x.detach().requires_grad_()
    out = node(x)
    out.backward(grad)
    node.reset()


def copy_bandwidth(device, n_bytes=1 << 30) -> float:
    buf = torch.empty(n_bytes // 4, device=device)
    times = [timed(lambda: buf.clone(), device) for _ in range(10)]
    return 2 * n_bytes / statistics.median(times)  # read + write


def ours(kind: str, backend: str, recompute: bool) -> MultiStepLIFNode | MultiStepParametricLIFNode:
    if kind == "plif":
        return MultiStepParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                          detach_reset=True, backend=backend, recompute=recompute)
    return MultiStepLIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, backend=backend,
                            recompute=recompute)


def variants(kind: str, device: torch.device) -> dict[str, tuple]:
    """name -> (node, recompute bytes model?); SpikingJelly's under the name "spikingjelly"."""
    sj_label, sj_node = spikingjelly_fastest(kind)
    found = {"ours torch": (ours(kind, "torch", False), False),
             "ours torch recompute": (ours(kind, "torch", True), True), "spikingjelly": (sj_node, False)}
    if device.type == "cuda" and cupy_available():
        found = {"ours cupy stored-h": (ours(kind, "cupy", False), False),
                 "ours cupy recompute": (ours(kind, "cupy", True), True), **found}
    found["spikingjelly"] += (sj_label,)
    return found


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--neuron", nargs="+", choices=NEURONS, default=list(NEURONS),
                        help="the neurons to time (default both), each against its SpikingJelly counterpart")
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="T,B,C,H,W")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                        choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = device_from_args(parser, args.device)
    if args.repeats <= 0:
        parser.error("--repeats must be > 0")
    shapes = []
    for text in args.shapes:
        try:
            shapes.append((text, tuple(int(v) for v in text.split(","))))
        except ValueError:
            parser.error(f"--shapes: {text!r} is not comma-separated integers T,B,C,H,W")
        if len(shapes[-1][1]) < 2 or min(shapes[-1][1]) < 1:
            parser.error(f"--shapes: {text!r} needs T and at least one neuron dimension, all >= 1")
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    peak = peak_bandwidth(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        print("unknown GPU: no nominal peak bandwidth, fraction of peak omitted")
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          + (f", measured copy bandwidth {bandwidth / 1e9:.0f} GB/s" if bandwidth else ""))
    rows = []
    for kind in dict.fromkeys(args.neuron):
        nodes = variants(kind, device)
        names = list(nodes)
        for shape_text, shape in shapes:
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                x = (torch.randn(shape, device=device) * 1.5).to(dtype)
                grad = torch.randn_like(x)
                for node, *_ in nodes.values():  # warm-up (compiles kernels)
                    node.to(device)
                    fwd_bwd(node, x, grad)
                sj_name = nodes["spikingjelly"][2]
                if sj_name == SJ_AUTO:
                    sj_name += f" ({spikingjelly_implementation(kind, device)})"
                times = {n: [] for n in names}
                for r in range(args.repeats):
                    for name in names[r % len(names):] + names[: r % len(names)]:
                        times[name].append(timed(functools.partial(fwd_bwd, nodes[name][0], x, grad), device))
                ms_of = {name: statistics.median(times[name]) * 1e3 for name in names}
                for name in names:
                    recompute = nodes[name][1]
                    moved = bytes_moved(shape, x.element_size(), recompute=recompute, neuron=kind)
                    ms = ms_of[name]
                    row = {"neuron": kind, "shape": shape_text, "dtype": dtype_name,
                           "variant": sj_name if name == "spikingjelly" else name, "ms": ms,
                           "speedup_vs_ours_torch": ms_of["ours torch"] / ms,
                           "speedup_vs_spikingjelly": ms_of["spikingjelly"] / ms,
                           "bytes_model": f"{kind} {'recompute' if recompute else 'stored-h'}",
                           "bytes_moved": moved, "gb_per_s": moved / (ms / 1e3) / 1e9}
                    if bandwidth:
                        row["fraction_of_copy_bandwidth"] = moved / (ms / 1e3) / bandwidth
                    if peak:
                        row["fraction_of_peak"] = moved / (ms / 1e3) / peak
                    rows.append(row)
                    extra = f"  {row['gb_per_s']:.1f} GB/s" + (
                        f" ({row['fraction_of_peak']:.0%} of peak)" if "fraction_of_peak" in row else "")
                    print(f"{kind:>4} {shape_text:>16} {dtype_name:>8} {row['variant']:<40} {ms:9.3f} ms  "
                          f"x{row['speedup_vs_ours_torch']:.2f} vs ours-torch  "
                          f"x{row['speedup_vs_spikingjelly']:.2f} vs SJ{extra}", flush=True)
                if args.out:  # after each (neuron, shape, dtype): a run cut off keeps its rows
                    atomic_write(args.out, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
