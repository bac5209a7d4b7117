"""Forward+backward time of a multi-step LIF layer: our cupy kernels, our torch backend, SpikingJelly's
fastest.

    python -m experiments.bench_neuron --device cuda          # on a GPU machine with cupy-cuda13x
    python -m experiments.bench_neuron --device cpu --shapes 4,8,64,56,56

SpikingJelly's fastest path is its LIFNode as installed: Triton or native CUDA in 2.x (chosen by the device),
backend='cupy' in 0.0.0.0.14 (a LIFNode taking backend= gets triton, else cupy, else torch, detected by
feature). All variants run interleaved in one process, per dtype (fp32, fp16, bf16) and shape.
Bandwidth: each variant has its bytes model (b = bytes per input element: x, spikes, grad_spikes and
grad_x in the input dtype; h and the per-neuron state v, v0 and their gradients in fp32):
- stored h (``recompute=False``): forward reads x, writes spikes and h; backward reads grad_spikes and h,
  writes grad_x; v0, v_last, grad_v_last, grad_v0 once: T·N·(4·b + 8) + 16·N bytes per forward+backward;
- recompute (``recompute=True``): forward reads x, writes spikes; backward reads grad_spikes and x, writes
  grad_x, and reads v0 again: T·N·5·b + 20·N.
Ours run both, on the cupy backend (CUDA with CuPy) and on the torch backend; SpikingJelly's row uses the
stored-h model as its reference amount of data (its own traffic is not modelled). GB/s is that over the
time; on CUDA also as a fraction of a device-to-device copy measured in the same run and of the GPU's nominal
peak (H200 4.8 TB/s, H100 SXM 3.35 TB/s; another GPU gets no fraction of peak, and says so).
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
from snn_lats.snn import MultiStepLIFNode
from snn_lats.snn.cuda_kernels import cupy_available

DEFAULT_SHAPES = ["4,32,64,56,56", "4,32,128,28,28", "8,16,256,14,14"]


def spikingjelly_fastest() -> tuple[str, neuron.LIFNode]:
    kwargs = dict(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:  # 0.0.0.0.14 (or a later backend=)
        supported = getattr(neuron.LIFNode(step_mode="m"), "supported_backends", ("torch", "cupy"))
        backend = next(b for b in ("triton", "cupy", "torch")
                       if b in supported and (b != "cupy" or cupy_available()) or b == "torch")
        return f"spikingjelly backend={backend}", neuron.LIFNode(backend=backend, **kwargs)
    return "spikingjelly 2.x (auto: native/Triton on GPU)", neuron.LIFNode(**kwargs)


# Nominal HBM bandwidth by GPU name (substring, lower case); an unknown GPU gets no fraction of peak.
PEAK_BANDWIDTH = {"h200": 4.8e12, "h100 sxm": 3.35e12, "h100 80gb hbm3": 3.35e12}


def peak_bandwidth(gpu_name: str) -> float | None:
    name = gpu_name.lower()
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def bytes_moved(shape: tuple[int, ...], element_size: int, recompute: bool = False) -> int:
    """Bytes one forward+backward of the fused kernels moves. Stored h: forward reads x, writes spikes and h
    (fp32); backward reads grad_spikes and h, writes grad_x; plus v0, v_last, grad_v_last, grad_v0 (fp32)
    once: T*N*(4*b + 8) + 16*N. Recompute: forward reads x, writes spikes; backward reads grad_spikes and x,
    writes grad_x; per neuron v0 (twice), v_last, grad_v_last, grad_v0: T*N*5*b + 20*N."""
    t_steps, n = shape[0], math.prod(shape[1:])
    if recompute:
        return t_steps * n * 5 * element_size + 20 * n
    return t_steps * n * (4 * element_size + 8) + 16 * n


def fwd_bwd(node, x, grad):
    x = x.detach().requires_grad_()
    out = node(x)
    out.backward(grad)
    node.reset()


def copy_bandwidth(device, n_bytes=1 << 30) -> float:
    buf = torch.empty(n_bytes // 4, device=device)
    times = [timed(lambda: buf.clone(), device) for _ in range(10)]
    return 2 * n_bytes / statistics.median(times)  # read + write


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="T,B,C,H,W")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                        choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = device_from_args(parser, args.device)
    if args.repeats <= 0:
        parser.error("--repeats must be > 0")
    sj_name, sj_node = spikingjelly_fastest()

    def ours(backend: str, recompute: bool) -> MultiStepLIFNode:
        return MultiStepLIFNode(surrogate_function=surrogate.ATan(), detach_reset=True, backend=backend,
                                recompute=recompute)

    # name: (node, recompute bytes model?)
    variants = {"ours torch": (ours("torch", False), False),
                "ours torch recompute": (ours("torch", True), True), sj_name: (sj_node, False)}
    if device.type == "cuda" and cupy_available():
        variants = {"ours cupy stored-h": (ours("cupy", False), False),
                    "ours cupy recompute": (ours("cupy", True), True), **variants}
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    peak = peak_bandwidth(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        print("unknown GPU: no nominal peak bandwidth, fraction of peak omitted")
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          + (f", measured copy bandwidth {bandwidth / 1e9:.0f} GB/s" if bandwidth else ""))
    rows = []
    for shape_text in args.shapes:
        shape = tuple(int(v) for v in shape_text.split(","))
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            x = (torch.randn(shape, device=device) * 1.5).to(dtype)
            grad = torch.randn_like(x)
            names = list(variants)
            for node, _ in variants.values():  # warm-up (compiles kernels)
                node.to(device)
                fwd_bwd(node, x, grad)
            times = {n: [] for n in names}
            for r in range(args.repeats):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    times[name].append(timed(functools.partial(fwd_bwd, variants[name][0], x, grad), device))
            for name in names:
                moved = bytes_moved(shape, x.element_size(), recompute=variants[name][1])
                ms = statistics.median(times[name]) * 1e3
                row = {"shape": shape_text, "dtype": dtype_name, "variant": name, "ms": ms,
                       "speedup_vs_ours_torch": statistics.median(times["ours torch"]) * 1e3 / ms,
                       "speedup_vs_spikingjelly": statistics.median(times[sj_name]) * 1e3 / ms}
                row["bytes_model"] = "recompute" if variants[name][1] else "stored-h"
                row["bytes_moved"] = moved
                row["gb_per_s"] = moved / (ms / 1e3) / 1e9
                if bandwidth:
                    row["fraction_of_copy_bandwidth"] = moved / (ms / 1e3) / bandwidth
                if peak:
                    row["fraction_of_peak"] = moved / (ms / 1e3) / peak
                rows.append(row)
                extra = f"  {row['gb_per_s']:.1f} GB/s" + (
                    f" ({row['fraction_of_peak']:.0%} of peak)" if "fraction_of_peak" in row else "")
                print(f"{shape_text:>16} {dtype_name:>8} {name:<44} {ms:9.3f} ms  "
                      f"x{row['speedup_vs_ours_torch']:.2f} vs ours-torch  "
                      f"x{row['speedup_vs_spikingjelly']:.2f} vs SJ{extra}", flush=True)
    if args.out:
        atomic_write(args.out, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
