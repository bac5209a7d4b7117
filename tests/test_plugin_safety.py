"""Issue #18, "any SpikingJelly model": Conv1d/Conv3d coverage, ignored_layers that match nothing, all-zero
layers, choosing D, stale model thresholds and ``pruner.attach(optimizer)``."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

import snn_lats
from tests.conftest import TinyCNN, train_steps


class Mixed(nn.Module):
    """One layer of every default type: Conv1d on a sequence, Conv3d on a clip, Conv2d, Linear."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Conv1d(2, 4, 3)  # L 10 -> 8
        self.clip = nn.Conv3d(1, 2, 3)  # 4x6x6 -> 2x4x4
        self.img = nn.Conv2d(1, 2, 3)  # 6x6 -> 4x4
        self.fc = nn.Linear(4 * 8 + 2 * 32 + 2 * 16, 5)

    def forward(self, seq, clip, img):
        parts = [self.seq(seq).flatten(1), self.clip(clip).flatten(1), self.img(img).flatten(1)]
        return self.fc(torch.cat(parts, 1))


def _inputs(n=3):
    return torch.randn(n, 2, 10), torch.randn(n, 1, 4, 6, 6), torch.randn(n, 1, 6, 6)


def _sj_conv_fashion_mnist(channels=4):
    """SpikingJelly's examples/conv_fashion_mnist.py CSNN: [10] is an IF neuron, [11] the classifier."""
    return nn.Sequential(
        layer.Conv2d(1, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Conv2d(channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(channels * 4 * 4, 10, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()),
    )


# 1. layer coverage -----------------------------------------------------------------------------------

def test_every_pruner_covers_conv1d_and_conv3d_including_spikingjelly_layers():
    assert set(snn_lats.DEFAULT_LAYER_TYPES) == {nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear}
    sj = nn.Sequential(layer.Conv1d(2, 3, 3), layer.Conv3d(1, 2, 3))
    assert list(snn_lats.find_prunable_layers(sj)) == ["0", "1"]
    def soft(m):  # each layer's threshold at half its largest weight
        return snn_lats.SoftThresholdPruner(m, 0.5, "constant", compensate=False,
                                            layer_scale={n: float(x.weight.detach().abs().max()) for n, x in
                                                         snn_lats.find_prunable_layers(m).items()})

    for make in (soft,
                 lambda m: snn_lats.MagnitudePruner(m, 0.5, total_steps=1, initial_ratio=0.5),
                 lambda m: snn_lats.LearnedThresholdPruner(m, initial_threshold=1.0)):
        model = Mixed()
        pruner = make(model)
        assert list(pruner.layers) == ["seq", "clip", "img", "fc"]
        model.eval()  # LTP: the hard mask
        model(*_inputs()).sum()
        report = pruner.sparsity_report()
        assert all(0 < s.fraction < 1 for s in report.layers.values()), report


def test_gmp_per_layer_ratio_on_conv1d_and_conv3d_weights():
    model = Mixed()
    pruner = snn_lats.MagnitudePruner(model, 0.5, total_steps=1, initial_ratio=0.5)
    for name in ("seq", "clip"):
        weight = model.get_submodule(name).weight
        n = weight.numel()
        assert int((weight == 0).sum()) == round(0.5 * n)
        theta = model.get_submodule(name).parametrizations.weight.original
        kept = theta.abs()[weight != 0]  # the largest half survived
        assert kept.min() >= theta.abs()[weight == 0].max()
    pruner.squash()


def test_ltp_mac_normalisation_counts_conv1d_and_conv3d_output_positions():
    model = Mixed()
    pruner = snn_lats.LearnedThresholdPruner(model, normalize="macs")
    model(*_inputs())
    # a weight is used once per output position: L_out = 8, D·H·W = 2·4·4 = 32, H·W = 16, 1 for the linear
    assert pruner._macs_per_weight == {"seq": 8, "clip": 32, "img": 16, "fc": 1}


def test_pruner_sparsity_report_covers_exactly_its_own_layers():
    model = Mixed()
    pruner = snn_lats.SoftThresholdPruner(model, 0.2, "constant", compensate=False, layer_types=(nn.Conv1d,))
    assert list(pruner.sparsity_report().layers) == ["seq"]
    pruner.squash()
    assert list(pruner.sparsity_report().layers) == ["seq"]  # also once squashed


# 2. ignored_layers safety -----------------------------------------------------------------------------------

def test_ignoring_the_neuron_next_to_the_classifier_is_an_error_suggesting_it():
    # SpikingJelly's conv_fashion_mnist.py wraps the Sequential as self.conv_fc
    net = nn.Module()
    net.conv_fc = _sj_conv_fashion_mnist()
    with pytest.raises(ValueError, match=r"'conv_fc\.10' is a IFNode, neither a prunable layer .* did you "
                                         r"mean \[.*'conv_fc\.11'"):
        snn_lats.SoftThresholdPruner(net, 0.05, total_steps=10, ignored_layers=["conv_fc.10"])
    with pytest.raises(ValueError, match=r"module 'conv_fc\.10' \(IFNode\) is neither.*'conv_fc\.11'"):
        snn_lats.MagnitudePruner(net, 0.5, 10, ignored_layers=[net.conv_fc[10]])
    assert snn_lats.parametrizations.pruning_parametrization(net.conv_fc[11]) is None  # nothing was prepared
    pruner = snn_lats.SoftThresholdPruner(net, 0.05, total_steps=10, ignored_layers=["conv_fc.11"])
    assert list(pruner.layers) == ["conv_fc.0", "conv_fc.4", "conv_fc.9"]


def test_ignoring_a_container_still_ignores_everything_inside(tiny_cnn):
    model = nn.Sequential(TinyCNN(), nn.Sequential(nn.ReLU(), nn.Linear(10, 3)))
    pruner = snn_lats.SoftThresholdPruner(model, 0.05, total_steps=10, ignored_layers=["0.conv1", model[1]])
    assert list(pruner.layers) == ["0.conv2", "0.fc"]
    with pytest.raises(ValueError, match=r"'1\.0' is a ReLU, neither .*did you mean"):
        snn_lats.find_prunable_layers(model, ignored_layers=["1.0"])
    with pytest.raises(ValueError, match=r"'fcc' names no module of the model; did you mean \['fc'"):
        snn_lats.SoftThresholdPruner(tiny_cnn, 0.05, total_steps=10, ignored_layers=["fcc"])
    with pytest.raises(ValueError, match=r"'bn1' is a BatchNorm2d, neither a prunable layer"):
        snn_lats.SoftThresholdPruner(tiny_cnn, 0.05, total_steps=10, ignored_layers=["bn1"])


# 3. all-zero layers -----------------------------------------------------------------------------------------

def test_a_layer_pruned_entirely_is_warned_once_with_its_largest_weight_and_threshold():
    # the guide's D = 0.05 on SpikingJelly's 1568->512 layer, whose init bound is 1/sqrt(1568) = 0.025
    net = _sj_conv_fashion_mnist(channels=32)
    peak = float(net[9].weight.detach().abs().max())
    assert peak < 1 / 1568 ** 0.5
    pruner = snn_lats.SoftThresholdPruner(net, 0.05, "constant", compensate=False, ignored_layers=["11"])
    with pytest.warns(UserWarning, match=rf"layer '9' is entirely pruned .* at step 1: its largest \|θ\| is "
                                         rf"{peak:.4g}, its threshold d = 0\.05") as record:
        pruner.step()
    assert [str(w.message).split("'")[1] for w in record if "entirely pruned" in str(w.message)] == ["9"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per layer: no second warning
        for _ in range(100):
            pruner.step()
    assert pruner.check_all_zero() == ["9"]


def test_no_all_zero_warning_when_every_layer_keeps_weights_and_for_gmp_and_ltp_when_one_is_wiped(tiny_cnn):
    pruner = snn_lats.SoftThresholdPruner(tiny_cnn, 0.01, "constant", compensate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.step()
    assert pruner.check_all_zero() == []
    model = TinyCNN()
    ltp = snn_lats.LearnedThresholdPruner(model, initial_threshold=1.0)
    with torch.no_grad():
        model.fc.parametrizations.weight[0].threshold.fill_(1e6)
    with pytest.warns(UserWarning, match=r"layer 'fc' is entirely pruned .*largest θ² is .* <= τ ="):
        ltp.step()
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.fill_(1e-3)  # the smallest weights of all: global ranking takes the whole layer
    gmp = snn_lats.MagnitudePruner(model, 0.4, 1, initial_ratio=0.4, global_pruning=True)
    with pytest.warns(UserWarning, match=r"layer '1' is entirely pruned .*its mask prunes all 8 weights"):
        gmp.step()


# 4. choosing D ----------------------------------------------------------------------------------------------

def _two_linears(a, b):
    model = nn.Sequential(nn.Linear(len(a), 1, bias=False), nn.Linear(len(b), 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([a]))
        model[1].weight.copy_(torch.tensor([b]))
    return model


def test_suggest_threshold_is_the_kth_smallest_weight_and_the_pruner_reaches_it_exactly():
    signs = [(-1) ** k for k in range(10)]
    a = [s * (2 * k + 1) / 100 for s, k in zip(signs, range(10), strict=True)]  # 0.01, 0.03, ..., 0.19
    b = [s * (2 * k + 2) / 100 for s, k in zip(signs, range(10), strict=True)]  # 0.02, 0.04, ..., 0.20
    model = _two_linears(a, b)
    d = snn_lats.suggest_threshold(model, 0.3)  # k = 6 of the 20 weights: 0.01 ... 0.06
    assert d == pytest.approx(0.06, abs=1e-8)
    pruner = snn_lats.SoftThresholdPruner(model, d, "constant", compensate=False)
    report = pruner.sparsity_report()
    assert (report.layers["0"].zeros, report.layers["1"].zeros, report.sparsity) == (3, 3, 0.3)
    assert snn_lats.suggest_threshold(model, 0.0) == 0.0
    assert snn_lats.suggest_threshold(model, 0.3) == d  # on a prepared model: the latent θ


def test_suggest_threshold_divides_by_the_layer_scale():
    a = [(2 * k + 1) / 100 for k in range(10)]  # 1, 3, ..., 19 (/100)
    b = [2 * (k + 1.25) / 100 for k in range(10)]  # /2: 1.25, 2.25, ..., 10.25 (/100)
    model = _two_linears(a, b)
    d = snn_lats.suggest_threshold(model, 0.25, layer_scale={"1": 2.0})  # k = 5: 1, 1.25, 2.25, 3, 3.25
    assert d == pytest.approx(0.0325, abs=1e-8)
    pruner = snn_lats.SoftThresholdPruner(model, d, "constant", compensate=False, layer_scale={"1": 2.0})
    report = pruner.sparsity_report()
    assert (report.layers["0"].zeros, report.layers["1"].zeros) == (2, 3)


def test_suggest_threshold_warns_on_ties_and_rejects_bad_sparsity():
    model = _two_linears([0.1, 0.1, 0.3, 0.4], [0.5, 0.6])
    with pytest.warns(UserWarning, match=r"1 weights tie .* zeroes 0\.333333 of the weights instead of 0\.2"):
        assert snn_lats.suggest_threshold(model, 0.2) == pytest.approx(0.1)
    for bad, error in ((1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), (True, TypeError),
                       ("0.5", TypeError)):
        with pytest.raises(error, match=r"sparsity must be a number in \[0, 1\)"):
            snn_lats.suggest_threshold(model, bad)
    with pytest.raises(ValueError, match="layer_scale names layers that are not pruned"):
        snn_lats.suggest_threshold(model, 0.5, ignored_layers=["1"], layer_scale={"1": 2.0})


def test_relative_weight_scale_is_each_layers_std_or_max_over_their_mean():
    model = _two_linears([1.0, -1.0, 1.0, -1.0], [3.0, -3.0])  # std 1 and 3, max 1 and 3: mean 2
    assert snn_lats.relative_weight_scale(model) == pytest.approx({"0": 0.5, "1": 1.5})
    assert snn_lats.relative_weight_scale(model, "max") == pytest.approx({"0": 0.5, "1": 1.5})
    scale = snn_lats.relative_weight_scale(model)
    pruner = snn_lats.SoftThresholdPruner(model, 0.2, "constant", layer_scale=scale)
    assert [float(p.threshold) for _, _, p in pruner.parametrizations()] == pytest.approx([0.1, 0.3])
    assert snn_lats.relative_weight_scale(model, ignored_layers=["1"]) == {"0": 1.0}
    with pytest.raises(ValueError, match=r"statistic must be one of \('std', 'max'\), got 'mean'"):
        snn_lats.relative_weight_scale(model, "mean")


# 5. stale thresholds ----------------------------------------------------------------------------------------

def _trained_slats(steps=4):
    torch.manual_seed(0)
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = snn_lats.SoftThresholdPruner(model, 0.05, "s-lats", total_steps=8, optimizer=optimizer)
    train_steps(model, pruner, optimizer, steps)
    return model, pruner


def test_stepping_after_loading_only_the_model_state_is_refused_and_changes_nothing():
    model, pruner = _trained_slats()
    saved_model, saved_pruner = model.state_dict(), pruner.state_dict()
    fresh = TinyCNN()
    fresh_pruner = snn_lats.SoftThresholdPruner(fresh, 0.05, "s-lats", total_steps=8)
    fresh.load_state_dict(saved_model)
    with pytest.raises(RuntimeError, match=r"model's threshold for 'conv1' is .* this pruner \(at step 0\) "
                                           r"last set 0 .*pruner\.load_state_dict"):
        fresh_pruner.step()
    assert fresh_pruner.step_count == 0
    assert float(fresh.conv1.parametrizations.weight[0].threshold) == pytest.approx(pruner.threshold)
    fresh_pruner.load_state_dict(saved_pruner)
    fresh_pruner.step()  # now consistent
    assert fresh_pruner.step_count == 5 and fresh_pruner.threshold > pruner.threshold
    # the other order: pruner state first, then the model
    other = TinyCNN()
    other_pruner = snn_lats.SoftThresholdPruner(other, 0.05, "s-lats", total_steps=8)
    other_pruner.load_state_dict(saved_pruner)
    other.load_state_dict(saved_model)
    other_pruner.step()
    assert other_pruner.threshold == fresh_pruner.threshold


def test_a_loaded_layer_scale_that_differs_is_stale_too():
    model, pruner = _trained_slats(0)
    fresh = TinyCNN()
    fresh_pruner = snn_lats.SoftThresholdPruner(fresh, 0.05, "s-lats", total_steps=8, layer_scale={"fc": 2.0})
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match=r"'fc' is 0 \(scale 1\), this pruner .* last set 0 \(scale 2\)"):
        fresh_pruner.step()


def test_ltp_and_gmp_refuse_a_model_state_loaded_without_theirs():
    model = TinyCNN()
    snn_lats.LearnedThresholdPruner(model, temperature=0.5)
    fresh = TinyCNN()
    ltp = snn_lats.LearnedThresholdPruner(fresh, temperature=0.25)
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match=r"temperature for 'conv1' is 0\.5, this pruner's is 0\.25"):
        ltp.step()

    model = TinyCNN()
    gmp = snn_lats.MagnitudePruner(model, 0.9, total_steps=10, frequency=1)
    for _ in range(6):
        gmp.step()
    saved_model, saved_pruner = model.state_dict(), gmp.state_dict()
    fresh = TinyCNN()
    fresh_gmp = snn_lats.MagnitudePruner(fresh, 0.9, total_steps=10, frequency=1)
    fresh.load_state_dict(saved_model)
    zeros = int((fresh.fc.weight == 0).sum())
    with pytest.raises(RuntimeError, match=r"mask for 'conv1' prunes \d+ weights, this pruner \(at step 0\) "
                                           r"last pruned 0"):
        fresh_gmp.step()
    assert fresh_gmp.step_count == 0 and int((fresh.fc.weight == 0).sum()) == zeros  # nothing regrew
    fresh_gmp.load_state_dict(saved_pruner)
    fresh_gmp.step()
    assert fresh_gmp.step_count == 7 and int((fresh.fc.weight == 0).sum()) > zeros


# 6. attach -----------------------------------------------------------------------------------------

def test_attach_steps_the_pruner_after_each_real_optimizer_step_and_detaches():
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    pruner = snn_lats.SoftThresholdPruner(model, l1_coefficient=0.01, schedule="lr")
    handle = pruner.attach(optimizer)
    assert pruner.optimizer is optimizer
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    lrs = []
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # steps the pruner, with this step's LR (before the scheduler's step)
        optimizer.zero_grad()
        lr_scheduler.step()
    assert pruner.step_count == 3 and pruner.threshold == pytest.approx(0.01 * sum(lrs))
    assert lrs == [0.1, 0.1, 0.05]
    with pytest.raises(RuntimeError, match="attached to an optimizer, which steps it already"):
        pruner.step()
    with pytest.raises(RuntimeError, match="already attached"):
        pruner.attach(optimizer)
    handle.remove()
    optimizer.step()
    assert pruner.step_count == 3
    pruner.step()  # by hand again once detached
    assert pruner.step_count == 4


def test_attach_does_not_step_on_a_step_gradscaler_skips():
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = snn_lats.MagnitudePruner(model, 0.5, total_steps=10)
    pruner.attach(optimizer)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    model.fc.bias.grad[0] = float("inf")  # overflow: the scaler skips optimizer.step()
    scaler.step(optimizer)
    scaler.update()
    assert pruner.step_count == 0
    optimizer.zero_grad()
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    scaler.step(optimizer)
    scaler.update()
    assert pruner.step_count == 1


def test_attach_rejects_an_optimizer_without_the_pruned_weights_and_changes_nothing():
    model = TinyCNN()
    pruner = snn_lats.SoftThresholdPruner(model, 0.05, total_steps=10)
    partial = torch.optim.SGD(model.fc.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"does not hold the pruned weights of 2 layer\(s\), e\.g\. "
                                         r"\['conv1', 'conv2'\]"):
        pruner.attach(partial)
    assert pruner.optimizer is None and pruner._attachment is None
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        pruner.attach(model)
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    with pytest.raises(ValueError, match="pruner.optimizer is another optimizer"):
        pruner.attach(other)
    with pruner.attach(pruner.optimizer) as handle:
        assert pruner._attachment is handle
    assert pruner._attachment is None


# 7. the guide's per-epoch warm-up + cosine: schedule="lr" keeps λ constant and ends at D

def test_lr_schedule_with_a_per_epoch_warmup_cosine_keeps_lambda_constant_and_reaches_d():
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    epochs, steps_per_epoch, warmup_epochs = 5, 3, 2
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_epochs)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs)
    lr_scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine],
                                                         milestones=[warmup_epochs])
    pruner = snn_lats.SoftThresholdPruner(model, 0.02, "lr", total_steps=epochs * steps_per_epoch,
                                          optimizer=optimizer, lr_scheduler=lr_scheduler,
                                          steps_per_epoch=steps_per_epoch)
    pruner.attach(optimizer)
    lambdas, lrs = [], []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # no gradients: only the pruner moves
            lambdas.append(pruner.l1_coefficient)
        lr_scheduler.step()
    assert len(set(lrs)) == epochs  # the LR changed once per epoch, with the warm-up
    assert lambdas == pytest.approx([0.02 / sum(lrs)] * len(lrs), rel=1e-9)
    assert pruner.threshold == pytest.approx(0.02, rel=1e-12)


def test_all_zero_warning_names_a_model_that_is_itself_the_layer():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(0.1)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.5, schedule="constant", compensate=False)
    with pytest.warns(UserWarning, match=r"the model itself \(Linear\) is entirely pruned"):
        pruner.step()
