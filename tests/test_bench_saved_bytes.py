"""experiments/bench_saved_bytes.py: the saved-for-backward bytes it attributes to neuron layers match the
closed form of what the fused nodes save (from SEW ResNet-18's layer shapes, counted here by hand), the rest
of the network saves the same whatever the neurons, and a network whose neurons are identities saves exactly
that rest."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import nn

from experiments import bench_saved_bytes
from experiments.bench_saved_bytes import build, measure, saved_bytes
from tests.conftest import HANG

ROOT = Path(__file__).resolve().parent.parent
LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))
ARGS = argparse.Namespace(batch_size=1, image_size=16, width_multiplier=0.125, T=4)


def closed_form_neurons(model, batch: int) -> tuple[int, int]:
    """(neurons per step N, neuron layers) of SEW ResNet-18 (ImageNet stem) at 16x16 px, from its widths:
    the stem's neuron sees 8x8 (7x7/2 conv), then the 3x3/2 max-pool gives 4x4; layer1 (2 blocks x 2 neurons)
    4x4; layer2 2x2, layer3 1x1, layer4 1x1 (stride 2 on 1x1 stays 1x1), each 2 blocks x 2 neurons + the
    downsample's neuron."""
    c = [model.conv1.out_channels] + [getattr(model, f"layer{i}")[0].conv1.out_channels for i in (2, 3, 4)]
    per_image = c[0] * 8 * 8 + 4 * c[0] * 4 * 4 + 5 * c[1] * 2 * 2 + 5 * c[2] * 1 + 5 * c[3] * 1
    return batch * per_image, 1 + 4 + 5 + 5 + 5


@pytest.fixture(scope="module")
def rows():
    out = {}
    for neuron_type, dtype, variant in [
            ("lif", "float32", "spikingjelly"), ("lif", "float32", "ours stored-h"),
            ("lif", "float32", "ours recompute"), ("lif", "bfloat16", "ours stored-h"),
            ("lif", "bfloat16", "ours recompute"), ("plif", "float32", "ours stored-h"),
            ("plif", "float32", "ours recompute"), ("plif", "bfloat16", "ours recompute")]:
        backward = (neuron_type, dtype, variant) in {("lif", "float32", "ours stored-h"),
                                                     ("plif", "float32", "ours recompute")}
        out[neuron_type, dtype, variant] = measure(neuron_type, variant, dtype, ARGS, backward)
    return out


def test_neuron_counts_match_the_layer_shapes(rows):
    n, layers = closed_form_neurons(build("lif", "spikingjelly", ARGS), ARGS.batch_size)
    for r in rows.values():
        assert (r["neurons"], r["neuron_layers"], r["neuron_elements"]) == (n, layers, ARGS.T * n)
        assert r["total_bytes"] == r["neuron_bytes"] + r["other_bytes"]
        assert r["unhooked_bytes"] == 0


@pytest.mark.parametrize("dtype,b", [("float32", 4), ("bfloat16", 2)])
def test_fused_lif_saves_the_closed_form(rows, dtype, b):
    r = rows["lif", dtype, "ours recompute"]
    n, t = r["neurons"], ARGS.T
    assert r["neuron_input_element_bytes"] == [b]  # autocast really gave the neurons bf16 inputs
    # x in its own dtype; v0 after reset_net is one broadcast float32 per layer
    assert r["neuron_bytes"] == t * n * b + 4 * r["neuron_layers"]
    assert rows["lif", dtype, "ours stored-h"]["neuron_bytes"] == t * n * 4  # h, fp32, per element
    assert r["shared_bytes"] == 0 and rows["lif", dtype, "ours stored-h"]["shared_bytes"] == 0


def test_fused_plif_saves_the_closed_form(rows):
    n, t = rows["plif", "float32", "ours recompute"]["neurons"], ARGS.T
    _, layers = closed_form_neurons(build("lif", "spikingjelly", ARGS), ARGS.batch_size)
    leak = 4 * layers  # each layer's k = sigmoid(w): a 0-dim fp32 tensor
    v0 = 4 * layers  # after reset_net, v0 is one broadcast float32 per layer
    assert rows["plif", "float32", "ours recompute"]["neuron_bytes"] == t * n * 4 + v0 + leak
    assert rows["plif", "bfloat16", "ours recompute"]["neuron_bytes"] == t * n * 2 + v0 + leak
    assert rows["plif", "float32", "ours stored-h"]["neuron_bytes"] == t * n * (4 + 4) + v0 + leak


def test_the_rest_of_the_network_saves_the_same_whatever_the_neurons(rows):
    for dtype in ("float32", "bfloat16"):
        others = {r["other_bytes"] for (_, d, _), r in rows.items() if d == dtype}
        assert len(others) == 1
    assert rows["lif", "float32", "spikingjelly"]["neuron_bytes"] > 0


def test_identity_neurons_save_exactly_the_rest(rows):
    model = build("lif", "ours recompute", ARGS)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, neuron.BaseNode):
                setattr(parent, name, nn.Identity())  # fp32: the next layer saves a tensor of the same size
    r = saved_bytes(model, "float32", ARGS)
    assert r["neuron_layers"] == 0 and r["neuron_bytes"] == 0
    assert r["total_bytes"] == rows["lif", "float32", "ours recompute"]["other_bytes"]


def test_count_neurons_at_224_px():
    # stem 112x112 (64 ch); layer1 4 neurons at 56x56 (64); layer2..4 5 each at 28x28 (128), 14x14 (256),
    # 7x7 (512)
    per_image = 64 * 112 * 112 + 4 * 64 * 56 * 56 + 5 * 128 * 28 * 28 + 5 * 256 * 14 * 14 + 5 * 512 * 7 * 7
    assert bench_saved_bytes.count_neurons(4, 224, 3) == (3 * per_image, 4 * 3 * per_image)


def test_cli_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "s.json"
    got = bench_saved_bytes.main(["--batch-size", "1", "--image-size", "16", "--width-multiplier", "0.125",
                                  "--neurons", "if", "--dtypes", "float32", "--variants", "ours recompute",
                                  "--markdown", "--out", str(out)])
    assert out.exists() and len(got) == 1
    text = capsys.readouterr().out
    assert "**Model, not a measurement**" in text
    assert "| LIF/IF | fp32 | recompute fwd+bwd | 20 | 20 |" in text
    assert "| PLIF | fp16/bf16 | stored-h bwd | 10 | 16 |" in text


@pytest.mark.skipif(not (LEGACY_DIR / "spikingjelly").is_dir(),
                    reason=f"spikingjelly 0.0.0.0.14 not installed at {LEGACY_DIR} (make test installs it)")
def test_runs_with_spikingjelly_0_0_0_0_14():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "experiments.bench_saved_bytes", "--batch-size", "1",
                           "--image-size", "16", "--width-multiplier", "0.125", "--dtypes", "float32",
                           "--neurons", "lif", "--variants", "spikingjelly", "ours recompute"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    # ours: x (4 B/element) plus one broadcast float32 v0 per layer (20 layers, 7,296 elements)
    assert "backend= (0.0.0.0.14-style)" in proc.stdout and "4.011 B/elem of 7,296" in proc.stdout


def test_unhooked_bytes_finds_a_tensor_kept_on_ctx():
    class Stash(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.kept = x * 2  # not save_for_backward: the pack hook never sees it
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * ctx.kept

    x = torch.ones(16, requires_grad=True)
    assert bench_saved_bytes.unhooked_bytes(Stash.apply(x).sum(), set()) == 16 * 4
