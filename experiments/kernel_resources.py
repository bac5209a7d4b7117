"""Registers, spills, local and shared memory of every fused-neuron CUDA kernel, as ptxas reports them: a
compile-time property, so no GPU is needed.

    python -m experiments.kernel_resources --markdown        # every kernel, sm_90, NVRTC (minutes on 2 cores)
    python -m experiments.kernel_resources --compiler nvcc --out runs/kernel_resources.json
    python -m experiments.kernel_resources --neurons lif plif --dtypes float32 --steps 32 --markdown
    python -m experiments.kernel_resources --from docs/kernel_resources_sm90.json.gz --markdown  # no compile
    python3 -m experiments.kernel_resources --driver ...     # on a GPU: and what the driver says

Every kernel ``snn_lats.snn.cuda_kernels.source(kind, config, dtype, steps)`` generates, over
``host_emulation.COMPARE_CONFIGS`` (IF, LIF, LIF decay_input, PLIF, PLIF decay_input x hard/soft reset x
detach/attach x ATan/Sigmoid) x fp32/fp16/bf16 x the four kinds (forward, backward: stored h;
forward_recompute, backward_recompute: one kernel per T, ``--steps``). The kernels of one (config, dtype)
are compiled as one translation unit with the options the cupy backend uses (``--fmad=false``) and
``-Xptxas -v``, for a real architecture (``--arch``, default sm_90: H100 and H200), by NVRTC (what CuPy
compiles with; the library torch's CUDA wheels ship) or nvcc. One row per kernel: registers per thread,
spill stores and loads, stack frame (per-thread local memory: spills, and arrays ptxas could not keep in
registers), static shared memory, barriers, the ptxas lines they were read from, and the occupancy those
registers allow at the launch block of ``cuda_kernels.BLOCK`` threads: resident blocks and warps per SM by
cuda_occupancy.h's rules (registers are allocated per warp in units of 256, in each of 4 sub-partitions; an
sm_80/sm_90 SM holds 65536 registers, 64 warps, 32 blocks). The kernels use no shared memory; were one to,
its occupancy is left to the driver (omitted).

``--driver`` (CUDA and CuPy) also loads each compiled cubin on the GPU and reads what the driver reports
(``cuFuncGetAttribute``: registers, local, shared and constant bytes;
``cuOccupancyMaxActiveBlocksPerMultiprocessor`` at BLOCK threads) and, for the largest T of each neuron (its
first variant asked for), the kernel as the cupy backend builds it (``cuda_kernels._kernel``: CuPy's own
NVRTC compile, one kernel at a time, so only these): the ptxas figures and this script's occupancy
arithmetic checked against the device. ``driver_agrees`` is False in a row where any of them differs,
``driver_error`` says why the driver could not be asked; either makes the command exit 1 (after writing
every row).

``--markdown`` prints a summary: per kernel kind and T (rows) and neuron (columns), the registers' range over
the reset/detach/surrogate/dtype variants and the occupancy at the most, and whether any kernel spills or
uses local or shared memory, naming each one that does. ``--out`` writes every row as JSON (gzip-compressed,
reproducibly, where the name ends in .gz: docs/kernel_resources_sm90.json.gz is the full table's).
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from snn_lats.io import atomic_write
from snn_lats.snn import cuda_kernels
from snn_lats.snn import host_emulation as he
from snn_lats.snn.reference import NeuronConfig

NEURONS = tuple(he.COMPARE_NEURONS)  # if, lif, lif_decay_input, plif, plif_decay_input
RESETS = {"hard": 0.0, "soft": None}
DETACH = {"detach": True, "attach": False}
SURROGATES = ("atan", "sigmoid")
DTYPES = {"float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}
DEFAULT_STEPS = tuple(range(1, cuda_kernels.RECOMPUTE_MAX_T + 1))
COMPILERS = ("nvrtc", "nvcc")


@dataclasses.dataclass(frozen=True)
class SMLimits:
    """What bounds resident blocks per SM (CUDA C++ Programming Guide, compute capabilities table;
    cuda_occupancy.h for the allocation rules)."""

    registers: int = 65536  # per SM, and at most per block
    max_registers_per_thread: int = 255
    register_unit: int = 256  # registers are allocated per warp in multiples of this
    sub_partitions: int = 4  # each holds a quarter of the registers; a warp's registers sit in one
    max_warps: int = 64
    max_blocks: int = 32
    warp: int = 32


ARCH_LIMITS = {"sm_80": SMLimits(), "sm_90": SMLimits(), "sm_90a": SMLimits()}


def blocks_per_sm(registers: int, block: int = cuda_kernels.BLOCK, limits: SMLimits = SMLimits()) -> int:
    """Resident blocks of ``block`` threads per SM for a kernel of ``registers`` registers per thread and no
    shared memory, as cuda_occupancy.h computes it: 0 if one block cannot launch."""
    warps_per_block = -(-block // limits.warp)
    per_warp = -(-registers * limits.warp // limits.register_unit) * limits.register_unit
    # the hardware checks a block's registers as if its warps were spread over every sub-partition
    per_block_checked = per_warp * -(-warps_per_block // limits.sub_partitions) * limits.sub_partitions
    if registers > limits.max_registers_per_thread or per_block_checked > limits.registers:
        return 0
    warps_by_registers = limits.registers // limits.sub_partitions // per_warp * limits.sub_partitions
    return min(warps_by_registers // warps_per_block, limits.max_warps // warps_per_block, limits.max_blocks)


@dataclasses.dataclass(frozen=True)
class Kernel:
    neuron: str
    reset: str
    detach: str
    surrogate: str
    dtype: str
    kind: str
    steps: int | None  # T, for backward_recompute

    @property
    def config(self) -> NeuronConfig:
        tau, decay_input, parametric = he.COMPARE_NEURONS[self.neuron]
        return NeuronConfig(tau=tau, decay_input=decay_input, v_threshold=1.0, v_reset=RESETS[self.reset],
                            detach_reset=DETACH[self.detach], surrogate=self.surrogate,
                            alpha=4.0 if self.surrogate == "sigmoid" else 2.0, parametric=parametric)

    @property
    def name(self) -> str:
        return cuda_kernels.kernel_name(self.kind, self.config, DTYPES[self.dtype], self.steps)

    @property
    def source(self) -> str:
        return cuda_kernels.source(self.kind, self.config, DTYPES[self.dtype], self.steps)


def select(neurons=NEURONS, resets=tuple(RESETS), detach=tuple(DETACH), surrogates=SURROGATES,
           dtypes=tuple(DTYPES), kinds=cuda_kernels.KINDS, steps=DEFAULT_STEPS) -> list[Kernel]:
    """One Kernel per combination; backward_recompute once per T in ``steps``."""
    kernels = []
    for neuron, reset, det, sg, dtype, kind in itertools.product(neurons, resets, detach, surrogates, dtypes,
                                                                 kinds):
        for t in (steps if kind == "backward_recompute" else (None,)):
            kernels.append(Kernel(neuron, reset, det, sg, dtype, kind, t))
    return kernels


def compiler_version(compiler: str) -> str:
    if compiler == "nvrtc":
        return "NVRTC {}.{}".format(*cuda_kernels.nvrtc_version())
    out = subprocess.run([_nvcc(), "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"release [\d.]+, V([\d.]+)", out)
    return f"nvcc {found.group(1) if found else '(unknown version)'}"


def _nvcc() -> str:
    return shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


def compiler_available(compiler: str) -> bool:
    if compiler == "nvrtc":
        return cuda_kernels.nvrtc_available()
    return shutil.which("nvcc") is not None or os.access("/usr/local/cuda/bin/nvcc", os.X_OK)


def compile_unit(source: str, arch: str, compiler: str, name: str = "unit.cu",
                 options: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """(cubin, ptxas -v log) of one translation unit; RuntimeError with the log if it does not compile."""
    if compiler == "nvrtc":
        cubin, log = cuda_kernels.nvrtc_compile(source, name, arch, ("-Xptxas", "-v", *options))
        return cubin, log
    with tempfile.TemporaryDirectory(prefix="snn_lats_ptxas_") as tmp:
        src, out = Path(tmp) / name, Path(tmp) / "unit.cubin"
        src.write_text(source)
        argv = [_nvcc(), "-cubin", f"-arch={arch}", "--fmad=false", "-Xptxas", "-v", *options, "-o", str(out),
                str(src)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed to compile {name}:\n{log}")
        return out.read_bytes(), log


ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>[^']+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
FIGURES = {"barriers": re.compile(r"used (\d+) barriers"), "shared": re.compile(r"(\d+) bytes smem"),
           "cumulative_stack": re.compile(r"(\d+) bytes cumulative stack size")}


def parse_ptxas(log: str) -> dict[str, dict]:
    """Per entry function of a ``ptxas -v`` log: registers, stack_frame, spill_stores, spill_loads, shared,
    barriers, cumulative_stack (0 where ptxas prints nothing), arch, and the lines they were read from.
    ValueError for an entry whose register or stack figures are missing."""
    entries: dict[str, dict] = {}
    current = properties_of = None
    for line in log.splitlines():
        if found := ENTRY.search(line):
            current = found.group("name")
            if current in entries:
                raise ValueError(f"ptxas reported {current} twice")
            entries[current] = {"arch": found.group("arch"), "shared": 0, "barriers": 0,
                                "cumulative_stack": 0, "ptxas": [line.strip()]}
            continue
        if current is None or not line.startswith("ptxas") and not FRAME.search(line):
            continue
        entry = entries[current]
        entry["ptxas"].append(line.strip())
        if "Function properties for " in line:  # the frame line after it is this function's
            properties_of = line.split("Function properties for ", 1)[1].strip()
        if (found := FRAME.search(line)) and properties_of == current:
            entry["stack_frame"], entry["spill_stores"], entry["spill_loads"] = map(int, found.groups())
        if found := USED.search(line):
            entry["registers"] = int(found.group(1))
            for key, pattern in FIGURES.items():
                if found := pattern.search(line):
                    entry[key] = int(found.group(1))
        if "Compile time" in line:
            current = None
    for name, entry in entries.items():
        if "registers" not in entry or "stack_frame" not in entry:
            raise ValueError(f"ptxas gave no register or stack figures for {name}:\n"
                             + "\n".join(entry["ptxas"]))
    return entries


def _unit_name(kernel: Kernel) -> str:
    return f"{he.config_id(kernel.config)}_{kernel.dtype}.cu"


def measure(kernels: list[Kernel], arch: str = "sm_90", compiler: str = "nvrtc", jobs: int | None = None,
            driver: bool = False, options: tuple[str, ...] = ()) -> list[dict]:
    """One row per kernel, in ``kernels``' order. The kernels of one (config, dtype) share a translation
    unit; units compile in ``jobs`` threads. RuntimeError if ptxas reports a kernel not asked for or misses
    one."""
    units: dict[str, list[Kernel]] = {}
    for k in kernels:
        units.setdefault(_unit_name(k), []).append(k)
    if len({k.name for k in kernels}) != len(kernels):
        raise ValueError("a kernel was asked for twice")

    def build(item):
        name, members = item
        return compile_unit("\n".join(k.source for k in members), arch, compiler, name, options)

    with ThreadPoolExecutor(max(1, jobs or os.cpu_count() or 1)) as pool:
        built = dict(zip(units, pool.map(build, units.items()), strict=True))
    version, limits = compiler_version(compiler), ARCH_LIMITS.get(arch)
    figures: dict[str, dict] = {}
    for unit, (_, log) in built.items():
        parsed = parse_ptxas(log)
        asked = {k.name for k in units[unit]}
        if set(parsed) != asked:
            raise RuntimeError(f"ptxas reported {sorted(set(parsed) - asked)} not asked for and missed "
                               f"{sorted(asked - set(parsed))} in {unit}")
        figures.update(parsed)
    rows = []
    for k in kernels:
        f = figures[k.name]
        row = {"kernel": k.name, "neuron": k.neuron, "reset": k.reset, "detach": k.detach,
               "surrogate": k.surrogate, "dtype": k.dtype, "kind": k.kind, "T": k.steps, "arch": f["arch"],
               "compiler": version, "registers": f["registers"], "spill_stores": f["spill_stores"],
               "spill_loads": f["spill_loads"], "stack_frame": f["stack_frame"], "shared": f["shared"],
               "barriers": f["barriers"], "block": cuda_kernels.BLOCK}
        if limits is not None and f["shared"] == 0:
            blocks = blocks_per_sm(f["registers"], cuda_kernels.BLOCK, limits)
            warps = blocks * -(-cuda_kernels.BLOCK // limits.warp)
            row.update(blocks_per_sm=blocks, warps_per_sm=warps, occupancy=warps / limits.max_warps)
        row["ptxas"] = f["ptxas"]
        rows.append(row)
    if driver:
        try:
            _driver_figures(rows, kernels, {u: built[u][0] for u in units}, units)
        except Exception as e:  # noqa: BLE001 - keep ptxas' figures; the error is the driver's finding
            for row in rows:
                row["driver_error"] = f"{type(e).__name__}: {e}"
    return rows


# --- on a GPU: what the driver reports --------------------------------------------------------------------

DRIVER_ATTRIBUTES = {"driver_registers": ("CU_FUNC_ATTRIBUTE_NUM_REGS", 4),
                     "driver_local_bytes": ("CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES", 3),
                     "driver_shared_bytes": ("CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES", 1),
                     "driver_const_bytes": ("CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES", 2)}


def device_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def _function_figures(driver, function: int) -> dict:
    out = {key: driver.funcGetAttribute(getattr(driver, name, number), function)
           for key, (name, number) in DRIVER_ATTRIBUTES.items()}
    out["driver_blocks_per_sm"] = driver.occupancyMaxActiveBlocksPerMultiprocessor(function,
                                                                                  cuda_kernels.BLOCK, 0)
    return out


def _driver_figures(rows: list[dict], kernels: list[Kernel], cubins: dict[str, bytes],
                    units: dict[str, list[Kernel]]) -> None:
    """Adds the driver's figures for each row's kernel loaded from the cubin just compiled, and, for the
    largest T of each neuron, ``cupy_*`` figures of the kernel as the cupy backend builds it."""
    import cupy
    from cupy.cuda import driver

    cupy.cuda.Device(0).use()
    cupy.empty(1)  # a context for the module loads
    by_name = {r["kernel"]: r for r in rows}
    for unit, members in units.items():
        module = driver.moduleLoadData(cubins[unit])
        try:
            for k in members:
                by_name[k.name].update(_function_figures(driver, driver.moduleGetFunction(module, k.name)))
        finally:
            driver.moduleUnload(module)
    largest: dict[str, Kernel] = {}  # the first variant at the largest T, per neuron
    for k in kernels:
        if k.kind == "backward_recompute" and (k.neuron not in largest or k.steps > largest[k.neuron].steps):
            largest[k.neuron] = k
    for k in largest.values():
        function = cuda_kernels._kernel(k.kind, k.config, DTYPES[k.dtype], k.steps, 0)
        figures = _function_figures(driver, function.ptr)
        by_name[k.name].update({"cupy" + key[len("driver"):]: v for key, v in figures.items()})
    for row in rows:
        checks = [row["registers"] == row["driver_registers"], row["shared"] == row["driver_shared_bytes"],
                  row["stack_frame"] == row["driver_local_bytes"]]
        if "blocks_per_sm" in row:
            checks.append(row["blocks_per_sm"] == row["driver_blocks_per_sm"])
        if "cupy_registers" in row:
            checks += [row["cupy_registers"] == row["driver_registers"],
                       row["cupy_local_bytes"] == row["driver_local_bytes"]]
        row["driver_agrees"] = all(checks)


# --- the summary ------------------------------------------------------------------------------------------

def _kernel_label(kind: str, steps: int | None) -> str:
    return {"forward": "forward, stored h", "backward": "backward, stored h",
            "forward_recompute": "forward, recompute"}.get(kind, f"backward, recompute, T={steps}")


def _percent(x: float) -> str:
    return f"{100 * x:.1f}".rstrip("0").rstrip(".") + " %"


def first_step_above(rows: list[dict], neuron: str, registers: int) -> int | None:
    """The smallest T whose recompute backward of ``neuron`` uses more than ``registers`` registers in some
    variant (rows as measured)."""
    steps = sorted({r["T"] for r in rows if r["neuron"] == neuron and r["kind"] == "backward_recompute"
                    and r["registers"] > registers})
    return steps[0] if steps else None


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no kernels)"
    neurons = [n for n in NEURONS if any(r["neuron"] == n for r in rows)]
    kinds = sorted({(r["kind"], r["T"]) for r in rows},
                   key=lambda kt: (cuda_kernels.KINDS.index(kt[0]), kt[1] or 0))
    dtypes = sorted({r["dtype"] for r in rows}, key=list(DTYPES).index)
    variants = len({(r["reset"], r["detach"], r["surrogate"], r["dtype"]) for r in rows})
    lines = [f"{len(rows)} kernels, {rows[0]['compiler']} for {rows[0]['arch']} (`-Xptxas -v`, "
             f"`--fmad=false`), block {rows[0]['block']} threads. Each cell: registers per thread, "
             f"least-most over the {variants} reset x detach x surrogate x dtype variants "
             f"({', '.join(dtypes)}), then the occupancy at the most (resident warps / 64 per SM).", "",
             "| kernel | " + " | ".join(neurons) + " |", "|---|" + "---|" * len(neurons)]
    for kind, steps in kinds:
        cells = []
        for n in neurons:
            sel = [r for r in rows if r["neuron"] == n and r["kind"] == kind and r["T"] == steps]
            if not sel:
                cells.append("")
                continue
            low, high = min(r["registers"] for r in sel), max(r["registers"] for r in sel)
            worst = max(sel, key=lambda r: r["registers"])
            occupancy = f" · {_percent(worst['occupancy'])}" if "occupancy" in worst else ""
            stack = max(r["stack_frame"] for r in sel)
            cells.append((f"{low}" if low == high else f"{low}–{high}") + occupancy
                         + (f" · **{stack} B stack**" if stack else ""))
        lines.append(f"| {_kernel_label(kind, steps)} | " + " | ".join(cells) + " |")
    lines.append("")
    for key, what in (("spill_stores", "spill stores"), ("spill_loads", "spill loads"),
                      ("stack_frame", "stack frame (local memory)"), ("shared", "shared memory")):
        bad = [r for r in rows if r[key]]
        if not bad:
            lines.append(f"- {what}: 0 bytes in every kernel.")
        else:
            named = ", ".join(f"{r['kernel']} ({r[key]} B)" for r in bad[:12])
            lines.append(f"- {what}: **nonzero in {len(bad)} of {len(rows)} kernels**: {named}"
                         + (" ..." if len(bad) > 12 else ""))
    recompute = [r for r in rows if r["kind"] == "backward_recompute"]
    if recompute:
        most = max(recompute, key=lambda r: r["registers"])
        lines.append(f"- most registers: {most['registers']} ({most['kernel']})"
                     + (f", {most['blocks_per_sm']} blocks = {most['warps_per_sm']} warps per SM, occupancy "
                        f"{_percent(most['occupancy'])}." if "occupancy" in most else "."))
        for limit in (32, 64, 128):
            firsts = {n: first_step_above(rows, n, limit) for n in neurons}
            said = ", ".join(f"{n} T={t}" for n, t in firsts.items() if t is not None) or "no kernel measured"
            lines.append(f"- recompute backward above {limit} registers per thread from: {said}.")
    if errors := sorted({r["driver_error"] for r in rows if "driver_error" in r}):
        lines.append(f"- **the driver's figures could not be read**: {'; '.join(errors)}.")
    if any("driver_agrees" in r for r in rows):
        disagree = [r["kernel"] for r in rows if not r.get("driver_agrees", True)]
        lines.append(f"- the driver's figures agree with ptxas and this occupancy arithmetic for "
                     f"{len(rows) - len(disagree)} of {len(rows)} kernels"
                     + (f"; **not for** {', '.join(disagree[:12])}" if disagree else "") + ".")
    return "\n".join(lines)


def occupancy_table(limits: SMLimits = SMLimits(), block: int = cuda_kernels.BLOCK) -> str:
    """Registers per thread -> resident blocks, warps and occupancy at ``block`` threads, at each step."""
    lines = ["| registers per thread | blocks / SM | warps / SM | occupancy |", "|---|---|---|---|"]
    low = 1
    for registers in range(1, limits.max_registers_per_thread + 1):
        blocks = blocks_per_sm(registers, block, limits)
        last = registers == limits.max_registers_per_thread
        if last or blocks_per_sm(registers + 1, block, limits) != blocks:
            warps = blocks * -(-block // limits.warp)
            lines.append(f"| {low}–{registers} | {blocks} | {warps} | {_percent(warps / limits.max_warps)} |")
            low = registers + 1
    return "\n".join(lines)


def save_rows(path: Path, rows: list[dict]) -> None:
    text = json.dumps(rows, indent=1)
    atomic_write(path, gzip.compress(text.encode(), mtime=0) if path.suffix == ".gz" else text)


def load_rows(path: Path) -> list[dict]:
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sm_90", help="a real architecture, sm_XY (default sm_90)")
    parser.add_argument("--compiler", choices=COMPILERS, default=None,
                        help="default: nvrtc where torch's CUDA wheels ship it, else nvcc")
    parser.add_argument("--neurons", nargs="+", choices=NEURONS, default=list(NEURONS))
    parser.add_argument("--resets", nargs="+", choices=tuple(RESETS), default=list(RESETS))
    parser.add_argument("--detach", nargs="+", choices=tuple(DETACH), default=list(DETACH))
    parser.add_argument("--surrogates", nargs="+", choices=SURROGATES, default=list(SURROGATES))
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    parser.add_argument("--kinds", nargs="+", choices=cuda_kernels.KINDS, default=list(cuda_kernels.KINDS))
    parser.add_argument("--steps", nargs="+", type=_positive, default=list(DEFAULT_STEPS),
                        help=f"T of the recompute backward (1..{cuda_kernels.RECOMPUTE_MAX_T}; default all)")
    parser.add_argument("--jobs", type=_positive, default=None, help="compiling threads (default: CPU count)")
    parser.add_argument("--driver", action="store_true",
                        help="on a GPU (CUDA and CuPy): also the driver's figures of each kernel there")
    parser.add_argument("--from", dest="from_json", type=Path, default=None,
                        help="summarise these rows (a previous --out) instead of compiling")
    parser.add_argument("--markdown", action="store_true", help="print the summary as Markdown")
    parser.add_argument("--out", type=Path, default=None, help="write every row here as JSON")
    args = parser.parse_args(argv)
    if bad := sorted(t for t in args.steps if t > cuda_kernels.RECOMPUTE_MAX_T):
        parser.error(f"--steps: the recompute backward takes T <= {cuda_kernels.RECOMPUTE_MAX_T} "
                     f"(RECOMPUTE_MAX_T), got {bad}")
    if not re.fullmatch(r"sm_\d+a?", args.arch):
        parser.error(f"--arch must be a real architecture like sm_90, got {args.arch!r}")
    if args.from_json is not None:
        if args.driver:
            parser.error("--from summarises saved rows: it takes no --driver")
        try:
            rows = load_rows(args.from_json)
        except (OSError, ValueError, EOFError) as e:
            parser.error(f"--from {args.from_json}: {e}")
        print(markdown(rows) if args.markdown else f"{len(rows)} rows from {args.from_json}")
        return rows
    if args.driver:
        if not cuda_kernels.cupy_available():
            print("kernel_resources --driver needs CUDA and CuPy with a GPU", file=sys.stderr)
            sys.exit(2)
        if device_arch() != args.arch.rstrip("a"):
            parser.error(f"--driver: the GPU is {device_arch()}, not --arch {args.arch}")
    compiler = args.compiler or ("nvrtc" if compiler_available("nvrtc") else "nvcc")
    if not compiler_available(compiler):
        print(f"kernel_resources: {compiler} is not available here (NVRTC comes with torch's CUDA wheels, "
              "nvcc with the CUDA toolkit)", file=sys.stderr)
        sys.exit(2)
    if args.arch not in ARCH_LIMITS:
        print(f"no SM limits for {args.arch} here ({', '.join(ARCH_LIMITS)}): occupancy omitted")
    kernels = select(args.neurons, args.resets, args.detach, args.surrogates, args.dtypes, args.kinds,
                     sorted(set(args.steps)))
    rows = measure(kernels, args.arch, compiler, args.jobs, args.driver)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_rows(args.out, rows)
    print(markdown(rows) if args.markdown else
          "\n".join(f"{r['kernel']}: {r['registers']} registers, {r['spill_stores']}/{r['spill_loads']} B "
                    f"spill stores/loads, {r['stack_frame']} B stack, {r['shared']} B shared" for r in rows))
    return rows


def failed(rows: list[dict]) -> bool:
    """True where --driver could not read a kernel or disagrees with ptxas: the command then exits 1."""
    return any("driver_error" in r or r.get("driver_agrees") is False for r in rows)


if __name__ == "__main__":
    sys.exit(1 if failed(main()) else 0)
