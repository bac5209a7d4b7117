"""The pruner protocol: one loop, calling every hook of snn_lats.Pruner, drives every pruner exactly as the
hand-written loop each method needed before; each parametrization bakes its own state_dict entries."""
import pytest
import torch
from torch import nn

import snn_lats
from snn_lats import LearnedThresholdPruner, MagnitudePruner, Pruner, SoftThresholdPruner, squash_state_dict
from snn_lats.structured import REGULARIZERS, ChannelRegularizer, GroupLasso, OCSPruner, Shrink
from tests.conftest import TinyCNN


def batches(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen))
            for _ in range(n)]


def protocol_loop(model, pruner, optimizer, epochs, steps):
    """The generic loop of snn_lats.pruner's docstring: every hook, no hasattr, no method names."""
    for epoch in range(epochs):
        pruner.epoch_start(epoch)
        for x, y in batches(steps, seed=epoch):
            loss = nn.functional.cross_entropy(model(x), y)
            if (term := pruner.regularization()) is not None:
                loss = loss + term
            optimizer.zero_grad()
            loss.backward()
            pruner.regularize()
            optimizer.step()
            pruner.step()
        if pruner.epoch_end(epoch):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return optimizer


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", [
    lambda m: SoftThresholdPruner(m, 0.02, "s-lats", total_steps=12),
    lambda m: MagnitudePruner(m, pruning_ratio=0.8, total_steps=12, frequency=2),
], ids=["soft-threshold", "magnitude"])
def test_protocol_loop_equals_the_plain_loop_for_weight_pruners(make):
    torch.manual_seed(0)
    a = TinyCNN()
    b = TinyCNN()
    b.load_state_dict(a.state_dict())
    pa, pb = make(a), make(b)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.05), torch.optim.SGD(b.parameters(), lr=0.05)
    protocol_loop(a, pa, opt_a, epochs=3, steps=4)
    for epoch in range(3):  # the loop these pruners always needed: step after the optimizer, nothing else
        for x, y in batches(4, seed=epoch):
            opt_b.zero_grad()
            nn.functional.cross_entropy(b(x), y).backward()
            opt_b.step()
            pb.step()
    assert pa.state_dict() == pb.state_dict() and pa.step_count == 12
    for key, value in weights(a).items():
        torch.testing.assert_close(value, weights(b)[key], rtol=0, atol=0, msg=key)
    assert pa.log_dict() == pb.log_dict()
    assert pa.sparsity_report().sparsity > 0.1


def test_protocol_loop_equals_the_plain_loop_for_ltp():
    torch.manual_seed(0)
    a, b = TinyCNN(), TinyCNN()
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05)  # built before the pruner: τ joins through the hook
    pa, pb = LearnedThresholdPruner(a, l0_weight=0.5), LearnedThresholdPruner(b, l0_weight=0.5)
    for group in pa.extra_param_groups(0.2):
        opt_a.add_param_group(group)
    opt_b = torch.optim.SGD(pb.param_groups(threshold_lr=0.2), lr=0.05)
    protocol_loop(a, pa, opt_a, epochs=2, steps=4)
    for epoch in range(2):
        for x, y in batches(4, seed=epoch):
            opt_b.zero_grad()
            (nn.functional.cross_entropy(b(x), y) + pb.regularization()).backward()
            opt_b.step()
            pb.step()
    for key, value in weights(a).items():
        torch.testing.assert_close(value, weights(b)[key], msg=key)
    assert [float(t) for t in pa.thresholds()] == pytest.approx([float(t) for t in pb.thresholds()])
    assert all(float(t) != 0 for t in pa.thresholds())  # τ trained: the extra group reached the optimizer
    # float32 means
    assert pa.log_dict() == {"band_fraction": pytest.approx(pb.report().band_fraction, abs=1e-6)}


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def ocs(model, regularizer, optimizer):
    return OCSPruner(model, torch.randn(1, 1, 8, 8), 0.4, monitor_start_epoch=0, reg_start_epoch=0,
                     reg_init=0.5, prune_epoch_cap=2, regularizer=regularizer, optimizer=optimizer)


@pytest.mark.parametrize("regularizer", list(REGULARIZERS))
def test_protocol_loop_equals_the_plain_loop_for_ocs(regularizer):
    torch.manual_seed(0)
    a, b = SmallCNN(), SmallCNN()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.05), torch.optim.SGD(b.parameters(), lr=0.05)
    pa, pb = ocs(a, regularizer, opt_a), ocs(b, regularizer, opt_b)
    protocol_loop(a, pa, opt_a, epochs=4, steps=3)
    for epoch in range(4):  # the OCS-specific loop train.py had before the protocol
        pb.epoch_start(epoch)
        for x, y in batches(3, seed=epoch):
            opt_b.zero_grad()
            nn.functional.cross_entropy(b(x), y).backward()
            if regularizer == "group_lasso":
                pb.regularize()
            opt_b.step()
            if regularizer == "shrink":
                pb.step()
        if pb.should_prune:
            pb.prune()
            opt_b = torch.optim.SGD(b.parameters(), lr=0.05)
    assert pa.pruned and pb.pruned and pa.prune_epoch == pb.prune_epoch == 2
    assert pa.state_dict() == pb.state_dict()
    for key, value in weights(a).items():
        torch.testing.assert_close(value, weights(b)[key], rtol=0, atol=0, msg=key)
    assert pa.log_dict() == {}  # nothing is searched once the channels are gone


def test_ocs_hooks_tell_the_loop_when_parameters_change():
    model = SmallCNN()
    pruner = ocs(model, "shrink", torch.optim.SGD(model.parameters(), lr=0.05))
    seen = []
    for epoch in range(4):
        pruner.epoch_start(epoch)
        figures = pruner.log_dict()
        seen.append((pruner.structure_change_due, pruner.epoch_end(epoch)))
        if epoch < 2:
            assert set(figures) == {"stability", "reg_strength", "candidate_macs"}
            # +δ at even epochs
            assert figures["reg_strength"] == pytest.approx(0.5 + 1e-4 * (epoch // 2 + 1))
    assert seen == [(False, False), (False, False), (True, True), (False, False)]


def test_a_custom_regularizer_strategy_is_called_only_while_regularising():
    calls = []

    class Recorder(ChannelRegularizer):
        name = "recorder"

        def regularize(self, pruner, strength):
            calls.append(("regularize", pruner._epoch, strength))

        def step(self, pruner, strength, lr):
            calls.append(("step", pruner._epoch, strength))

    model = SmallCNN()
    pruner = OCSPruner(model, torch.randn(1, 1, 8, 8), 0.4, monitor_start_epoch=0, reg_start_epoch=1,
                       reg_init=0.25, reg_delta=0.0, regularizer=Recorder())
    for epoch in range(2):
        pruner.epoch_start(epoch)
        pruner.regularize()
        pruner.step()
    assert calls == [("regularize", 1, 0.25), ("step", 1, 0.25)]
    assert isinstance(ocs(SmallCNN(), "shrink", None).regularizer, Shrink)
    assert isinstance(ocs(SmallCNN(), "group_lasso", None).regularizer, GroupLasso)
    with pytest.raises(ValueError, match=r"regularizer must be one of \('shrink', 'group_lasso'\)"):
        ocs(SmallCNN(), "l1", None)


def test_base_protocol_defaults_do_nothing():
    pruner = Pruner()
    pruner.model = nn.Linear(2, 2)
    assert pruner.regularization() is None and pruner.extra_param_groups(0.1) == []
    assert pruner.epoch_end(0) is False and pruner.structure_change_due is False
    assert pruner.log_dict() == {} and pruner.state_dict() == {} and pruner.squash() is pruner.model
    assert issubclass(SoftThresholdPruner, Pruner) and issubclass(OCSPruner, Pruner)


# ------------------------------------------------------------------------------------- squash_state_dict
def prepared(kind):
    torch.manual_seed(0)
    model = TinyCNN()
    if kind == "soft":
        pruner = SoftThresholdPruner(model, 0.05, "constant", compensate=False)
    elif kind == "soft-frozen":
        pruner = SoftThresholdPruner(model, 0.05, "constant", compensate=False, freeze_at=0)
    elif kind == "magnitude":
        pruner = MagnitudePruner(model, pruning_ratio=0.7, total_steps=1)
        pruner.step()  # the ramp's end: 70 % of the weights masked
    else:
        pruner = LearnedThresholdPruner(model)
        with torch.no_grad():
            for t in pruner.thresholds():
                t.fill_(0.8)
    return model, pruner


@pytest.mark.parametrize("kind", ["soft", "soft-frozen", "magnitude", "ltp"])
def test_squash_state_dict_asks_each_parametrization(kind):
    model, pruner = prepared(kind)
    offline = squash_state_dict(model.state_dict())
    squashed = pruner.squash().state_dict()
    assert offline.keys() == squashed.keys()
    for key in squashed:
        torch.testing.assert_close(offline[key], squashed[key], rtol=0, atol=0, msg=key)
    assert (offline["conv2.weight"] == 0).float().mean() > 0.05  # something was pruned


def test_squash_state_dict_names_entries_no_parametrization_has():
    model, _ = prepared("soft")
    state = dict(model.state_dict())
    state["conv1.parametrizations.weight.0.unit"] = torch.tensor(1.0)  # LTP's entry on a soft threshold
    with pytest.raises(ValueError, match=r"cannot squash conv1.weight: no snn_lats parametrization has the "
                                         r"state entries \['scale', 'threshold', 'unit'\]"):
        squash_state_dict(state)
    assert snn_lats.parametrizations.parametrization_for_state({"mask"}) is snn_lats.BinaryMask
