"""How the CUDA kernel sources, run on the CPU (``snn_lats.snn.host_emulation``: compiled unmodified with
g++), differ from the torch backend (``reference.TorchMultiStep``): the figures of docs/snn.md's "CUDA
kernels on the CPU" table.

    python -m experiments.kernel_emulation                        # tests/test_kernel_emulation.py's grid
    python -m experiments.kernel_emulation --json emulation.json  # + every run's figures
    python -m experiments.kernel_emulation --neurons lif --dtypes float32 --shapes 5,257  # a smaller grid

The grid is ``host_emulation``'s (the one the test checks): ``COMPARE_CONFIGS`` (IF, LIF, LIF decay_input,
PLIF, PLIF decay_input x hard/soft reset x detach/attach x ATan/Sigmoid) x fp32/fp16/bf16 x ``COMPARE_SHAPES``
(T in 1, 5; N in 1, 257, 1000) x both backward variants (stored h, recompute), each run on the seed the test
uses (``compare_seed``). Each run is ``host_emulation.compare_with_reference``. The table gives, per dtype,
the total spike mismatches and the largest difference over all runs: v_last's max abs diff, the gradients'
max abs diff (grad_x / grad_v0, and / grad_k when PLIF configs ran) per surrogate, and for Sigmoid the same
in float32 ulps of the reference tensor's largest |entry| (grad_k: of the sum of |per-neuron partials|). A
nonzero fp16/bf16 grad_x diff is followed by its largest per-entry size in ulps of that dtype at the entry.
"identical" means zero difference in every run. It also says whether the stored-h and recompute backward
gave bit-identical outputs in every run. Exit 2 when no host C++ compiler can build the shim.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from snn_lats.io import atomic_write
from snn_lats.snn import cuda_kernels
from snn_lats.snn import host_emulation as he

DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHORT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
SURROGATES = ("atan", "sigmoid")


def _neuron(c) -> str:
    return next(name for name, (tau, decay, parametric) in he.COMPARE_NEURONS.items()
                if (c.tau, c.decay_input, c.parametric) == (tau, decay, parametric))


def select_configs(neurons, surrogates) -> list:
    return [c for c in he.COMPARE_CONFIGS if _neuron(c) in neurons and c.surrogate in surrogates]


def parse_shape(text: str) -> tuple[int, int]:
    try:
        T, N = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not T,N") from None
    if not 1 <= T <= cuda_kernels.RECOMPUTE_MAX_T or N < 1:
        raise argparse.ArgumentTypeError(
            f"shape {text!r}: need 1 <= T <= {cuda_kernels.RECOMPUTE_MAX_T} and N >= 1")
    return T, N


def _number(value: float) -> str:
    return "0" if value == 0 else f"{value:.2g}"


def _cell(parts: list[str], values: list[float]) -> str:
    return "identical" if all(v == 0 for v in values) else " / ".join(parts)


def summarize(runs: list[dict], dtype: torch.dtype, plif: bool) -> dict:
    """Per-dtype totals/maxima over ``runs`` (the dicts of ``compare_with_reference`` plus their labels)."""
    mine = [r for r in runs if r["dtype"] == str(dtype)]
    out = {"runs": len(mine), "spike_mismatches": sum(r["spike_mismatches"] for r in mine),
           "v_abs": max((r["v_abs"] for r in mine), default=0.0)}
    keys = ["gx_abs", "gv_abs", "gx_ulps", "gv_ulps", "gx_dtype_ulps"]
    keys += ["gk_abs", "gk_ulps"] if plif else []
    for sg in SURROGATES:
        chosen = [r for r in mine if r["surrogate"] == sg]
        out[sg] = None if not chosen else {k: max(r.get(k, 0.0) for r in chosen) for k in keys}
    return out


def markdown_table(summary: dict, plif: bool) -> str:
    dtypes = list(summary)
    names = "grad_x / grad_v0" + (" / grad_k" if plif else "")
    rows = {"spikes": [], "v_last": [], "grads, ATan: max abs diff": [],
            f"grads, Sigmoid: max abs diff ({names})": [],
            f"… in float32 ulps of the tensor's largest entry ({names})": []}
    labels = list(rows)
    for dtype in dtypes:
        s = summary[dtype]
        mismatches = s["spike_mismatches"]
        rows["spikes"].append("identical" if mismatches == 0 else f"{mismatches} differ")
        rows["v_last"].append(_cell([_number(s["v_abs"])], [s["v_abs"]]))
        abs_keys = ["gx_abs", "gv_abs"] + (["gk_abs"] if plif else [])
        ulp_keys = ["gx_ulps", "gv_ulps"] + (["gk_ulps"] if plif else [])
        for label, sg, keys in ((labels[2], "atan", abs_keys), (labels[3], "sigmoid", abs_keys),
                                (labels[4], "sigmoid", ulp_keys)):
            g = s[sg]
            if g is None:
                rows[label].append("not run")
                continue
            parts = [_number(g[k]) for k in keys]
            if keys is abs_keys and dtype != "float32" and g["gx_abs"] > 0:
                parts[0] += f" ({_number(g['gx_dtype_ulps'])} {SHORT[DTYPE_NAMES[dtype]]} ulp)"
            rows[label].append(_cell(parts, [g[k] for k in keys]))
    lines = ["| | " + " | ".join(SHORT[DTYPE_NAMES[d]] for d in dtypes) + " |",
             "|---|" + "---|" * len(dtypes)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    neurons = list(he.COMPARE_NEURONS)
    parser.add_argument("--neurons", nargs="+", default=neurons, choices=neurons)
    parser.add_argument("--surrogates", nargs="+", default=list(SURROGATES), choices=list(SURROGATES))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPE_NAMES),
                        default=[n for n, d in DTYPE_NAMES.items() if d in he.COMPARE_DTYPES])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=list(he.COMPARE_SHAPES),
                        metavar="T,N")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write every run's figures and the table here (JSON)")
    args = parser.parse_args(argv)
    available, reason = he.host_compiler_available()
    if not available:
        print(f"kernel_emulation: no host C++ compiler can build the CUDA shim ({reason}); nothing measured",
              file=sys.stderr)
        raise SystemExit(2)
    configs = select_configs(args.neurons, args.surrogates)
    dtypes = [DTYPE_NAMES[d] for d in dict.fromkeys(args.dtypes)]
    shapes = list(dict.fromkeys(args.shapes))
    plif = any(c.parametric for c in configs)
    start = time.perf_counter()
    he.precompile_neuron_kernels(configs, dtypes=[cuda_kernels.DTYPES[d] for d in dtypes],
                                 steps=sorted({T for T, _ in shapes}))
    runs, differing = [], []
    for dtype in dtypes:
        for c in configs:
            for T, N in shapes:
                pair = []
                for recompute in (False, True):
                    r = he.compare_with_reference(c, dtype, T, N, seed=he.compare_seed(T, N),
                                                  recompute=recompute)
                    pair.append(r.pop("outputs"))
                    del r["reference"]
                    runs.append(dict(config=he.config_id(c), surrogate=c.surrogate, dtype=str(dtype), T=T,
                                     N=N, recompute=recompute, **r))
                if not all(torch.equal(a, b) for a, b in zip(*pair, strict=True)):
                    differing.append(f"{he.config_id(c)} {SHORT[dtype]} T={T} N={N}")
        print(f"{SHORT[dtype]}: {len(configs) * len(shapes) * 2} runs done "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    summary = {name: summarize(runs, DTYPE_NAMES[name], plif) for name in dict.fromkeys(args.dtypes)}
    table = markdown_table(summary, plif)
    identical = not differing
    print(table)
    print()
    print(f"{len(runs)} runs: {len(configs)} configs x {len(dtypes)} dtypes x {len(shapes)} shapes (T,N) "
          f"{' '.join(f'{T},{N}' for T, N in shapes)} x 2 backward variants (stored h, recompute).")
    print("stored-h and recompute bit-identical in every run: "
          + ("yes" if identical else f"NO, {len(differing)} differ: {', '.join(differing)}"))
    command = ["python -m experiments.kernel_emulation", *(sys.argv[1:] if argv is None else argv)]
    result = {"command": " ".join(command),
              "configs": [he.config_id(c) for c in configs], "dtypes": [SHORT[d] for d in dtypes],
              "shapes": shapes, "runs": runs, "summary": summary, "table": table,
              "stored_h_recompute_bit_identical": identical, "differing_variants": differing,
              "seconds": time.perf_counter() - start}
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
