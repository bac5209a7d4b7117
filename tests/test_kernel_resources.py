"""experiments/kernel_resources.py: the occupancy arithmetic against closed forms and a simulation, the
ptxas log parser on real logs of both compilers, and, where NVRTC or nvcc is here, real compiles: one row per
kernel asked for, each row's figures equal to the ptxas lines it was read from, 0 spills for a trivial kernel
and real spills for one starved of registers, the same figures alone and batched, and docs/benchmarks.md's
table equal to what the script makes of the committed rows."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from experiments import kernel_resources as kr
from snn_lats.snn import cuda_kernels
from snn_lats.snn import host_emulation as he

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "kernel_resources_sm90.json.gz"
COMPILER = next((c for c in kr.COMPILERS if kr.compiler_available(c)), None)
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="neither NVRTC (torch's CUDA wheels) nor nvcc "
                                                             "is here to run ptxas")

NVCC_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'spills' for 'sm_90'
ptxas info    : Function properties for spills
    288 bytes stack frame, 324 bytes spill stores, 360 bytes spill loads
ptxas info    : Used 24 registers, used 0 barriers, 288 bytes cumulative stack size
ptxas info    : Compile time = 15.938 ms
ptxas info    : Compiling entry function 'withsmem' for 'sm_90'
ptxas info    : Function properties for withsmem
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 1 barriers, 1200 bytes smem
ptxas info    : Compile time = 5.182 ms
"""
NVRTC_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k_t32' for 'sm_90'
ptxas info    : Function properties for k_t32
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 89 registers, used 0 barriers
ptxas info    : Compile time = 226.637 ms
"""
TRIVIAL = 'extern "C" __global__ void trivial(float* out) { out[threadIdx.x] = 1.0f; }'
# 48 values live at once; with 24 registers ptxas must spill
STARVED = """extern "C" __global__ void starved(float* out, const float* in, long long n) {
  float a[48];
  #pragma unroll
  for (int i = 0; i < 48; ++i) a[i] = in[i * n + threadIdx.x];
  float s = 0.0f;
  #pragma unroll
  for (int i = 0; i < 48; ++i) s = s * a[47 - i] + a[i];
  out[threadIdx.x] = s;
}"""


# --- occupancy ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("registers, blocks", [(16, 8), (32, 8), (33, 6), (40, 6), (41, 5), (48, 5), (49, 4),
                                               (64, 4), (65, 3), (80, 3), (81, 2), (89, 2), (128, 2),
                                               (129, 1), (255, 1), (256, 0)])
def test_blocks_per_sm_at_256_threads_on_sm90(registers, blocks):
    # by hand: registers*32 rounded up to 256 per warp; 16384 per sub-partition -> whole warps, x4, / 8 warps
    # per block, at most 64/8 = 8 blocks; over 255 registers a thread cannot launch
    assert kr.blocks_per_sm(registers, 256, kr.ARCH_LIMITS["sm_90"]) == blocks


def _simulated_blocks(registers: int, block: int) -> int:
    """Place blocks on one sm_90 SM until the next does not fit: each block's warps go round-robin to the 4
    sub-partitions of 16384 registers, at most 64 warps and 32 blocks."""
    per_warp = -(-registers * 32 // 256) * 256
    warps = -(-block // 32)
    if registers > 255 or per_warp * -(-warps // 4) * 4 > 65536:
        return 0
    used, placed = [0, 0, 0, 0], 0
    while True:
        trial = list(used)
        for w in range(warps):
            trial[(placed * warps + w) % 4] += per_warp
        if max(trial) > 16384 or (placed + 1) * warps > 64 or placed + 1 > 32:
            return placed
        used, placed = trial, placed + 1


def test_blocks_per_sm_equals_a_simulation():
    for block in (32, 64, 96, 128, 256, 512, 1024):
        for registers in range(1, 257):
            assert kr.blocks_per_sm(registers, block) == _simulated_blocks(registers, block), \
                (block, registers)


def test_occupancy_table_bands():
    table = kr.occupancy_table()
    bands = ["| 1–32 | 8 | 64 | 100 % |", "| 33–40 | 6 | 48 | 75 % |", "| 41–48 | 5 | 40 | 62.5 % |",
             "| 49–64 | 4 | 32 | 50 % |", "| 65–80 | 3 | 24 | 37.5 % |", "| 81–128 | 2 | 16 | 25 % |",
             "| 129–255 | 1 | 8 | 12.5 % |"]
    assert table.splitlines()[2:] == bands


# --- the ptxas log ------------------------------------------------------------------------------------------

def test_parse_ptxas_reads_both_compilers_logs():
    nvcc = kr.parse_ptxas(NVCC_LOG)
    assert nvcc["spills"] | {"ptxas": None} == {
        "arch": "sm_90", "registers": 24, "stack_frame": 288, "spill_stores": 324, "spill_loads": 360,
        "shared": 0, "barriers": 0, "cumulative_stack": 288, "ptxas": None}
    assert (nvcc["withsmem"]["shared"], nvcc["withsmem"]["barriers"], nvcc["withsmem"]["registers"]) == \
        (1200, 1, 12)
    assert nvcc["spills"]["ptxas"][0].endswith("'spills' for 'sm_90'") and len(nvcc["spills"]["ptxas"]) == 5
    nvrtc = kr.parse_ptxas(NVRTC_LOG)["k_t32"]
    assert [nvrtc[k] for k in ("registers", "stack_frame", "spill_stores", "spill_loads")] == [89, 0, 0, 0]


def test_parse_ptxas_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="no register or stack figures for k_t32"):
        kr.parse_ptxas(NVRTC_LOG.replace("Used 89 registers", "Used registers"))
    with pytest.raises(ValueError, match="reported k_t32 twice"):
        kr.parse_ptxas(NVRTC_LOG + NVRTC_LOG)


def test_select_counts_every_variant():
    everything = kr.select()
    # 5 neurons x 2 resets x 2 detach x 2 surrogates x 3 dtypes x (3 kinds + 32 recompute backward T)
    assert len(everything) == len({k.name for k in everything}) == 5 * 2 * 2 * 2 * 3 * (3 + 32)
    assert {k.config for k in everything} == set(he.COMPARE_CONFIGS)  # the grid the emulation checks
    assert len(kr.select(("lif",), ("hard",), ("detach",), ("atan",), ("float32",), steps=(1, 32))) == 3 + 2


# --- compiling ----------------------------------------------------------------------------------------------

def _refigured(row: dict) -> dict:
    """The figures again, from the ptxas lines the row carries."""
    text = "\n".join(row["ptxas"])
    frame = kr.FRAME.search(text).groups()
    return {"registers": int(re.search(r"Used (\d+) registers", text).group(1)),
            "stack_frame": int(frame[0]), "spill_stores": int(frame[1]), "spill_loads": int(frame[2])}


@needs_compiler
def test_rows_match_the_ptxas_lines_they_came_from():
    kernels = kr.select(("lif", "plif_decay_input"), ("hard",), ("detach",), ("atan",), ("float32",),
                        steps=(1, 4))
    rows = kr.measure(kernels, "sm_90", COMPILER, jobs=2)
    assert len(rows) == len(kernels) == 2 * (3 + 2)
    assert [r["kernel"] for r in rows] == [k.name for k in kernels]
    for row in rows:
        assert {k: row[k] for k in _refigured(row)} == _refigured(row), row["kernel"]
        assert row["ptxas"][0].endswith(f"'{row['kernel']}' for 'sm_90'")
        assert row["blocks_per_sm"] == kr.blocks_per_sm(row["registers"])
        assert row["warps_per_sm"] == 8 * row["blocks_per_sm"]
        assert row["occupancy"] == row["warps_per_sm"] / 64
        assert 0 < row["registers"] <= 255 and row["shared"] == 0
    for row in rows:  # small kernels: nothing spills, nothing in local memory
        assert row["spill_stores"] == row["spill_loads"] == row["stack_frame"] == 0, row["kernel"]


@needs_compiler
def test_a_trivial_kernel_spills_nothing_and_a_starved_one_spills():
    maxreg = "--maxrregcount=24"
    _, log = kr.compile_unit(TRIVIAL + "\n" + STARVED, "sm_90", COMPILER, "probe.cu", (maxreg,))
    figures = kr.parse_ptxas(log)
    assert set(figures) == {"trivial", "starved"}
    trivial, starved = figures["trivial"], figures["starved"]
    assert (trivial["spill_stores"], trivial["spill_loads"], trivial["stack_frame"]) == (0, 0, 0)
    assert trivial["registers"] <= 16
    assert starved["registers"] <= 24 and starved["spill_stores"] > 0 and starved["spill_loads"] > 0
    assert starved["stack_frame"] >= 4  # the spill slots live in the stack frame


@needs_compiler
def test_figures_are_the_same_alone_and_in_a_unit():
    unit = kr.select(("plif",), ("soft",), ("attach",), ("sigmoid",), ("bfloat16",), steps=(2, 8))
    together = {r["kernel"]: r for r in kr.measure(unit, "sm_90", COMPILER, jobs=1)}
    for kernel in unit[::2]:
        alone = kr.parse_ptxas(kr.compile_unit(kernel.source, "sm_90", COMPILER)[1])[kernel.name]
        for key in ("registers", "stack_frame", "spill_stores", "spill_loads", "shared"):
            assert alone[key] == together[kernel.name][key], (kernel.name, key)


@pytest.mark.skipif(not all(kr.compiler_available(c) for c in kr.COMPILERS), reason="needs NVRTC and nvcc")
def test_nvrtc_and_nvcc_agree():
    kernels = kr.select(("lif_decay_input", "plif_decay_input"), ("hard",), ("detach",), ("atan",),
                        ("float16",), ("backward_recompute",), steps=(16,))
    by = {c: kr.measure(kernels, "sm_90", c, jobs=2) for c in kr.COMPILERS}
    for nvrtc, nvcc in zip(by["nvrtc"], by["nvcc"], strict=True):
        assert nvrtc["compiler"].startswith("NVRTC") and nvcc["compiler"].startswith("nvcc")
        assert {k: nvrtc[k] for k in _refigured(nvrtc)} == {k: nvcc[k] for k in _refigured(nvcc)}


@needs_compiler
def test_docs_table_is_the_committed_rows_and_still_the_code():
    """docs/benchmarks.md holds what --from makes of the committed rows; two kernels compiled now fall in the
    committed figures, so a kernel source change that moves them shows here."""
    rows = kr.load_rows(COMMITTED)
    assert len(rows) == len(kr.select())  # every kernel, every T up to RECOMPUTE_MAX_T
    assert (ROOT / "docs" / "benchmarks.md").read_text().count(kr.markdown(rows)) == 1
    committed = {r["kernel"]: r for r in rows}
    now = kr.measure(kr.select(("lif", "plif_decay_input"), ("hard",), ("detach",), ("atan",), ("float32",),
                               ("backward_recompute",), steps=(32,)), "sm_90", COMPILER, jobs=2)
    for row in now:
        assert row["registers"] == committed[row["kernel"]]["registers"], row["kernel"]
        assert row["stack_frame"] == committed[row["kernel"]]["stack_frame"] == 0, row["kernel"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    for argv, message in ((["--steps", "33"], r"T <= 32 \(RECOMPUTE_MAX_T\), got \[33\]"),
                          (["--steps", "0"], "must be >= 1"),
                          (["--arch", "compute_90"], "--arch must be a real architecture"),
                          (["--from", str(tmp_path / "none.json")], "--from .*none.json"),
                          (["--from", str(tmp_path / "none.json"), "--driver"], "takes no --driver")):
        with pytest.raises(SystemExit) as e:
            kr.main(argv)
        assert e.value.code == 2 and re.search(message, capsys.readouterr().err), argv
    if not cuda_kernels.cupy_available():
        with pytest.raises(SystemExit) as e:
            kr.main(["--driver", "--neurons", "if", "--steps", "1"])
        assert e.value.code == 2 and "needs CUDA and CuPy" in capsys.readouterr().err


class _FakeDriver:
    """cupy.cuda.driver's calls that --driver makes, answering from given figures (no GPU)."""

    KEYS = {4: "registers", 3: "stack_frame", 1: "shared", 2: "const"}

    def __init__(self, figures: dict[str, dict], fail: str | None = None):
        self.figures, self.fail, self.loaded = figures, fail, []

    def moduleLoadData(self, image):  # noqa: N802 - CuPy's name
        if self.fail:
            raise RuntimeError(self.fail)
        assert image[:4] == b"\x7fELF"  # the cubin, as compiled
        self.loaded.append(image)
        return len(self.loaded)

    def moduleGetFunction(self, module, name):  # noqa: N802
        return name

    def moduleUnload(self, module):  # noqa: N802
        pass

    def funcGetAttribute(self, attribute, function):  # noqa: N802
        return self.figures[function].get(self.KEYS[attribute], 0)

    def occupancyMaxActiveBlocksPerMultiprocessor(self, function, block, shared):  # noqa: N802
        return kr.blocks_per_sm(self.figures[function]["registers"], block)


def _fake_cupy(monkeypatch, driver):
    cuda = types.SimpleNamespace(driver=driver, Device=lambda i: types.SimpleNamespace(use=lambda: None))
    cupy = types.ModuleType("cupy")
    cupy.cuda, cupy.empty = cuda, lambda n: None
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)

    def built(kind, config, dtype, steps, device):  # the cupy backend's kernel: its handle is its name here
        return types.SimpleNamespace(ptr=cuda_kernels.kernel_name(kind, config, dtype, steps))

    monkeypatch.setattr(cuda_kernels, "_kernel", built)


@needs_compiler
def test_driver_figures_agree_disagree_or_fail_visibly(monkeypatch):
    kernels = kr.select(("if",), ("hard",), ("detach",), ("atan",), ("float32",), steps=(1, 2))
    plain = {r["kernel"]: r for r in kr.measure(kernels, "sm_90", COMPILER, jobs=1)}
    _fake_cupy(monkeypatch, driver := _FakeDriver(plain))
    rows = kr.measure(kernels, "sm_90", COMPILER, jobs=1, driver=True)
    assert len(driver.loaded) == 1  # one (config, dtype): one unit, one cubin
    assert all(r["driver_agrees"] for r in rows) and not kr.failed(rows)
    t2 = next(r for r in rows if r["T"] == 2)  # the largest T: also built the cupy backend's way
    assert t2["cupy_registers"] == t2["driver_registers"] == t2["registers"]
    assert "cupy_registers" not in next(r for r in rows if r["T"] == 1)
    assert "agree with ptxas and this occupancy arithmetic for 5 of 5 kernels" in kr.markdown(rows)

    moved = {name: dict(r, registers=r["registers"] + 8) if r["T"] == 1 else r for name, r in plain.items()}
    _fake_cupy(monkeypatch, _FakeDriver(moved))
    rows = kr.measure(kernels, "sm_90", COMPILER, jobs=1, driver=True)
    assert [r["driver_agrees"] for r in rows] == [r["T"] != 1 for r in rows] and kr.failed(rows)
    assert "**not for** snn_lats_if_hard_detach_atan_float_backward_recompute_t1" in kr.markdown(rows)

    _fake_cupy(monkeypatch, _FakeDriver(plain, fail="no CUDA context"))
    rows = kr.measure(kernels, "sm_90", COMPILER, jobs=1, driver=True)
    assert all(r["driver_error"] == "RuntimeError: no CUDA context" for r in rows) and kr.failed(rows)
    assert rows[0]["registers"] == plain[rows[0]["kernel"]]["registers"]  # ptxas' figures kept
    assert "could not be read**: RuntimeError: no CUDA context" in kr.markdown(rows)
