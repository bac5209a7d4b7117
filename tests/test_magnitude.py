import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import snn_lats

from .conftest import TinyCNN, train_steps


def test_cubic_ramp_matches_zhu_gupta():
    pruner = snn_lats.MagnitudePruner(TinyCNN(), pruning_ratio=0.9, total_steps=110, start_step=10,
                                      initial_ratio=0.1, frequency=10)
    for t in (0, 9, 10, 35, 60, 110, 200):
        x = min(max((t - 10) / 100, 0), 1)
        expected = 0.0 if t < 10 else 0.9 + (0.1 - 0.9) * (1 - x) ** 3
        assert pruner.target_sparsity(t) == pytest.approx(expected, abs=1e-15)


def test_every_layer_follows_the_ramp_at_each_update():
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = snn_lats.MagnitudePruner(model, pruning_ratio=0.8, total_steps=40, frequency=10)
    for block in range(4):
        train_steps(model, pruner, optimizer, 10, seed=block)  # ends on an update step (10, 20, 30, 40)
        s = pruner.target_sparsity(pruner.step_count)
        for name, _, p in pruner.parametrizations():
            assert int((~p.mask).sum()) == round(s * p.mask.numel()), (name, pruner.step_count)
    assert pruner.target_sparsity(40) == 0.8
    assert pruner.sparsity_report().sparsity == pytest.approx(0.8, abs=2e-3)


def test_mask_update_keeps_exactly_the_largest_magnitudes():
    model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 10))
    pruner = snn_lats.MagnitudePruner(model, pruning_ratio=0.5, total_steps=1, initial_ratio=0.25)
    for _, module, p in pruner.parametrizations():
        theta = module.parametrizations.weight.original.detach().abs()
        kept, dropped = theta[p.mask], theta[~p.mask]
        assert dropped.numel() == round(0.25 * theta.numel())
        assert kept.min() >= dropped.max()
    pruner.step()  # reaches 0.5 at total_steps=1, ranking the already-masked weights as 0
    for _, _, p in pruner.parametrizations():
        assert int((~p.mask).sum()) == round(0.5 * p.mask.numel())


def test_global_pruning_ranks_all_layers_together():
    model = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 20))
    with torch.no_grad():
        model[1].weight.mul_(10)  # the second layer's weights are all larger
    pruner = snn_lats.MagnitudePruner(model, pruning_ratio=0.4, total_steps=1, initial_ratio=0.4,
                                      global_pruning=True)
    report = pruner.sparsity_report()
    assert report.zeros == round(0.4 * 800)
    theta = torch.cat([m.parametrizations.weight.original.detach().abs().flatten() for m in model])
    mask = torch.cat([p.mask.flatten() for _, _, p in pruner.parametrizations()])
    assert theta[mask].min() >= theta[~mask].max()
    assert report.layers["0"].fraction > report.layers["1"].fraction


def test_pruned_weights_stay_zero_and_squash_loads_strictly():
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    pruner = snn_lats.MagnitudePruner(model, pruning_ratio=0.7, total_steps=20, frequency=5)
    train_steps(model, pruner, optimizer, 20)
    mask = model.conv2.weight.detach() == 0
    train_steps(model, pruner, optimizer, 10, seed=3)  # past total_steps: masks fixed
    assert torch.equal(model.conv2.weight.detach() == 0, mask)
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    before = model(x)
    pruner.squash()
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    TinyCNN().load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="squash"):
        pruner.step()


def test_resume_is_exact(tmp_path):
    def setup():
        torch.manual_seed(0)
        model = TinyCNN()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, optimizer, snn_lats.MagnitudePruner(model, pruning_ratio=0.7, total_steps=30,
                                                          frequency=4)

    model, optimizer, pruner = setup()
    train_steps(model, pruner, optimizer, 15, seed=1)
    train_steps(model, pruner, optimizer, 15, seed=2)
    straight = model.state_dict()

    model, optimizer, pruner = setup()
    train_steps(model, pruner, optimizer, 15, seed=1)
    torch.save({"model": model.state_dict(), "opt": optimizer.state_dict(), "pruner": pruner.state_dict()},
               tmp_path / "c.pth")
    model, optimizer, pruner = setup()
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["opt"])
    pruner.load_state_dict(ckpt["pruner"])
    train_steps(model, pruner, optimizer, 15, seed=2)
    for key, value in straight.items():
        assert torch.equal(value, model.state_dict()[key]), key


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"pruning_ratio": 1.0, "total_steps": 10}, "pruning_ratio"),
        ({"pruning_ratio": -0.1, "total_steps": 10}, "pruning_ratio"),
        ({"pruning_ratio": 0.5, "total_steps": 0}, "total_steps"),
        ({"pruning_ratio": 0.5, "total_steps": 10, "frequency": 0}, "frequency"),
        ({"pruning_ratio": 0.5, "total_steps": 10, "initial_ratio": 0.6}, "initial_ratio"),
        ({"pruning_ratio": 0.5, "total_steps": 10, "start_step": 10}, "start_step"),
        ({"pruning_ratio": 0.5, "total_steps": 10, "ignored_layers": ["nope"]}, "ignored_layers"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, pattern):
    model = TinyCNN()
    with pytest.raises(ValueError, match=pattern):
        snn_lats.MagnitudePruner(model, **kwargs)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
