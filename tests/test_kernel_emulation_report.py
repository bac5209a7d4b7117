"""experiments/kernel_emulation.py on a reduced grid: the markdown table has its five rows and one column
per dtype, ATan (and spikes, v_last) say identical, the summary lines and the JSON agree with the runs; and
without a host compiler it says so and exits 2."""
from __future__ import annotations

import json

import pytest

from experiments import kernel_emulation
from snn_lats.snn import host_emulation as he

AVAILABLE, REASON = he.host_compiler_available()
ARGV = ["--neurons", "plif", "--dtypes", "float32", "bfloat16", "--shapes", "5,257", "1,1"]


@pytest.mark.skipif(not AVAILABLE, reason=f"no host C++ compiler for the CUDA shim: {REASON}")
def test_reduced_grid_prints_the_table(tmp_path, capsys):
    out = tmp_path / "emulation.json"
    try:
        result = kernel_emulation.main([*ARGV, "--json", str(out)])
    finally:
        he.clear_neuron_kernels()
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| | fp32 | bf16 |" and table[1] == "|---|---|---|"
    cells = [line.split(" | ") for line in table[2:]]
    rows = {parts[0][2:]: [cell.strip(" |") for cell in parts[1:]] for parts in cells}
    names = "(grad_x / grad_v0 / grad_k)"
    assert list(rows) == ["spikes", "v_last", "grads, ATan: max abs diff",
                          f"grads, Sigmoid: max abs diff {names}",
                          f"… in float32 ulps of the tensor's largest entry {names}"]
    assert all(len(cells) == 2 for cells in rows.values())
    for label in ("spikes", "v_last", "grads, ATan: max abs diff"):
        assert rows[label] == ["identical", "identical"], label
    for label in list(rows)[3:]:
        assert all(cell == "identical" or len(cell.split(" / ")) == 3 for cell in rows[label]), rows[label]
    n_runs = 8 * 2 * 2 * 2  # PLIF configs x dtypes x shapes x backward variants
    assert f"{n_runs} runs: 8 configs x 2 dtypes x 2 shapes" in printed
    assert "stored-h and recompute bit-identical in every run: yes" in printed
    saved = json.loads(out.read_text())
    assert saved["table"] == "\n".join(table) == result["table"]
    assert len(saved["runs"]) == n_runs and saved["stored_h_recompute_bit_identical"] is True
    plif = {he.config_id(c) for c in he.COMPARE_CONFIGS if c.parametric and not c.decay_input}
    assert {r["config"] for r in saved["runs"]} == plif
    # the sigmoid figures stay within the test's bound (tests/test_kernel_emulation.py: 8 ulps of the scale)
    fp32 = [r for r in saved["runs"] if r["dtype"] == "torch.float32"]
    assert fp32 and all(r["gx_ulps"] <= 8 and r["gv_ulps"] <= 8 for r in fp32)


def test_without_a_host_compiler_it_says_so_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(he, "host_compiler_available", lambda: (False, "no C++ compiler (test)"))
    with pytest.raises(SystemExit) as exit_info:
        kernel_emulation.main(ARGV)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "no host C++ compiler" in captured.err and "no C++ compiler (test)" in captured.err
    assert captured.out == ""


def test_bad_shape_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        kernel_emulation.main(["--shapes", "0,5"])
    assert exit_info.value.code == 2
    assert "need 1 <= T" in capsys.readouterr().err
