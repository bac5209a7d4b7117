import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import snn_lats
from snn_lats.parametrizations import SoftThreshold

from .conftest import TinyCNN, train_steps


def test_forward_is_the_soft_threshold_operator(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, schedule="constant",
                                          compensate=False)
    theta = tiny_cnn.conv2.parametrizations.weight.original
    expected = torch.sign(theta) * torch.relu(theta.abs() - 0.1)
    assert torch.equal(tiny_cnn.conv2.weight, expected)
    assert pruner.threshold == 0.1


def test_gradient_is_straight_through_for_pruned_and_surviving_weights(tiny_cnn):
    # fc stays dense: at d=0.05 its whole weight (init bound 1/sqrt(512)) would be zero and block the gradient
    snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, schedule="constant", compensate=False,
                                 ignored_layers=["fc"])
    layer = tiny_cnn.conv2
    with parametrize.cached():  # the forward then uses this very tensor
        weight = layer.weight
        weight.retain_grad()
        tiny_cnn(torch.randn(2, 1, 8, 8)).square().sum().backward()
    theta_grad = layer.parametrizations.weight.original.grad
    assert (weight == 0).any()
    assert torch.equal(theta_grad, weight.grad)  # dW/dθ = 1 everywhere, pruned weights included
    assert (theta_grad[weight == 0] != 0).any()


@pytest.mark.parametrize("build_optimizer_first", [True, False])
def test_optimizer_built_before_or_after_prepare_stays_valid(tiny_cnn, build_optimizer_first):
    params_before = {name: p for name, p in tiny_cnn.named_parameters()}
    if build_optimizer_first:
        optimizer = torch.optim.SGD(tiny_cnn.parameters(), lr=0.1, momentum=0.9)
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)
    if not build_optimizer_first:
        optimizer = torch.optim.SGD(tiny_cnn.parameters(), lr=0.1, momentum=0.9)
    pruner.optimizer = optimizer
    for name in ("conv1", "conv2", "fc"):
        theta = getattr(tiny_cnn, name).parametrizations.weight.original
        assert theta is params_before[f"{name}.weight"]
    assert {id(p) for p in tiny_cnn.parameters()} == {id(p) for p in params_before.values()}
    snapshot = tiny_cnn.conv2.parametrizations.weight.original.detach().clone()
    train_steps(tiny_cnn, pruner, optimizer, 10)
    assert not torch.equal(tiny_cnn.conv2.parametrizations.weight.original, snapshot)
    assert pruner.sparsity_report().sparsity > 0
    assert pruner.l1_coefficient is not None and pruner.l1_coefficient > 0


def test_preparing_with_a_nonzero_threshold_keeps_the_function(tiny_cnn):
    tiny_cnn.eval()
    x = torch.randn(3, 1, 8, 8)
    before = tiny_cnn(x)
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.2, schedule="constant")
    torch.testing.assert_close(tiny_cnn(x), before, atol=1e-6, rtol=0)
    assert pruner.threshold == 0.2
    theta = tiny_cnn.conv2.parametrizations.weight.original
    assert theta.abs().min() >= 0.2 - 1e-7  # θ = sign(W)(|W| + d)


def test_pruning_at_initialization_zeros_small_weights_at_step_zero(tiny_cnn):
    w0 = tiny_cnn.conv2.weight.detach().clone()
    snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, schedule="constant", compensate=False)
    w = tiny_cnn.conv2.weight
    assert torch.equal(w == 0, w0.abs() <= 0.05)
    assert torch.equal(w, torch.sign(w0) * torch.relu(w0.abs() - 0.05))


def test_ignored_layers_by_name_module_and_container(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, total_steps=5, ignored_layers=["fc"])
    assert list(pruner.layers) == ["conv1", "conv2"]
    assert not parametrize.is_parametrized(tiny_cnn.fc)
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.1, total_steps=5,
                                          ignored_layers=[model[1]])
    assert list(pruner.layers) == ["0"]


def test_unknown_ignored_layer_is_an_error_with_a_suggestion(tiny_cnn):
    with pytest.raises(ValueError, match=r"ignored_layers.*'fcc'.*fc"):
        snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, total_steps=5, ignored_layers=["fcc"])
    with pytest.raises(ValueError, match="ignored_layers"):
        snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, total_steps=5,
                                     ignored_layers=[nn.Linear(2, 2)])


def test_layer_scale_sets_per_layer_thresholds(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(
        tiny_cnn, final_threshold=0.4, schedule="constant", layer_scale={"conv1": 0.5, "fc": 0.0}
    )
    thresholds = {n: float(p.threshold) for n, _, p in pruner.parametrizations()}
    assert thresholds == pytest.approx({"conv1": 0.2, "conv2": 0.4, "fc": 0.0})
    pruner = snn_lats.SoftThresholdPruner(
        type(tiny_cnn)(), schedule=lambda s: 0.1 * s,  # a callable takes no final_threshold
        layer_scale=lambda name, m: 2.0 if isinstance(m, nn.Linear) else 1.0,
    )
    with pytest.warns(UserWarning, match=r"'fc' is entirely pruned .* threshold d = 0\.2\b"):  # |θ| <= 0.044
        pruner.step()
    thresholds = {n: float(p.threshold) for n, _, p in pruner.parametrizations()}
    assert thresholds == pytest.approx({"conv1": 0.1, "conv2": 0.1, "fc": 0.2})


def test_layer_scale_rejects_unknown_layers(tiny_cnn):
    with pytest.raises(ValueError, match="layer_scale.*bn1"):
        snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.4, schedule="constant",
                                     layer_scale={"bn1": 2.0})


def test_sparsity_report_counts_exact_zeros(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.08, schedule="constant",
                                          compensate=False)
    report = snn_lats.sparsity_report(tiny_cnn)
    expected = {}
    for name in ("conv1", "conv2", "fc"):
        theta = getattr(tiny_cnn, name).parametrizations.weight.original
        expected[name] = (int((theta.abs() <= 0.08).sum()), theta.numel())
    assert {n: (s.zeros, s.total) for n, s in report.layers.items()} == expected
    zeros = sum(z for z, _ in expected.values())
    total = sum(t for _, t in expected.values())
    assert report.sparsity == zeros / total
    assert pruner.sparsity_report().to_dict()["sparsity"] == report.sparsity
    assert "total" in str(report)


def test_freeze_at_fixes_masks_and_pruned_weights_stay_zero(tiny_cnn):
    optimizer = torch.optim.SGD(tiny_cnn.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, schedule="pgh", beta=0.1,
                                          total_steps=40, freeze_at=10, optimizer=optimizer)
    train_steps(tiny_cnn, pruner, optimizer, 10)
    assert pruner.frozen
    frozen_threshold = pruner.threshold
    mask = tiny_cnn.conv2.weight.detach() == 0
    assert mask.any()
    train_steps(tiny_cnn, pruner, optimizer, 15, seed=2)
    assert pruner.threshold == frozen_threshold and pruner.l1_coefficient == 0
    w = tiny_cnn.conv2.weight.detach()
    assert torch.equal(w == 0, mask)  # pruned stay exactly zero, survivors stay nonzero (they train freely)


def test_frozen_state_round_trips_through_model_state_dict(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, schedule="constant",
                                          compensate=False, freeze_at=0)
    assert pruner.frozen
    fresh = copy.deepcopy(tiny_cnn)  # deep copies of parametrized modules are supported
    other = type(tiny_cnn)()
    other_pruner = snn_lats.SoftThresholdPruner(other, final_threshold=0.1, schedule="constant")
    other.load_state_dict(tiny_cnn.state_dict())  # strict: the mask buffers appear on load
    assert other_pruner.frozen
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(other(x), fresh(x))


def test_squash_keeps_outputs_and_loads_into_plain_model(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)
    optimizer = torch.optim.SGD(tiny_cnn.parameters(), lr=0.1)
    pruner.optimizer = optimizer
    train_steps(tiny_cnn, pruner, optimizer, 10)
    tiny_cnn.eval()
    x = torch.randn(5, 1, 8, 8)
    before = tiny_cnn(x)
    sparsity = pruner.sparsity_report().sparsity
    pruner.squash()
    assert not any(parametrize.is_parametrized(m) for m in tiny_cnn.modules())
    torch.testing.assert_close(tiny_cnn(x), before, atol=1e-6, rtol=0)
    assert snn_lats.sparsity_report(tiny_cnn).sparsity == pytest.approx(sparsity)
    plain = type(tiny_cnn)()
    plain.load_state_dict(tiny_cnn.state_dict(), strict=True)


def test_squash_resnet50_state_dict_loads_strictly_into_torchvision_model():
    import torchvision

    model = torchvision.models.resnet50(weights=None).eval()
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.01, schedule="constant", compensate=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    assert pruner.sparsity_report().sparsity > 0.1
    pruner.squash()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    fresh = torchvision.models.resnet50(weights=None)
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_step_after_squash_is_an_error(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)
    pruner.squash()
    with pytest.raises(RuntimeError, match=r"step\(\) called after squash"):
        pruner.step()
    with pytest.raises(RuntimeError, match="squash"):
        pruner.squash()


def _resume_setup(schedule_kwargs):
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40)
    steps = {} if schedule_kwargs["schedule"] == "lr" else {"total_steps": 40}  # "lr" with λ takes none
    pruner = snn_lats.SoftThresholdPruner(model, optimizer=optimizer, ignored_layers=["fc"], **steps,
                                          **schedule_kwargs)
    return model, optimizer, lr_scheduler, pruner


@pytest.mark.parametrize(
    "schedule_kwargs",
    [
        {"schedule": "s-lats", "final_threshold": 0.05},
        {"schedule": "lats", "final_threshold": 0.05, "steps_per_epoch": 10},
        {"schedule": "lr", "l1_coefficient": 0.02},
        {"schedule": "pgh", "final_threshold": 0.05, "beta": 0.1, "freeze_at": 30},
    ],
)
def test_resume_continues_the_schedule_exactly(tmp_path, schedule_kwargs):
    torch.manual_seed(0)
    model, optimizer, lr_scheduler, pruner = _resume_setup(schedule_kwargs)
    train_steps(model, pruner, optimizer, 20, lr_scheduler, seed=1)
    train_steps(model, pruner, optimizer, 20, lr_scheduler, seed=2)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(0)
    model, optimizer, lr_scheduler, pruner = _resume_setup(schedule_kwargs)
    train_steps(model, pruner, optimizer, 20, lr_scheduler, seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(), "pruner": pruner.state_dict()}, path)
    del model, optimizer, lr_scheduler, pruner

    torch.manual_seed(123)  # a fresh start: different init, the checkpoint must overwrite all of it
    model, optimizer, lr_scheduler, pruner = _resume_setup(schedule_kwargs)
    ckpt = torch.load(path, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
    pruner.load_state_dict(ckpt["pruner"])
    train_steps(model, pruner, optimizer, 20, lr_scheduler, seed=2)

    resumed = model.state_dict()
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    assert pruner.step_count == 40


def test_load_state_dict_rejects_mismatched_state(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)
    state = pruner.state_dict()
    other = snn_lats.SoftThresholdPruner(type(tiny_cnn)(), final_threshold=0.05, total_steps=10,
                                         ignored_layers=["fc"])
    with pytest.raises(ValueError, match="different layers.*fc"):
        other.load_state_dict(state)
    other = snn_lats.SoftThresholdPruner(type(tiny_cnn)(), final_threshold=0.05, schedule="constant")
    with pytest.raises(ValueError, match="schedule"):
        other.load_state_dict(state)


def test_preparing_twice_is_an_error(tiny_cnn):
    snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)
    with pytest.raises(ValueError, match="already prepared"):
        snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.05, total_steps=10)


def test_assigning_a_dense_weight_goes_through_right_inverse(tiny_cnn):
    snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, schedule="constant")
    dense = torch.randn_like(tiny_cnn.conv2.weight)
    tiny_cnn.conv2.weight = dense
    torch.testing.assert_close(tiny_cnn.conv2.weight, dense, atol=1e-6, rtol=0)
    assert isinstance(tiny_cnn.conv2.parametrizations.weight[0], SoftThreshold)


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"final_threshold": -0.1, "total_steps": 10}, ValueError, "final_threshold"),
        ({"final_threshold": float("nan"), "total_steps": 10}, ValueError, "final_threshold"),
        ({"final_threshold": "0.1", "total_steps": 10}, TypeError, "final_threshold"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "cosine"}, ValueError,
         r"schedule must be one of .*s-lats"),
        ({"final_threshold": 0.1, "total_steps": 0}, ValueError, "total_steps"),
        ({"final_threshold": 0.1, "total_steps": -5}, ValueError, "total_steps"),
        ({"final_threshold": 0.1, "total_steps": 10.0}, TypeError, "total_steps"),
        ({"final_threshold": 0.1, "schedule": "s-lats"}, ValueError, "total_steps"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "lats"}, ValueError, "steps_per_epoch"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "lats", "steps_per_epoch": 3}, ValueError,
         "steps_per_epoch"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "pgh"}, ValueError, "beta"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "pgh", "beta": 0.0}, ValueError, "beta"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "pgh", "beta": -2.0}, ValueError, "beta"),
        ({"final_threshold": 0.1, "total_steps": 10, "schedule": "pgh", "beta": 1.0}, ValueError, "beta"),
        ({"schedule": "lr"}, ValueError, "l1_coefficient"),
        ({"schedule": "lr", "l1_coefficient": -1.0}, ValueError, "l1_coefficient"),
        ({"final_threshold": 0.1, "total_steps": 10, "start_step": 10}, ValueError, "start_step"),
        ({"final_threshold": 0.1, "total_steps": 10, "freeze_at": -1}, ValueError, "freeze_at"),
        ({"final_threshold": 0.1, "total_steps": 10, "optimizer": "sgd"}, TypeError, "optimizer"),
        ({"final_threshold": 0.1, "total_steps": 10, "ignored_layers": [3]}, TypeError, "ignored_layers"),
        ({"final_threshold": 0.1, "total_steps": 10, "layer_scale": {"conv1": -1.0}}, ValueError,
         "layer_scale"),
        ({"final_threshold": 0.1, "schedule": 5}, TypeError, "callable"),
    ],
)
def test_bad_arguments_name_the_argument(tiny_cnn, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        snn_lats.SoftThresholdPruner(tiny_cnn, **kwargs)
    assert not any(parametrize.is_parametrized(m) for m in tiny_cnn.modules())  # nothing half-prepared


def test_model_without_prunable_layers_is_an_error():
    with pytest.raises(ValueError, match="no prunable layer"):
        snn_lats.SoftThresholdPruner(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), final_threshold=0.1,
                                     total_steps=10)
    with pytest.raises(ValueError, match="no prunable layer"):
        snn_lats.SoftThresholdPruner(nn.Sequential(nn.Linear(2, 2)), final_threshold=0.1, total_steps=10,
                                     ignored_layers=["0"])
    with pytest.raises(TypeError, match="model"):
        snn_lats.SoftThresholdPruner("resnet50", final_threshold=0.1, total_steps=10)


def test_optimizer_without_the_pruned_weights_is_refused_before_the_model_is_prepared(tiny_cnn):
    optimizer = torch.optim.SGD(tiny_cnn.bn1.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer does not hold the pruned weights of 3 layer"):
        snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, total_steps=10, optimizer=optimizer)
    assert not any(parametrize.is_parametrized(m) for m in tiny_cnn.modules())  # and it can be prepared now
    snn_lats.SoftThresholdPruner(tiny_cnn, final_threshold=0.1, total_steps=10)
    pruner = snn_lats.SoftThresholdPruner(TinyCNN(), final_threshold=0.1, total_steps=10)
    pruner.optimizer = optimizer  # set later: refused at the step, which then leaves the pruner as it was
    with pytest.raises(ValueError, match="optimizer does not hold the pruned weights"):
        pruner.step()
    assert pruner.step_count == 0


def test_fast_and_tensor_threshold_paths_are_bit_identical():
    from snn_lats.parametrizations import _SoftThresholdSTE

    theta = torch.randn(100_000)
    for d in (0.0, 0.013, 0.5):
        d32 = torch.tensor(d)
        fast = _SoftThresholdSTE.apply(theta, d32.item())
        tensor_path = _SoftThresholdSTE.apply(theta, d32)
        reference = torch.sign(theta) * torch.relu(theta.abs() - d32)
        assert torch.equal(fast, tensor_path) and torch.equal(fast, reference)


def test_torch_compile_does_not_recompile_as_the_threshold_grows():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = TinyCNN()
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.1, total_steps=5)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(2, 1, 8, 8)
    for _ in range(5):
        torch.testing.assert_close(compiled(x), model(x), atol=1e-6, rtol=0)
        pruner.step()
    assert counter.frame_count == 1


def test_lr_schedule_without_an_optimizer_fails_at_the_first_step(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, schedule="lr", l1_coefficient=0.1)
    with pytest.raises(ValueError, match=r"optimizer=.*pruner.optimizer"):
        pruner.step()
    assert pruner.step_count == 0 and pruner.threshold == 0.0  # the failed step changed nothing
    pruner.optimizer = torch.optim.SGD(tiny_cnn.parameters(), lr=0.5)
    with pytest.warns(UserWarning, match="'fc' is entirely pruned"):  # d = 0.05 > its largest |θ| = 0.044
        pruner.step()
    assert pruner.threshold == pytest.approx(0.05)


def test_sparsity_report_against_dense_sizes_counts_removed_weights(tiny_cnn):
    """A channel-pruned model against its dense sizes: removed weights count as zeros, totals are the
    dense ones."""
    from snn_lats.sparsity import weight_sizes

    dense = weight_sizes(tiny_cnn)
    assert dense == {"conv1": 72, "conv2": 576, "fc": 5120}
    thin = copy.deepcopy(tiny_cnn)
    thin.conv2 = nn.Conv2d(8, 5, 3, padding=1)  # three output channels removed
    thin.fc = nn.Linear(5 * 8 * 8, 10)
    with torch.no_grad():
        thin.conv1.weight[0, 0, 0, 0] = 0
    report = snn_lats.sparsity_report(thin, dense_sizes=dense)
    assert report.layers["conv1"].zeros == int((thin.conv1.weight == 0).sum()) >= 1
    assert (report.layers["conv2"].zeros, report.layers["conv2"].total) == (576 - 360, 576)
    assert (report.layers["fc"].zeros, report.layers["fc"].total) == (5120 - 3200, 5120)
    with pytest.raises(ValueError, match="dense_sizes: layer 'fc' has 3200 weights"):
        snn_lats.sparsity_report(thin, dense_sizes={**dense, "fc": 10})
