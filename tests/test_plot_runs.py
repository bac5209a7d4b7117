"""experiments.plot_runs: PNG and markdown table from fixed log.csv files."""
import pytest

from experiments import plot_runs

HEADER = ("epoch,train_loss,val_loss,acc1,acc5,sparsity,threshold,l1_coefficient,band_fraction,firing_rate,"
          "lr,img_per_s,seconds\n")


def test_plot_and_table_from_logs(tmp_path, capsys):
    for name, rows in {"a": [(1, 80.0, 0.5), (2, 85.5, 0.9)], "b": [(1, 70.0, 0.95)]}.items():
        (tmp_path / name).mkdir()
        text = HEADER + "".join(f"{e},0.1,0.1,{acc},99,{sp},0,,,0.05,0.1,100,1\n" for e, acc, sp in rows)
        (tmp_path / name / "log.csv").write_text(text)
    out = tmp_path / "img" / "plot.png"
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "A", "B", "--out", str(out)]
    assert plot_runs.main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out.splitlines()
    assert table[2] == "| A | 2 | 85.50 | 90.0 | 0.0500 |"
    assert table[3] == "| B | 1 | 70.00 | 95.0 | 0.0500 |"
    with pytest.raises(SystemExit):
        plot_runs.main([str(tmp_path / "a"), "--labels", "A", "B", "--out", str(out)])
    with pytest.raises(SystemExit):
        plot_runs.main([str(tmp_path / "missing"), "--out", str(out)])
