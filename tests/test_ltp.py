"""LearnedThresholdPruner (LTP): gradients against the closed forms, L0 pressure, squash, trail, bad input."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
import snn_lats
from experiments import pick_from_trail
from snn_lats import LearnedThresholdPruner
from snn_lats.checkpoint import export_dense, squash_state_dict
from snn_lats.trail import Trail, TrailEntry, pick, read_trail


def _layer_quantities(module, p):
    theta = module.parametrizations.weight.original.detach()
    var = theta.abs().var(correction=0)
    temperature = p.temperature * var
    s = torch.sigmoid((theta.square() - p.tau.detach()) / temperature)
    return theta, temperature, s


def test_gradients_match_closed_forms():
    torch.set_default_dtype(torch.float64)
    try:
        layer = nn.Linear(6, 5, bias=False)
        pruner = LearnedThresholdPruner(layer, l0_weight=0.0, temperature=0.7, initial_threshold=0.8)
        p = layer.parametrizations.weight[0]
        x, upstream = torch.randn(4, 6), torch.randn(4, 5)
        (layer(x) * upstream).sum().backward()
        theta, temperature, s = _layer_quantities(layer, p)
        grad_v = upstream.T @ x  # ∂L/∂v for out = x vᵀ
        # τ: ∂L/∂τ = −(1/T)·Σ ∂L/∂v · w · s(1−s); the parameter is τ/unit
        grad_tau = -(grad_v * theta * s * (1 - s)).sum() / temperature
        torch.testing.assert_close(p.threshold.grad, grad_tau * p.unit, rtol=1e-10, atol=1e-12)
        # θ: straight-through, the mask times the upstream gradient (no 2w²/T·s(1−s) term)
        torch.testing.assert_close(layer.parametrizations.weight.original.grad, s * grad_v,
                                   rtol=1e-10, atol=1e-12)
        assert 0.05 < float((s * (1 - s)).mean())  # the check above is not vacuous: weights sit in the band

        # the L0 term: ∂(λ/N Σσ)/∂τ = −λ/(N·T)·Σ s(1−s), and no gradient at all to θ
        layer.zero_grad()
        pruner.l0_weight = 3.0
        pruner.regularization().backward()
        expected = -3.0 / theta.numel() * (s * (1 - s)).sum() / temperature
        torch.testing.assert_close(p.threshold.grad, expected * p.unit, rtol=1e-10, atol=1e-12)
        assert layer.parametrizations.weight.original.grad is None
        torch.testing.assert_close(pruner.soft_l0(), s.mean(), rtol=1e-12, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)


def test_macs_normalization_is_the_soft_mac_density():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    pruner = LearnedThresholdPruner(model, temperature=0.5, initial_threshold=0.5, normalize="macs")
    with pytest.raises(RuntimeError, match="forward pass"):
        pruner.regularization()
    model(torch.randn(2, 1, 8, 8))
    macs_per_weight = {"0": 64, "2": 16, "4": 1}  # 8×8 outputs, 4×4 outputs, a linear layer
    num = den = 0.0
    for name, module, p in pruner.parametrizations():
        _, _, s = _layer_quantities(module, p)
        num += macs_per_weight[name] * s.sum()
        den += macs_per_weight[name] * s.numel()
    torch.testing.assert_close(pruner.soft_l0(), num / den)
    assert not model[0]._forward_hooks  # the recording hooks are gone after the first pass


def test_hard_mask_in_eval_and_sparsity_report_in_training_mode():
    layer = nn.Linear(50, 40)
    LearnedThresholdPruner(layer, initial_threshold=1.0)
    theta = layer.parametrizations.weight.original.detach()
    p = layer.parametrizations.weight[0]
    keep = theta.square() > p.tau.detach()
    layer.eval()
    assert torch.equal(layer.weight, theta * keep)
    layer.train()
    assert not torch.equal(layer.weight, theta * keep)  # training sees the soft mask
    report = snn_lats.sparsity_report(layer)
    assert report.zeros == int((~keep).sum()) and 0.2 < report.sparsity < 0.8


def _digits_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 16, 10))


def _train_digits(l0_weight, epochs=3, seed=0):
    from experiments.data import digits

    torch.manual_seed(seed)
    train, test = digits()
    model = _digits_cnn()
    pruner = LearnedThresholdPruner(model, l0_weight=l0_weight, temperature=0.5)
    optimizer = torch.optim.SGD(pruner.param_groups(threshold_lr=0.1), lr=0.05, momentum=0.9)
    x, y = train.tensors
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - 63, 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx]) + pruner.regularization()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pruner.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean().item()
    return pruner, model, acc


def test_l0_pressure_raises_sparsity_monotonically_on_digits():
    results = [_train_digits(w) for w in (0.5, 2.0, 8.0)]
    sparsities = [r[0].sparsity_report().sparsity for r in results]
    assert sparsities[0] < sparsities[1] < sparsities[2], sparsities
    assert sparsities[2] > 0.6 and all(r[2] > 0.85 for r in results), (sparsities, [r[2] for r in results])
    band = results[0][0].report().band_fraction
    assert 0 < band <= 1


def test_squash_equals_hard_mask_evaluation_and_loads_into_untouched_model():
    pruner, model, _ = _train_digits(2.0, epochs=1)
    x = torch.rand(16, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    offline = squash_state_dict(model.state_dict())
    sparsity = pruner.sparsity_report().sparsity
    pruner.squash()
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert snn_lats.sparsity_report(model).sparsity == pytest.approx(sparsity)
    untouched = _digits_cnn().eval()
    untouched.load_state_dict(model.state_dict(), strict=True)
    untouched.load_state_dict(offline, strict=True)  # the offline squash is the same hard mask
    with torch.no_grad():
        assert torch.equal(untouched(x), expected)
    with pytest.raises(RuntimeError, match="after squash"):
        pruner.step()


def test_state_dict_round_trip_resumes_exactly(tiny_cnn):
    from tests.conftest import TinyCNN, train_steps

    def setup(model):
        pruner = LearnedThresholdPruner(model, l0_weight=2.0, normalize="macs")
        opt = torch.optim.SGD(pruner.param_groups(threshold_lr=0.2), lr=0.05, momentum=0.9)
        return pruner, opt

    a, opt_a = setup(tiny_cnn)
    tiny_cnn(torch.randn(1, 1, 8, 8))
    train_steps(tiny_cnn, a, opt_a, 5)
    other = TinyCNN()
    b, opt_b = setup(other)
    other.load_state_dict(tiny_cnn.state_dict())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # in memory the momentum tensors would be shared
    b.load_state_dict(a.state_dict())
    assert b.soft_l0().item() == a.soft_l0().item()
    train_steps(tiny_cnn, a, opt_a, 3, seed=7)
    train_steps(other, b, opt_b, 3, seed=7)
    for (k, va), vb in zip(tiny_cnn.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert b.step_count == 8


def test_param_groups_separate_thresholds(tiny_cnn):
    pruner = LearnedThresholdPruner(tiny_cnn)
    groups = pruner.param_groups(threshold_lr=1e-3)
    taus = {id(t) for t in pruner.thresholds()}
    assert {id(p) for p in groups[1]["params"]} == taus and len(taus) == 3
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == 1e-3
    assert taus.isdisjoint(id(p) for p in groups[0]["params"])
    assert len(groups[0]["params"]) + len(taus) == len(list(tiny_cnn.parameters()))


def test_sew_resnet_trains_and_squashes_to_zoo_keys():
    kw = dict(T=2, neuron_type="lif", stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.125)
    model = models.create_model("sew_resnet18", **kw)
    pruner = LearnedThresholdPruner(model, l0_weight=5.0, ignored_layers=["fc"])
    optimizer = torch.optim.SGD(pruner.param_groups(threshold_lr=0.5), lr=0.05)
    from spikingjelly.activation_based import functional

    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    for _ in range(3):
        task = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        task.backward()  # through the surrogate spikes, every layer's τ gets a task gradient
        assert all(t.grad is not None and t.grad != 0 for t in pruner.thresholds())
        pruner.regularization().backward()
        optimizer.step()
        pruner.step()
        functional.reset_net(model)
    optimizer.zero_grad()
    pruner.regularization().backward()
    assert all(t.grad < 0 for t in pruner.thresholds())  # the L0 term alone pushes every τ up
    assert pruner.sparsity_report().sparsity > 0.05
    model.eval()
    with torch.no_grad():
        expected = model(x)
    functional.reset_net(model)
    state = export_dense(model)
    plain = models.create_model("sew_resnet18", **kw).eval()
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(plain(x), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        LearnedThresholdPruner(nn.Linear(3, 3), temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        LearnedThresholdPruner(nn.Linear(3, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="l0_weight must be a finite number >= 0"):
        LearnedThresholdPruner(nn.Linear(3, 3), l0_weight=-0.1)
    with pytest.raises(ValueError, match="no prunable layer"):
        LearnedThresholdPruner(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="normalize must be one of"):
        LearnedThresholdPruner(nn.Linear(3, 3), normalize="params")
    with pytest.raises(ValueError, match="layer_weights names layers that are not pruned"):
        LearnedThresholdPruner(nn.Sequential(nn.Linear(3, 3)), layer_weights={"1": 2.0})
    with pytest.raises(ValueError, match="threshold_lr"):
        LearnedThresholdPruner(nn.Linear(3, 3)).param_groups(threshold_lr=0)


# --- trail --------------------------------------------------------------------------------------------------

ENTRIES = [TrailEntry(1, 90.0, 0.50, "a"), TrailEntry(2, 88.0, 0.80, "b"), TrailEntry(3, 85.0, 0.90, "c"),
           TrailEntry(4, 86.5, 0.92, "d"), TrailEntry(5, 80.0, 0.97, "e")]


@pytest.mark.parametrize("budget, expected", [
    ({"min_sparsity": 0.9}, 4),  # 3, 4 and 5 meet it; 4 is the most accurate
    ({"min_sparsity": 0.5}, 1),
    ({"min_acc": 85.0}, 4),  # 1–4 meet it; 4 is the sparsest
    ({"min_acc": 88.0}, 2),
    ({"min_acc": 81.0, "min_sparsity": 0.85}, 4),
    ({"min_sparsity": 0.98}, None),
])
def test_pick_meets_the_budget(budget, expected):
    chosen = pick(ENTRIES, **budget)
    assert (chosen.epoch if chosen else None) == expected


def test_trail_files_and_cli(tmp_path, capsys):
    trail = Trail(tmp_path / "trail")
    model = nn.Linear(2, 2)
    for e in ENTRIES:
        trail.add(model.state_dict(), epoch=e.epoch, acc1=e.acc1, sparsity=e.sparsity, model_name="x")
    trail.add(model.state_dict(), epoch=3, acc1=87.0, sparsity=0.95)  # a resumed run rewrites epoch 3
    entries = read_trail(tmp_path / "trail")
    assert [e.epoch for e in entries] == [1, 2, 3, 4, 5] and entries[2].acc1 == 87.0
    assert json.loads((tmp_path / "trail" / "index.json").read_text())[2]["path"] == "epoch_003.pth"
    ckpt = torch.load(tmp_path / "trail" / "epoch_004.pth", weights_only=True)
    assert ckpt["acc1"] == 86.5 and ckpt["model_name"] == "x" and set(ckpt["model"]) == {"weight", "bias"}

    rc = pick_from_trail.main([str(tmp_path / "trail"), "--min-sparsity", "0.9", "--copy-to",
                               str(tmp_path / "picked.pth")])
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("epoch_003.pth")  # 87.0 at 0.95 now
    assert torch.load(tmp_path / "picked.pth", weights_only=True)["epoch"] == 3
    assert pick_from_trail.main([str(tmp_path / "trail"), "--min-acc", "99"]) == 1
    with pytest.raises(SystemExit):
        pick_from_trail.main([str(tmp_path / "trail")])
    with pytest.raises(SystemExit):
        pick_from_trail.main([str(tmp_path / "missing"), "--min-acc", "1"])
