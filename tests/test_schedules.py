import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import snn_lats
from snn_lats.schedules import (
    LATSSchedule,
    PGHSchedule,
    SLATSSchedule,
    simulate_learning_rates,
)

D = 0.7


def test_slats_equals_closed_form():
    sched = SLATSSchedule(D, total_steps=1000)
    for step in [0, 1, 137, 500, 999, 1000, 1500]:
        x = min(step / 1000, 1.0)
        assert sched.threshold_at(step) == pytest.approx(D * (x + math.sin(math.pi * x) / math.pi), abs=1e-15)


def test_slats_with_start_step_is_zero_before_and_reaches_d():
    sched = SLATSSchedule(D, total_steps=300, start_step=100)
    assert sched.threshold_at(0) == sched.threshold_at(100) == 0.0
    x = 50 / 200
    assert sched.threshold_at(150) == pytest.approx(D * (x + math.sin(math.pi * x) / math.pi))
    assert sched.threshold_at(300) == pytest.approx(D)


@pytest.mark.parametrize("x, expected", [(0.10, 0.198), (0.25, 0.475), (0.50, 0.818)])
def test_slats_matches_reference_table(x, expected):
    # lats_paper.md §2, "fraction of D reached at 10% / 25% / 50% of training"
    assert SLATSSchedule(1.0, total_steps=1000).shape(x) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("epochs, steps_per_epoch", [(1, 7), (5, 10), (90, 3), (320, 2)])
def test_lats_ends_exactly_at_d_and_epoch_base_is_the_cumulative_sum(epochs, steps_per_epoch):
    sched = LATSSchedule(D, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    # B(e) closed form == Σ_{k<e} (1 + cos(πk/E)) / (E + 1)
    cumulative = 0.0
    for e in range(epochs):
        assert sched.epoch_base(e) == pytest.approx(cumulative, abs=1e-12)
        cumulative += (1 + math.cos(math.pi * e / epochs)) / (epochs + 1)
    assert cumulative == pytest.approx(1.0, abs=1e-12)
    # the last step of the last epoch, computed by the per-epoch formula (not the clamp), is D
    e, b = epochs - 1, steps_per_epoch
    last = D * (sched.epoch_base(e)
                + b * (1 + math.cos(math.pi * e / epochs)) / (steps_per_epoch * (epochs + 1)))
    assert last == pytest.approx(D, abs=1e-12)
    assert sched.threshold_at(epochs * steps_per_epoch) == D
    assert sched.threshold_at(0) == 0.0


def test_lats_increments_follow_the_per_epoch_cosine():
    E, nb = 8, 5
    sched = LATSSchedule(D, total_steps=E * nb, steps_per_epoch=nb)
    d = [sched.threshold_at(n) for n in range(E * nb + 1)]
    inc = np.diff(d)
    for e in range(E):
        epoch_inc = inc[e * nb : (e + 1) * nb]
        expected = D * (1 + math.cos(math.pi * e / E)) / (nb * (E + 1))
        np.testing.assert_allclose(epoch_inc, expected, atol=1e-12)


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 2.0, 10.0, 100.0])
def test_pgh_endpoints_and_monotone(beta):
    sched = PGHSchedule(1.0, total_steps=1000, beta=beta)
    values = [sched.shape(x) for x in np.linspace(0, 1, 2001)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[-1] == pytest.approx(1.0, abs=1e-12)
    assert all(b >= a - 1e-15 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    "beta, expected",
    [(0.01, (0.436, 0.785, 0.970)), (0.1, (0.318, 0.652, 0.922)), (10, (0.100, 0.285, 0.644)),
     (100, (0.039, 0.135, 0.431))],
)
def test_pgh_matches_reference_table(beta, expected):
    sched = PGHSchedule(1.0, total_steps=1000, beta=beta)
    got = [sched.shape(x) for x in (0.10, 0.25, 0.50)]
    np.testing.assert_allclose(got, expected, atol=5e-4)


def test_pgh_derivative_is_beta_power_times_lr_shape():
    beta, h = 0.1, 1e-6
    sched = PGHSchedule(1.0, total_steps=1000, beta=beta)
    L = math.log(beta)
    denominator = math.pi**2 * (beta - 1) - 2 * L * L
    for x in (0.1, 0.3, 0.6, 0.9):
        numeric = (sched.shape(x + h) - sched.shape(x - h)) / (2 * h)
        analytic = beta**x * L * (math.pi**2 + L * L) * (1 + math.cos(math.pi * x)) / denominator
        assert numeric == pytest.approx(analytic, rel=1e-6)


def _run_lr_schedule(lr_scheduler_factory, total_steps, steps_per_epoch=None, **pruner_kwargs):
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_scheduler = lr_scheduler_factory(optimizer)
    pruner = snn_lats.SoftThresholdPruner(model, schedule="lr", optimizer=optimizer, **pruner_kwargs)
    lambdas, thresholds = [], []
    for k in range(total_steps):
        optimizer.step()
        pruner.step()
        lambdas.append(pruner.l1_coefficient)
        thresholds.append(pruner.threshold)
        if steps_per_epoch is None or (k + 1) % steps_per_epoch == 0:
            lr_scheduler.step()
    return np.array(lambdas), thresholds, pruner


def test_lr_schedule_keeps_lambda_flat_under_cosine():
    lambdas, thresholds, _ = _run_lr_schedule(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=500), 499, l1_coefficient=2e-3
    )
    assert lambdas.std() / lambdas.mean() < 0.01
    assert lambdas.mean() == pytest.approx(2e-3, rel=1e-9)
    lrs = [0.1 * 0.5 * (1 + math.cos(math.pi * k / 500)) for k in range(499)]
    assert thresholds[-1] == pytest.approx(2e-3 * sum(lrs), rel=1e-9)


def test_s_lats_lambda_is_not_flat_under_warmup_but_lr_schedule_is():
    """Why the `lr` schedule exists: S-LATS assumes a cosine from step 0; a warm-up breaks its constant λ."""
    def warmup_cosine(opt):
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=100)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=400)
        return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[100])

    lambdas, _, _ = _run_lr_schedule(warmup_cosine, 499, l1_coefficient=1e-3)
    assert lambdas.std() / lambdas.mean() < 0.01

    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = warmup_cosine(optimizer)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.5, schedule="s-lats", total_steps=500,
                                          optimizer=optimizer)
    slats = []
    for _ in range(499):
        optimizer.step()
        pruner.step()
        slats.append(pruner.l1_coefficient)
        sched.step()
    slats = np.array(slats)
    assert slats.std() / slats.mean() > 0.3


@pytest.mark.parametrize("per_epoch", [False, True])
def test_lr_schedule_solves_lambda_to_reach_final_threshold(per_epoch):
    total, spe = 600, 20

    def factory(opt):
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=(5 if per_epoch else 100))
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(25 if per_epoch else 500))
        return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[5 if per_epoch else 100])

    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_scheduler = factory(optimizer)
    lr_before = optimizer.param_groups[0]["lr"]
    pruner = snn_lats.SoftThresholdPruner(
        model, final_threshold=D, schedule="lr", total_steps=total, optimizer=optimizer,
        lr_scheduler=lr_scheduler, steps_per_epoch=spe if per_epoch else None,
    )
    # solving simulated the scheduler on a copy: the real one is untouched
    assert optimizer.param_groups[0]["lr"] == lr_before and lr_scheduler.last_epoch == 0
    for k in range(total):
        optimizer.step()
        pruner.step()
        if not per_epoch or (k + 1) % spe == 0:
            lr_scheduler.step()
    assert pruner.threshold == pytest.approx(D, rel=1e-9)


def test_simulated_learning_rates_match_a_real_run():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.3, total_steps=50)
    simulated = simulate_learning_rates(optimizer, sched, 50)
    real = []
    for _ in range(50):
        real.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    assert simulated == real


def test_callable_and_constant_schedules():
    model = nn.Linear(3, 3)
    pruner = snn_lats.SoftThresholdPruner(model, schedule=lambda step: 0.01 * step)
    for _ in range(5):
        pruner.step()
    assert pruner.threshold == pytest.approx(0.05)
    assert float(model.parametrizations.weight[0].threshold) == pytest.approx(0.05)

    constant = snn_lats.ConstantSchedule(0.3, start_step=2)
    assert [constant.threshold_at(s) for s in range(4)] == [0.0, 0.0, 0.3, 0.3]


def test_callable_schedule_rejects_negative_values():
    pruner = snn_lats.SoftThresholdPruner(nn.Linear(3, 3), schedule=lambda step: 1.0 - step)
    with pytest.raises(ValueError, match="schedule"):
        pruner.step()
        pruner.step()


def test_lats_is_the_constant_lambda_schedule_under_a_per_epoch_cosine_lr():
    # the Fashion-MNIST sweep showed it end to end (identical accuracies): LATS's closed form == constant λ
    epochs, spe = 6, 7
    thresholds = {}
    for schedule in ("lats", "lr"):
        model = nn.Linear(4, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        solve = {"lr_scheduler": lr_scheduler} if schedule == "lr" else {}  # lats takes no LR scheduler
        pruner = snn_lats.SoftThresholdPruner(model, final_threshold=D, schedule=schedule,
                                              total_steps=epochs * spe, optimizer=optimizer,
                                              steps_per_epoch=spe, **solve)
        thresholds[schedule] = []
        for k in range(epochs * spe):
            optimizer.step()
            pruner.step()
            thresholds[schedule].append(pruner.threshold)
            if (k + 1) % spe == 0:
                lr_scheduler.step()
    np.testing.assert_allclose(thresholds["lats"], thresholds["lr"], rtol=1e-9, atol=1e-12)
