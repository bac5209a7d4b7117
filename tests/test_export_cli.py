"""snn-lats-export: from experiments/train.py's checkpoint or a PACKAGE.MODULE:FACTORY model to a NIR file and
its figures; one-line errors with exit code 2; nothing written when it fails."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snn_lats.checkpoint import model_state_from_checkpoint, squash_state_dict
from tests import nir_roundtrip as rt

nir = pytest.importorskip("nir", reason="the [nir] extra (nir, nirtorch) is not installed")
pytest.importorskip("nirtorch", reason="the [nir] extra (nir, nirtorch) is not installed")

from snn_lats.cli.export import export_command  # noqa: E402
from snn_lats.export import deployment_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fails(argv, capsys) -> str:
    """export_command(argv) exits with code 2 and one error line on stderr (after argparse's usage for its
    own errors); returns that line."""
    with pytest.raises(SystemExit) as info:
        export_command(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    message = err.splitlines()[-1]
    assert "Traceback" not in err and err.count("error:") == 1
    assert message.startswith("snn-lats-export: error:"), err
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real training run's checkpoint: SEW ResNet-18 x0.125, LIF, pruned at initialization (PAI)."""
    from experiments import train

    run = tmp_path_factory.mktemp("run")
    train.main(["--data", "digits", "--model", "sew_resnet18", "--T", "2", "--neuron", "lif",
                "--width-multiplier", "0.125", "--method", "pai", "--final-threshold", "0.08",
                "--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "2", "--device", "cpu",
                "--output-dir", str(run)])
    return run / "checkpoint_best.pth"


def test_a_training_checkpoint_exports_with_its_figures(trained, tmp_path, capsys):
    out, figures = tmp_path / "model.nir", tmp_path / "figures.json"
    report = export_command(["--checkpoint", str(trained), "--out", str(out), "--figures", str(figures),
                             "--max-fan-in", "20"])
    printed = capsys.readouterr().out
    graph = nir.read(out)
    # the checkpoint's prepared weights, squashed: their nonzeros are the graph's
    state = squash_state_dict(model_state_from_checkpoint(torch.load(trained, weights_only=True)))
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() in (2, 4)]
    exported = [n.weight for n in graph.nodes.values() if isinstance(n, (nir.Conv2d, nir.Affine))]
    assert len(exported) == len(weights) == 21
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights)
    assert sum(int(np.count_nonzero(w)) for w in exported) == nonzero
    # the default input: one 8x8 digit, as the checkpoint's data set
    assert list(graph.nodes["conv1"].input_type["input"]) == [1, 8, 8]
    assert json.loads(figures.read_text()) == deployment_report(graph, {"max_fan_in": 20}).to_dict()
    assert report.exceeding and all("fan-in" in line for line in report.exceeding)
    assert "limits {'max_fan_in': 20" in printed and report.exceeding[0] in printed
    assert f"wrote {out}" in printed and "note: readout" in printed


def test_a_factory_model_exports_and_round_trips(tmp_path, capsys):
    from tests.user_models import build_csnn

    out = tmp_path / "csnn.nir"
    torch.manual_seed(0)  # the factory's initial weights: rebuilt below from the same seed
    export_command(["--model", "tests.user_models:build_csnn", "--model-kwargs", '{"channels": 3, "T": 3}',
                    "--input-shape", "2,1,8,8", "--out", str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    torch.manual_seed(0)
    model = build_csnn(channels=3, T=3).eval()
    graph = nir.read(out)
    # the user's own wrapper (x.unsqueeze(0).repeat(T, ...), .mean(0)) is left to the simulator, the max pool
    # of LIF spikes is an average pool and a LIF neuron (OR)
    assert rt.as_text(graph.metadata["readout"]) == "mean over T"
    assert sorted(type(n).__name__ for n in graph.nodes.values()) == [
        "AvgPool2d", "Conv2d", "Flatten", "Input", "LIF", "LIF", "Linear", "Output"]
    x = torch.rand(2, 1, 8, 8) * 4
    records, output = rt.reference(model, x, 3)
    assert rt.spike_count(records) > 0
    got, outputs = rt.imported("spikingjelly", graph, [x] * 3)
    assert rt.compare(graph, records, output, got, outputs) == []


def test_errors_are_one_line_with_exit_code_2_and_write_nothing(trained, tmp_path, capsys):
    out = tmp_path / "model.nir"
    out.write_bytes(b"previous")
    spikformer = ["--model", "tests.user_models:build_spikformer", "--input-shape", "1,1,8,8"]
    cases = {
        "pass --checkpoint (a training checkpoint names its model) or --model": [],
        "argument --input-shape: must be comma-separated ints": ["--model", "x:y", "--input-shape", "a,b"],
        "argument --max-fan-in: must be an int >= 1, got '0'": ["--model", "x:y", "--max-fan-in", "0"],
        "argument --dt: must be a finite number > 0": ["--model", "x:y", "--dt", "-1"],
        "FileNotFoundError: checkpoint": ["--checkpoint", str(tmp_path / "missing.pth")],
        "cannot import 'no_such_pkg.nets'": ["--model", "no_such_pkg.nets:build", "--input-shape", "1,1,8,8"],
        "cannot export to NIR": spikformer,
        "multiplies two activations (matmul)": spikformer,
        "cannot tell the model's input shape": ["--model", "tests.user_models:build_csnn"],
        f"folder '{tmp_path / 'nowhere'}'": ["--checkpoint", str(trained), "--figures",
                                               str(tmp_path / "nowhere" / "f.json")],
    }
    for fragment, argv in cases.items():
        argv = [*argv, "--out", str(out)] if "--out" not in argv else argv
        assert fragment in _fails(argv, capsys), fragment
    assert out.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["model.nir"]


def test_the_module_runs_as_a_command_with_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "snn_lats.cli.export", "--model", "tests.user_models:nope",
                           "--input-shape", "1,1,8,8", "--out", str(tmp_path / "m.nir")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "snn-lats-export: error: --model 'tests.user_models:nope': module 'tests.user_models' has no "
        "attribute 'nope'"]
    assert not (tmp_path / "m.nir").exists()
