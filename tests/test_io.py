"""snn_lats.io.atomic_write / atomic_save, and the writers that go through them (metrics reports, trails,
sweep results): a complete new file or the previous one, never a truncated one, no temporary file left."""
import csv
import importlib
import json
import os

import pytest
import torch

import snn_lats.io
from snn_lats.io import atomic_save, atomic_write
from snn_lats.metrics import MetricsReport
from snn_lats.trail import Trail, read_trail


class WriterFailed(Exception):
    pass


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("data, expected", [(b"\x00bytes\xff", b"\x00bytes\xff"),
                                            ("text é\n", "text é\n".encode()),
                                            (lambda f: f.write(b"from a callable"), b"from a callable")])
def test_each_form_writes_exactly_its_data(tmp_path, data, expected):
    target = tmp_path / "out.bin"
    atomic_write(target, data)
    assert target.read_bytes() == expected
    assert _files(tmp_path) == ["out.bin"]
    atomic_write(os.fspath(target), b"replaced")  # a str path too, over an existing file
    assert target.read_bytes() == b"replaced"


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text('{"complete": true}')

    def half_then_fail(f):
        f.write(b'{"comple')
        raise WriterFailed

    with pytest.raises(WriterFailed):
        atomic_write(target, half_then_fail)
    assert target.read_text() == '{"complete": true}'
    assert _files(tmp_path) == ["out.json"]


def test_a_failing_writer_with_no_previous_file_leaves_nothing(tmp_path):
    def fail(f):
        f.write(b"partial")
        raise WriterFailed

    with pytest.raises(WriterFailed):
        atomic_write(tmp_path / "new.bin", fail)
    assert _files(tmp_path) == []


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(snn_lats.io.os, "fsync", fsync)
    monkeypatch.setattr(snn_lats.io.os, "replace", replace)
    target = tmp_path / "out.txt"
    atomic_write(target, "12345")
    assert events == [("fsync", 5), ("replace", os.fspath(target))]  # the full data is on disk first


def test_a_failed_rename_removes_the_temporary(tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(snn_lats.io.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "out.txt", "data")
    assert _files(tmp_path) == []


def test_atomic_save_round_trips_through_torch_load(tmp_path):
    obj = {"w": torch.arange(6.0).view(2, 3), "step": 3}
    atomic_save(obj, tmp_path / "ckpt.pth")
    loaded = torch.load(tmp_path / "ckpt.pth")
    assert torch.equal(loaded["w"], obj["w"]) and loaded["step"] == 3
    assert _files(tmp_path) == ["ckpt.pth"]


# --- the writers that use it --------------------------------------------------------------------------------

def _report() -> MetricsReport:
    total = {"type": "total", "sops": 1.5, "macs": 2.0, "coverage": {"weights": 1.0, "macs": 0.5}}
    return MetricsReport(layers={"fc": {"type": "linear", "sops": 1.5, "macs": 2.0}}, total=total,
                         notes=["n"])


def _failing_write(monkeypatch, module):
    """Make ``module``'s atomic_write fail inside the writer, after part of the data is written."""
    def write(path, data):
        def partial(f):
            f.write(b"trunc")
            raise WriterFailed
        return atomic_write(path, partial)

    monkeypatch.setattr(module, "atomic_write", write)


def test_metrics_report_json_and_csv_are_atomic(tmp_path, monkeypatch):
    measure_module = importlib.import_module("snn_lats.metrics.measure")  # the package's name is the function
    report = _report()
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    assert json.loads((tmp_path / "r.json").read_text()) == report.to_dict()
    assert (tmp_path / "r.csv").read_bytes().count(b"\r\n") == 3  # csv's line ends, as open(newline="")
    rows = list(csv.DictReader((tmp_path / "r.csv").open(newline="")))
    assert [(r["layer"], r["sops"], r["mac_coverage"]) for r in rows] == [("fc", "1.5", ""),
                                                                        ("total", "1.5", "0.5")]
    before = {name: (tmp_path / name).read_bytes() for name in ("r.json", "r.csv")}
    _failing_write(monkeypatch, measure_module)
    for write, name in ((report.to_json, "r.json"), (report.to_csv, "r.csv")):
        with pytest.raises(WriterFailed):
            write(tmp_path / name)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _files(tmp_path) == ["r.csv", "r.json"]


def test_trail_index_is_atomic(tmp_path, monkeypatch):
    import snn_lats.trail as trail_module

    trail = Trail(tmp_path)
    trail.add({"w": torch.zeros(2)}, epoch=1, acc1=50.0, sparsity=0.5)
    index = (tmp_path / "index.json").read_text()
    _failing_write(monkeypatch, trail_module)
    with pytest.raises(WriterFailed):
        trail.add({"w": torch.zeros(2)}, epoch=2, acc1=60.0, sparsity=0.6)
    assert (tmp_path / "index.json").read_text() == index
    assert [e.epoch for e in read_trail(tmp_path)] == [1]
    assert _files(tmp_path) == ["epoch_001.pth", "epoch_002.pth", "index.json"]


def test_sweep_results_are_atomic(tmp_path, monkeypatch):
    sweep = pytest.importorskip("experiments.sweep")
    run = sweep.Run("gmp_s0", "gmp", 0)
    run_dir = tmp_path / "runs" / run.name
    run_dir.mkdir(parents=True)
    row = dict.fromkeys(sweep.COLUMNS, "x")
    sweep.write_json_atomic(run_dir / "result.json", row)
    assert json.loads((run_dir / "result.json").read_text()) == row
    target = sweep.write_results(tmp_path, [run])
    assert list(csv.DictReader(target.open(newline=""))) == [row]
    before = target.read_bytes()
    _failing_write(monkeypatch, sweep)
    with pytest.raises(WriterFailed):
        sweep.write_results(tmp_path, [run])
    with pytest.raises(WriterFailed):
        sweep.write_json_atomic(run_dir / "result.json", {})
    assert target.read_bytes() == before and json.loads((run_dir / "result.json").read_text()) == row
    assert _files(tmp_path) == ["results.csv", "runs"] and _files(run_dir) == ["result.json"]
