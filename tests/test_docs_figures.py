"""The generated figures of README.md and docs/results.md are what experiments.build_docs_figures makes of the
committed files in docs/results/ (no training: it only reads CSVs)."""
import pytest

from experiments import build_docs_figures as docs
from experiments import plot_sweep


def test_readme_and_docs_match_the_committed_results(capsys):
    diffs = docs.differences()
    assert not diffs, "regenerate with python -m experiments.build_docs_figures --write:\n" + "".join(
        diffs.values())
    assert docs.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_every_region_is_used_and_every_input_is_committed():
    used = []
    for doc in docs.DOCS:
        used += docs.rewrite((docs.ROOT / doc).read_text(), doc)[1]
    assert sorted(used) == sorted(docs.REGIONS), "each region appears exactly once in the docs"
    inputs = {c for s in docs.SWEEPS.values() for c in s.csvs} | set(docs.COMPARISON_CSVS)
    inputs |= set(docs.ENERGY_CSVS)
    inputs |= {name for _, name, _ in docs.LTP_RUNS} | {"demo_digits_log.csv", "demo_digits_summary.json",
                                                                   "demo_digits_sparsity.json"}
    missing = sorted(name for name in inputs if not (docs.RESULTS / name).is_file())
    assert not missing, f"not in docs/results/: {missing}"


def test_the_demo_headline_comes_from_its_log():
    text = docs.demo()
    summary = docs.json.loads((docs.RESULTS / "demo_digits_summary.json").read_text())
    assert f"**{summary['acc1']:.2f} % held-out accuracy at {100 * summary['sparsity']:.1f} % weight" in text
    assert f"best: {summary['best_acc1']:.2f} %" in text
    assert (docs.ROOT / "README.md").read_text().count(text) == 1


def test_a_region_is_replaced_indented_and_checked():
    docs.REGIONS["_test"] = lambda: "| a |\n\n| b |"
    try:
        text = "before\n  <!-- generated: _test -->\n  stale\n  <!-- end generated -->\nafter"
        out, names = docs.rewrite(text)
        want = "before\n  <!-- generated: _test -->\n  | a |\n\n  | b |\n  <!-- end generated -->\nafter"
        assert out == want
        assert names == ["_test"] and docs.rewrite(out) == (out, names)  # idempotent
        for bad, message in (("<!-- generated: nope -->\n<!-- end generated -->", "unknown generated region"),
                             ("<!-- generated: _test -->\nx", "has no '<!-- end generated -->'"),
                             ("x\n<!-- end generated -->", "outside a region"),
                             ("<!-- generated: _test -->\n<!-- generated: _test -->\n<!-- end generated -->",
                              "is not closed")):
            with pytest.raises(ValueError, match=message):
                docs.rewrite(bad)
    finally:
        del docs.REGIONS["_test"]


def test_a_contradicted_claim_stops_the_build():
    with pytest.raises(ValueError, match="no longer support the generated claim: x"):
        docs.check(False, "x")


def test_number_formats():
    assert [docs.e_notation(v) for v in (6.48e5, 7e4, 1.4e5, 2.18e6)] == ["6.5e5", "7e4", "1.4e5", "2.2e6"]
    assert docs.e_notation(2.4239e-3, 3) == "2.42e-3" and docs.e_notation(8.08e-4) == "8.1e-4"
    listed = docs.listing([1.26, None, 3.3], (0.8, 0.9, 0.95), " behind")
    assert listed == "1.3 points behind at 80 % and 3.3 at 95 %"
    assert docs.para("a = 1 and 2 %", "  ") == "  a = 1 and 2 %"


def test_plot_sweep_orders_every_method_of_the_pipeline():
    from experiments.methods import METHODS

    assert set(METHODS) <= set(plot_sweep.METHOD_ORDER)
