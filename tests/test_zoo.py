"""The model-zoo matrix: every SpikingJelly model family, as a user builds it, through every part of
snn_lats.

For each family (tests/zoo_cases.py): the soft-threshold and LTP pruners cover every conv/linear weight and
squash to a state_dict that loads strictly into a fresh copy; ``measure`` equals a brute-force count that
includes Conv1d layers and the attention's spike matrix products (tests/zoo_reference.py);
``use_fused_neurons`` leaves outputs and gradients unchanged; OCS reaches its MAC target or refuses cleanly
with the model untouched. The last test runs this file again in a subprocess with SpikingJelly 0.0.0.0.14
first on the path, so the families that version has go through the same checks; the others skip there.
"""
import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

import snn_lats
from snn_lats.metrics import measure
from snn_lats.snn import use_fused_neurons
from snn_lats.structured import OCSPruner, apply_structure, count_macs
from tests.conftest import HANG

from .zoo_cases import CASES
from .zoo_reference import LAYERS, brute_force_counts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
IDS = [c.name for c in CASES]
LEGACY_ENV = "SNN_LATS_ZOO_EXPECT_LEGACY"


@pytest.fixture(autouse=True)
def _family_available(request):
    case = request.node.callspec.params.get("case") if hasattr(request.node, "callspec") else None
    if case is not None and not case.available:
        pytest.skip(f"this SpikingJelly has no model.{case.family}")


def _synaptic_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, LAYERS))


def _train_step(model, pruner, x, extra_loss=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    out = out.mean(0) if out.dim() == 3 else out
    loss = out.square().mean() + (extra_loss() if extra_loss else 0)
    loss.backward()
    optimizer.step()
    functional.reset_net(model)
    pruner.step()


def _strict_reload(case, model):
    fresh = case.build()
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_soft_threshold_prunes_every_synaptic_weight_and_squashes_to_the_original_keys(case):
    torch.manual_seed(0)
    model = case.build()
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.01, schedule="constant", compensate=False)
    pruned = sum(m.weight.numel() for m in pruner.layers.values())
    assert pruned == _synaptic_weights(model)  # Conv1d included: 100 %
    _train_step(model, pruner, case.inputs())
    report = pruner.sparsity_report()
    assert set(report.layers) == set(pruner.layers) and report.total == pruned
    assert report.sparsity > 0
    pruner.squash()
    fresh = _strict_reload(case, model)
    x = case.inputs(1)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ltp_prunes_every_synaptic_weight_and_squashes_to_the_original_keys(case):
    torch.manual_seed(0)
    model = case.build()
    pruner = snn_lats.LearnedThresholdPruner(model, l0_weight=1.0)
    assert sum(m.weight.numel() for m in pruner.layers.values()) == _synaptic_weights(model)
    _train_step(model, pruner, case.inputs(), extra_loss=pruner.regularization)
    pruner.squash()
    _strict_reload(case, model)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_measure_equals_a_brute_force_count_with_conv1d_and_spike_matmuls(case):
    torch.manual_seed(0)
    model = case.build()
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.02, schedule="constant", compensate=False)
    pruner.squash()  # real zeros in every layer, so skipping them is part of what is checked
    x = case.inputs()
    expected = brute_force_counts(model, x)
    report = measure(model, [x])
    total = report.total
    assert total["sops"] == pytest.approx(expected["sops"], rel=1e-9, abs=0.5)
    assert total["macs"] == pytest.approx(expected["macs"], rel=1e-9, abs=0.5)
    coverage = total["coverage"]
    assert coverage["weights"] == 1.0 and coverage["macs"] == pytest.approx(1.0)
    assert coverage["uncounted"] == coverage["uncounted_ops"] == coverage["unknown_ops"] == []
    rows = lambda kind: [r for r in report.layers.values() if r["type"] == kind]  # noqa: E731
    assert sum(r["sops"] for r in rows("matmul")) == pytest.approx(expected["matmul_sops"], abs=0.5)
    assert sum(r["sops"] for r in rows("sum")) == pytest.approx(expected["sum_sops"], abs=0.5)
    assert sum(r["selected"] for r in rows("mask")) == expected["mask_selected"]
    assert all(r["sops"] == r["macs"] == 0 for r in rows("mask"))  # a mask executes no arithmetic


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_neurons_leave_outputs_and_gradients_unchanged(case):
    torch.manual_seed(0)
    model = case.build()
    fused = copy.deepcopy(model)
    report = use_fused_neurons(fused)
    neurons = [n for n, m in model.named_modules() if hasattr(m, "v_threshold")]
    assert sorted(report.replaced + list(report.unsupported)) == sorted(neurons)  # every neuron accounted for
    x = case.inputs().requires_grad_()
    outs, grads = [], []
    for net in (model, fused):
        net.train()
        torch.manual_seed(1)  # the same dropout masks in both
        out = net(x)
        out.sum().backward()
        outs.append(out.detach())
        grads.append(x.grad.clone())
        x.grad = None
        functional.reset_net(net)
    assert torch.equal(outs[0], outs[1])
    # The surrogate is computed in another float32 order than SpikingJelly's, and conv backward sums those
    # terms: errors scale with the gradient's largest entry (seen: 1.8e-6 at max |g| 2.4, about 6 ulp of it).
    scale = grads[0].abs().max().item()
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=4e-6 * max(scale, 1.0))


OCS_TARGET = 0.4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ocs_reaches_its_mac_target_and_the_thin_model_rebuilds(case):
    torch.manual_seed(0)
    model = case.build()
    x = case.inputs()
    model.eval()
    with torch.no_grad():
        before = model(x)
    functional.reset_net(model)
    dense = count_macs(model, x)
    pruner = OCSPruner(model, x, OCS_TARGET, monitor_start_epoch=0)
    pruner.epoch_start(0)
    spec = pruner.prune()
    macs = count_macs(model, x)
    assert macs == pruner.pruned_flops
    assert 1 - macs / dense == pytest.approx(OCS_TARGET, abs=0.01)
    for name, reason in pruner.skipped_groups.items():  # left whole, and said why
        assert reason and name in dict(model.named_modules())
    with torch.no_grad():
        after = model(x)
    functional.reset_net(model)
    assert after.shape == before.shape
    rebuilt = case.build()
    apply_structure(rebuilt, spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), after)


PER_CASE_CHECKS = 5  # the parametrized tests above
LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))


def test_the_loaded_spikingjelly_is_the_one_this_run_expects():
    legacy = "backend" in inspect.signature(neuron.LIFNode.__init__).parameters  # a 0.0.0.0.14 feature
    assert legacy == (os.environ.get(LEGACY_ENV) == "1")


@pytest.mark.skipif(os.environ.get(LEGACY_ENV) == "1" or not (LEGACY_DIR / "spikingjelly").is_dir(),
                    reason=f"SpikingJelly 0.0.0.0.14 not installed in {LEGACY_DIR} (make test installs it)")
def test_the_families_of_spikingjelly_0_0_0_0_14_pass_the_same_matrix():
    root = Path(__file__).parents[1]
    env = {**os.environ, LEGACY_ENV: "1", "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(root)])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::FutureWarning",
           str(Path(__file__).relative_to(root))]
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    old_families = ("spiking_resnet", "sew_resnet", "spiking_vgg", "parametric_lif_net")
    legacy = [c for c in CASES if c.family in old_families]
    # every check of the families it has, and the guard
    assert passed == PER_CASE_CHECKS * len(legacy) + 1, summary
