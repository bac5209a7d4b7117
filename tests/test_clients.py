"""The client matrix: spiking transformers written the way their authors write them, through all of snn_lats.

tests/client_models.py builds a Spikformer-, a Spike-Driven-Transformer- and a QKFormer-style model and a
convolutional SNN on SpikingJelly 0.0.0.0.14's ``clock_driven`` API (plain torch layers on ``[T*B, ...]``,
``MultiStepLIFNode``, a ``(logits, hook)`` tuple output, spike matmuls, elementwise spike masks and spike
sums).
Each goes through: the pruners and squash; ``measure`` against a brute-force count (tests/zoo_reference.py)
over batches of unequal size, with firing rates, state reset and training flags; the fused-neuron swap; OCS,
which reaches its target or refuses with the reason; and ``experiments/train.py --model
PACKAGE.MODULE:FACTORY`` with its printed follow-up command. The last test runs this file again with
SpikingJelly 0.0.0.0.14 first on the path, where the models are written on ``clock_driven`` itself; under 2.x
they use the one-line port to ``activation_based``.
"""
import copy
import inspect
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import neuron as ab_neuron
from torch import nn

import snn_lats
from snn_lats import spiking
from snn_lats.metrics import measure
from snn_lats.outputs import select_output
from snn_lats.snn import use_fused_neurons
from snn_lats.structured import OCSPruner, apply_structure, count_macs

from .client_models import CLIENTS, CLOCK_DRIVEN
from .zoo_reference import LAYERS, brute_force_counts, reset

ROOT = Path(__file__).parents[1]
LEGACY_ENV = "SNN_LATS_CLIENTS_EXPECT_LEGACY"
LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))
NAMES = list(CLIENTS)
TRANSFORMERS = ["spikformer_like", "sdt_like", "qkformer_like"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    """Tiny tensors: one intra-op thread."""


def build(name: str, seed: int = 0) -> nn.Module:
    """The client with its weights scaled up, so that every neuron layer and every attention op is active on
    8x8 inputs in an untrained model."""
    torch.manual_seed(seed)
    model = CLIENTS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LAYERS):
                m.weight.mul_(6)
    return model


def images(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    return select_output(model(x))


def test_the_loaded_spikingjelly_is_the_one_this_run_expects():
    legacy = "backend" in inspect.signature(ab_neuron.LIFNode.__init__).parameters  # a 0.0.0.0.14 feature
    assert legacy == (os.environ.get(LEGACY_ENV) == "1") == CLOCK_DRIVEN == spiking.HAS_CLOCK_DRIVEN


@pytest.mark.parametrize("name", NAMES)
def test_every_neuron_is_found_in_the_namespace_it_is_written_on(name):
    model = build(name)
    found = spiking.neurons(model)
    assert sorted(found) == sorted(n for n, m in model.named_modules() if hasattr(m, "v_threshold"))
    assert all(spiking.is_clock_driven(m) == CLOCK_DRIVEN for m in found.values())
    assert all(spiking.is_multi_step(m) for m in found.values())


@pytest.mark.parametrize("name", NAMES)
def test_the_pruners_cover_every_weight_and_squash_reloads_strictly(name):
    x = images(4, 1)
    for make in (lambda m: snn_lats.SoftThresholdPruner(m, final_threshold=0.3, schedule="constant",
                                                         compensate=False),
                 lambda m: snn_lats.MagnitudePruner(m, pruning_ratio=0.5, total_steps=1, frequency=1),
                 lambda m: snn_lats.LearnedThresholdPruner(m, l0_weight=1.0)):
        model = build(name)
        pruner = make(model)
        assert sum(m.weight.numel() for m in pruner.layers.values()) == \
            sum(m.weight.numel() for m in model.modules() if isinstance(m, LAYERS))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        logits(model, x).square().mean().backward()
        optimizer.step()
        reset(model)
        pruner.step()
        pruner.squash()
        fresh = build(name, seed=1)
        fresh.load_state_dict(model.state_dict(), strict=True)
        model.eval(), fresh.eval()
        with torch.no_grad():
            assert torch.equal(logits(model, x), logits(fresh, x))
        reset(model), reset(fresh)
        if not isinstance(pruner, snn_lats.LearnedThresholdPruner):  # LTP's thresholds start below every w²
            assert 0 < snn_lats.sparsity_report(fresh).sparsity < 1


def brute_force_firing(model, batches) -> dict[str, tuple[float, int]]:
    """Per neuron layer: spikes and elements over ``batches``, each from a reset state, by forward hooks."""
    totals = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: totals.setdefault(n, []).append(o.detach().clone()))
             for n, m in spiking.neurons(model).items()]
    model.eval()
    with torch.no_grad():
        for x in batches:
            reset(model)
            model(x)
    reset(model)
    for h in hooks:
        h.remove()
    return {n: (float(sum(o.sum() for o in outs)), sum(o.numel() for o in outs))
            for n, outs in totals.items()}


@pytest.mark.parametrize("name", NAMES)
def test_measure_equals_a_brute_force_count_over_batches_of_unequal_size(name):
    model = build(name)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.1, schedule="constant", compensate=False)
    pruner.squash()  # real zeros, skipped by both counts
    assert snn_lats.sparsity_report(model).sparsity > 0.05
    batches = [images(5, 2), images(3, 3)]  # the last batch smaller, as a data loader's is
    labels = [torch.arange(5) % 10, torch.arange(3) % 10]
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    frozen.eval()  # a user's frozen BN inside a training model
    flags = [m.training for m in model.modules()]

    report = measure(model, list(zip(batches, labels, strict=True)))

    assert [m.training for m in model.modules()] == flags  # every module's own flag, not just the top's
    assert all(not isinstance(m.v, torch.Tensor) for m in spiking.neurons(model).values())  # no state left
    expected = [brute_force_counts(model, x) for x in batches]
    total = report.total
    for key in ("sops", "macs"):
        assert total[key] == pytest.approx(sum(e[key] for e in expected), rel=1e-9, abs=0.5), key
    rows = lambda kind: [r for r in report.layers.values() if r["type"] == kind]  # noqa: E731
    assert sum(r["sops"] for r in rows("matmul")) == pytest.approx(sum(e["matmul_sops"] for e in expected))
    assert sum(r["sops"] for r in rows("sum")) == pytest.approx(sum(e["sum_sops"] for e in expected))
    assert sum(r["selected"] for r in rows("mask")) == sum(e["mask_selected"] for e in expected)
    assert all(r["sops"] == r["macs"] == 0 for r in rows("mask"))
    if name == "sdt_like":  # SDSA: the column sum accumulates exactly the k*v mask's selected spikes
        assert rows("mask") and rows("sum")[0]["sops"] == rows("mask")[0]["selected"] > 0
    if name == "spikformer_like":
        assert sum(r["sops"] for r in rows("matmul")) > 0
    cover = total["coverage"]
    assert cover["weights"] == 1.0 and cover["macs"] == pytest.approx(1.0) and not cover["uncounted"]

    firing = brute_force_firing(model, batches)
    neurons = {n: r for n, r in report.layers.items() if r["type"] == "neuron"}
    assert sorted(neurons) == sorted(firing)
    for n, (spikes, elements) in firing.items():
        assert (neurons[n]["spikes"], neurons[n]["neuron_updates"]) == (spikes, elements), n
        assert len(neurons[n]["firing_rate_per_step"]) == 2  # T = 2 steps, seen as multi-step
    assert 0 < total["firing_rate"] < 1
    # batches measured together and one by one: no state passes from one batch to the next
    apart = [measure(model, [x]).total["sops"] for x in batches]
    assert total["sops"] == sum(apart)
    model.eval()
    predictions = []
    with torch.no_grad():
        for x in batches:
            predictions.append(logits(model, x).argmax(-1))
            reset(model)
    correct = sum(int((p == y).sum()) for p, y in zip(predictions, labels, strict=True))
    assert total["accuracy"] == correct / 8 and total["samples"] == 8


@pytest.mark.parametrize("name", NAMES)
def test_the_fused_swap_leaves_outputs_and_gradients_unchanged(name):
    model = build(name)
    fused = copy.deepcopy(model)
    report = use_fused_neurons(fused)
    assert sorted(report.replaced) == sorted(spiking.neurons(model)) and not report.unsupported
    x = images(3, 4).requires_grad_()
    outs, grads = [], []
    for net in (model, fused):
        net.train()
        out = logits(net, x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        reset(net)
        outs.append(out.detach())
        grads.append(grad)
    assert torch.equal(outs[0], outs[1])
    scale = grads[0].abs().max().item()  # the surrogate's float32 order differs (as in the zoo matrix)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=4e-6 * max(scale, 1.0))


def test_the_fused_swap_lists_every_neuron_it_keeps():
    model = build("csnn_like")
    model.conv_fc[1] = make_kept_neuron()
    report = use_fused_neurons(model)
    assert report.replaced == ["conv_fc.3"] and list(report.unsupported) == ["conv_fc.1"]
    assert ("decay_input=False" if CLOCK_DRIVEN else "surrogate") in report.unsupported["conv_fc.1"]
    assert "kept conv_fc.1" in str(report)


def make_kept_neuron() -> nn.Module:
    if CLOCK_DRIVEN:  # its charge V·(1 − 1/τ) + X rounds differently from the kernels'
        from spikingjelly.clock_driven.neuron import MultiStepLIFNode

        return MultiStepLIFNode(tau=2.0, decay_input=False, backend="torch")
    from spikingjelly.activation_based import surrogate

    return ab_neuron.LIFNode(step_mode="m", surrogate_function=surrogate.Erf())


@pytest.mark.parametrize("name", NAMES)
def test_ocs_reaches_its_target_or_refuses_with_the_reason(name):
    model = build(name)
    x = images(2, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if name in TRANSFORMERS:  # their reshapes to the embedding width pin the channels OCS would cut
        with pytest.raises(ValueError, match=r"OCSPruner: .*(out of reach|one prunable channel group).*left "
                                             r"unpruned .*breaks the model"):
            OCSPruner(model, x, 0.4, monitor_start_epoch=0)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        return
    dense = count_macs(model, x)
    pruner = OCSPruner(model, x, 0.4, monitor_start_epoch=0)
    pruner.epoch_start(0)
    spec = pruner.prune()
    assert count_macs(model, x) == pruner.pruned_flops
    assert 1 - pruner.pruned_flops / dense == pytest.approx(0.4, abs=0.03)  # 8-channel layers: coarse steps
    thin = build(name, seed=1)
    apply_structure(thin, spec)
    thin.load_state_dict(model.state_dict(), strict=True)
    model.eval(), thin.eval()
    with torch.no_grad():
        assert torch.equal(logits(thin, x), logits(model, x))


@pytest.mark.parametrize("name", NAMES)
def test_train_py_takes_the_client_as_package_module_factory(name, tmp_path, capsys, caplog):
    from experiments import benchmark_sparsity, train

    out = tmp_path / "run"
    train.main(["--data", "digits", "--model", f"tests.client_models:{name}", "--model-kwargs", '{"T": 2}',
                "--method", "s-lats", "--final-threshold", "0.02", "--epochs", "1",
                "--max-steps-per-epoch", "2", "--batch-size", "16", "--train-subset", "64",
                "--output-dir", str(out)])
    printed = capsys.readouterr()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "Trying to call" not in printed.out + printed.err + logged  # 0.0.0.0.14's reset_net log lines
    classifier = "conv_fc.4.2" if name == "csnn_like" else "head"
    assert f"--ignored-layers defaults to ['{classifier}']" in printed.out
    checkpoint = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert checkpoint["model_name"] == f"tests.client_models:{name}"
    assert checkpoint["model_kwargs"] == {"T": 2}
    assert json.loads((out / "summary.json").read_text())["epoch"] == 1
    if name != "sdt_like":
        return
    # the printed follow-up command, as printed: the digits' 360 samples in batches of 128 (the last smaller)
    follow_up = shlex.split(printed.out.strip().splitlines()[-1].split("spike-level sparsity: ")[1])
    assert follow_up[:3] == ["python", "-m", "experiments.benchmark_sparsity"]
    report = benchmark_sparsity.main([*follow_up[3:], "--out", str(tmp_path / "measured")])
    assert report.total["samples"] == 360 and any(r["type"] == "mask" for r in report.layers.values())
    assert (tmp_path / "measured" / "sparsity.json").is_file()


def test_spikingjellys_log_flood_becomes_one_line_inside_snn_lats_calls(caplog):
    """0.0.0.0.14's activation_based reset_net logs four lines for every clock_driven module (and for every
    other module with a reset() that is no MemoryModule). Inside snn_lats's own calls they are held back and
    counted once."""
    import logging

    if not CLOCK_DRIVEN:
        pytest.skip("SpikingJelly 2.x logs through loguru, disabled for 'spikingjelly' by default: no flood")

    from spikingjelly.activation_based import functional

    model = build("qkformer_like")
    model.extra = nn.Module()
    model.extra.reset = lambda: None  # a module with reset() that is no MemoryModule: reset_net logs for it
    caplog.set_level(logging.WARNING)
    with pytest.warns(UserWarning, match=r"SpikingJelly logged (\d+) message\(s\) during a test"):
        with spiking.spikingjelly_logs_summarised("a test"):
            functional.reset_net(model)
    assert not [r for r in caplog.records if "spikingjelly" in r.pathname]  # none reached the log
    functional.reset_net(model)  # outside: SpikingJelly's logging is untouched
    assert [r for r in caplog.records if "spikingjelly" in r.pathname]


def test_repeated_warnings_inside_ocs_become_one_line_with_their_count():
    import warnings

    from snn_lats.structured.ocs import summarised_warnings

    with pytest.warns(UserWarning) as caught:
        with summarised_warnings("tracing"):
            for _ in range(448):
                warnings.warn("Maximum recursive depth reached!", stacklevel=1)
            warnings.warn("another", stacklevel=1)
    assert [str(w.message) for w in caught] == ["Maximum recursive depth reached! (x448 during tracing)",
                                                "another"]


def test_reset_state_names_modules_it_resets_that_are_no_memory_modules():
    model = build("csnn_like")
    calls = []
    model.extra = nn.Module()
    model.extra.reset = lambda: calls.append(1)
    with torch.no_grad():
        model(images(2, 0))
    assert any(isinstance(m.v, torch.Tensor) for m in spiking.neurons(model).values())
    with pytest.warns(UserWarning, match=r"reset\(\) was called on modules that are not SpikingJelly "
                                         r"MemoryModules, as functional.reset_net does: extra"):
        spiking.reset_state(model)
    assert calls == [1] and not any(isinstance(m.v, torch.Tensor) for m in spiking.neurons(model).values())


@pytest.mark.skipif(os.environ.get(LEGACY_ENV) == "1" or not (LEGACY_DIR / "spikingjelly").is_dir(),
                    reason=f"SpikingJelly 0.0.0.0.14 not installed in {LEGACY_DIR} (make test installs it)")
def test_the_clients_on_spikingjelly_0_0_0_0_14_clock_driven_pass_the_same_matrix():
    env = {**os.environ, LEGACY_ENV: "1", "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(ROOT)])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::FutureWarning",
           str(Path(__file__).relative_to(ROOT))]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    per_client = 6  # the parametrized tests above
    assert f"{per_client * len(NAMES) + 6} passed" in summary, summary


def test_bad_selectors_and_models_are_named():
    from snn_lats.outputs import select_output

    with pytest.raises(TypeError, match=r"output must be None .* got 1.5"):
        select_output((torch.zeros(1), None), 1.5)
    with pytest.raises(ValueError, match=r"a tuple of \['NoneType', 'str'\]\) has no tensor at all"):
        select_output((None, "hook"))
    assert select_output({"hook": None, "logits": torch.ones(2)}, "logits").tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got a str"):
        spiking.reset_state("net")
