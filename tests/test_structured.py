"""snn_lats.structured: OCSPruner, the MAC counter, channel groups, stability, and structure specs."""
from __future__ import annotations

import copy
import io
import json
import warnings

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import models
from snn_lats import SoftThresholdPruner
from snn_lats.structured import (
    GraphTraceError,
    OCSPruner,
    StabilityTracker,
    apply_structure,
    channels_to_keep,
    count_macs,
    group_saliency,
    jaccard,
    regularization_should_start,
    structure_spec,
)

SEW_KW = dict(T=2, stem="cifar", width_multiplier=0.25, num_classes=10)
CASES = {
    # name: (registry name, kwargs, example input shape, dtype); float64 where CPU kernels are fast enough
    # (depthwise convs are not), so that removing zero channels must reproduce outputs to 1e-10
    "sew18": ("sew_resnet18", SEW_KW, (1, 3, 16, 16), torch.float64),
    "resnet50": ("resnet50", dict(num_classes=10), (1, 3, 32, 32), torch.float64),
    "mobilenet": ("mobilenet_v1", dict(width_multiplier=0.25, num_classes=10), (1, 3, 32, 32), torch.float32),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


class SmallCNN(nn.Module):
    """conv-BN-ReLU ×2, then a flatten into fc (a coupling with 4 fc inputs per channel)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 2 * 2, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))


def run(model, x):
    out = model(x)
    functional.reset_net(model)
    return out


def flop_counter_macs(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(model, x)
    return counter.get_total_flops() // 2


def randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen, dtype=m.weight.dtype) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen, dtype=m.bias.dtype) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=gen,
                                         dtype=m.running_mean.dtype) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=gen, dtype=m.running_var.dtype) + 0.5


def zero_channels(pruner, selection):
    """Make the selected channels output exactly 0: zero out-weights (and biases), BN γ = β = 0."""
    with torch.no_grad():
        for group in pruner.groups:
            idxs = torch.as_tensor(selection[group.key], dtype=torch.long)
            for member in group.members:
                chosen = member.idxs[torch.isin(member.root, idxs)]
                if member.role in ("out", "depthwise"):
                    member.module.weight[chosen] = 0
                    if member.module.bias is not None:
                        member.module.bias[chosen] = 0
                elif member.role == "bn":
                    member.module.weight[chosen] = 0
                    member.module.bias[chosen] = 0


@pytest.fixture(scope="module", params=list(CASES))
def pruned_case(request):
    """Each model in float64 with random BN statistics; the saliency selection for a 50% MAC cut is zeroed
    on purpose, then removed with prune(selection=...). Outputs before/after, MACs and spec are kept."""
    name, kw, shape, dtype = CASES[request.param]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = models.create_model(name, **kw).to(dtype).eval()
    randomize_bn(model, gen)
    example = torch.randn(*shape, generator=gen, dtype=dtype)
    x = torch.randn(2, *shape[1:], generator=gen, dtype=dtype)
    pruner = OCSPruner(model, example, 0.5)
    assert pruner.dense_flops == count_macs(model, example)
    masks, predicted = pruner.select()
    selection = {g.key: m.nonzero().flatten().tolist() for g, m in zip(pruner.groups, masks, strict=True)}
    zero_channels(pruner, selection)
    with torch.no_grad():
        before = run(model, x)
    dense_copy = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the MAC model's prediction must equal the measured count
        spec = pruner.prune(selection=selection)
    with torch.no_grad():
        after = run(model, x)
    return dict(name=name, kw=kw, dtype=dtype, model=model, dense=dense_copy, pruner=pruner, example=example,
                x=x, before=before, after=after, predicted=predicted, spec=spec, selection=selection)


# -------------------------------------------------------------------------------------------- graph, pruning
def test_removing_zeroed_channels_leaves_outputs_unchanged(pruned_case):
    c = pruned_case
    assert sum(len(v) for v in c["selection"].values()) > 0
    params = sum(p.numel() for p in c["model"].parameters())
    assert params < 0.9 * sum(p.numel() for p in c["dense"].parameters())
    tol = TOLERANCE[c["dtype"]]
    torch.testing.assert_close(c["after"], c["before"], rtol=tol, atol=tol)
    assert c["before"].abs().max() > 1e-3  # not a trivially zero output


def test_removing_a_live_channel_changes_outputs():
    """Control for the exactness test: the same comparison detects the removal of a channel that is not
    zero."""
    gen = torch.Generator().manual_seed(1)
    model = models.create_model("sew_resnet18", **SEW_KW).double().eval()
    randomize_bn(model, gen)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64) * 3
    pruner = OCSPruner(model, x[:1], 0.5)
    with torch.no_grad():
        before = run(model, x)
    stem = next(g for g in pruner.groups if any(m.name == "conv1" and m.role == "out" for m in g.members))
    pruner.prune(selection={stem.key: [0, 1, 2, 3]})  # the stem's group: every stage-1 residual addition
    with torch.no_grad():
        assert (run(model, x) - before).abs().max() > 1e-3


def test_pruned_models_train_and_meet_the_flops_target(pruned_case):
    c = pruned_case
    model, pruner = c["model"], c["pruner"]
    measured = count_macs(model, c["example"])
    assert measured == pruner.pruned_flops == c["predicted"]
    assert abs(pruner.achieved_flops_reduction - 0.5) <= 0.005
    assert abs(pruner.candidate_flops_reduction - 0.5) <= 0.005
    model.train()
    out = run(model, c["x"])
    out.sum().backward()
    assert out.shape == (2, 10)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


def test_mac_counter_matches_flop_counter_mode(pruned_case):
    """Our hook counter equals PyTorch's FlopCounterMode / 2 on the dense and the pruned model (for SEW at T=2
    that is the sum over both time steps), so the achieved reduction is cross-checked independently."""
    c = pruned_case
    dense_macs = flop_counter_macs(c["dense"], c["example"])
    pruned_macs = flop_counter_macs(c["model"], c["example"])
    assert count_macs(c["dense"], c["example"]) == dense_macs == c["pruner"].dense_flops
    assert count_macs(c["model"], c["example"]) == pruned_macs
    assert abs((1 - pruned_macs / dense_macs) - 0.5) <= 0.005


def test_round_trip_rebuilds_the_thin_model_from_the_spec(pruned_case):
    c = pruned_case
    buffer = io.BytesIO()
    torch.save({"model": c["model"].state_dict(), "structure": json.loads(json.dumps(c["spec"]))}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    rebuilt = models.create_model(c["name"], structure=ckpt["structure"], **c["kw"]).to(c["dtype"]).eval()
    rebuilt.load_state_dict(ckpt["model"], strict=True)
    assert structure_spec(rebuilt) == c["spec"]
    with torch.no_grad():
        assert torch.equal(run(rebuilt, c["x"]), run(c["model"], c["x"]))
    dense = models.create_model(c["name"], **c["kw"])
    with pytest.raises(RuntimeError):
        dense.load_state_dict(ckpt["model"], strict=True)  # the thin weights do not fit the dense model


def test_sew_resnet_groups_follow_residual_additions():
    model = models.create_model("sew_resnet18", **SEW_KW)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), 0.5)
    assert pruner.classifier == "fc" and "fc" in pruner.ignored_layers
    assert len(pruner.groups) == 12  # 13 conv/linear groups, minus the classifier's
    group = next(g for g in pruner.groups
                 if any(m.name == "layer4.1.conv2" and m.role == "out" for m in g.members))
    roles = {(m.name, m.role) for m in group.members}
    assert {("layer4.0.conv2", "out"), ("layer4.0.downsample.0", "out"), ("layer4.0.downsample.1", "bn"),
            ("layer4.1.bn2", "bn"), ("fc", "in"), ("layer4.1.conv1", "in")} <= roles
    assert all(getattr(m, "step_mode", "m") == "m" for m in model.modules())  # traced in 's', restored


def test_ignored_layers_keep_their_width_and_typos_are_named():
    model = models.create_model("sew_resnet18", **SEW_KW)
    with pytest.raises(ValueError, match="did you mean"):
        OCSPruner(model, torch.randn(1, 3, 16, 16), 0.5, ignored_layers=["layer1.0.conv"])
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), 0.3, ignored_layers=["layer2"])
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruner.prune()
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name.startswith("layer2."):
            assert m.out_channels == widths[name]
    assert abs(pruner.achieved_flops_reduction - 0.3) <= 0.005


# ------------------------------------------------------------------------------------------------ saliency
def test_group_saliency_and_floor_match_the_formula():
    model = SmallCNN()
    pruner = OCSPruner(model, torch.randn(1, 3, 4, 4), 0.4)
    keys = [g.key for g in pruner.groups]
    assert sorted(keys) == ["conv1", "conv2"]
    g2 = pruner.groups[keys.index("conv2")]  # conv2 out, bn2, fc in (4 inputs per channel after the flatten)
    w, gamma, fc = model.conv2.weight.detach(), model.bn2.weight.detach(), model.fc.weight.detach()
    by_hand = ((w.pow(2).flatten(1).sum(1) / (8 * 9) ** 0.5)
               + gamma.pow(2)
               + fc.reshape(5, 12, 4).pow(2).sum((0, 2)) / (5 * 4) ** 0.5) / 3
    torch.testing.assert_close(group_saliency(g2).float(), by_hand, rtol=1e-5, atol=1e-7)
    assert channels_to_keep(12, 0.75) == 12 - int(12 * 0.75 * (1 - torch.exp(torch.tensor(-12.0)).item()))
    assert channels_to_keep(64, 0.75) == 16
    # κ: MACs saved per channel when a group keeps one channel; π = softmax(κ / 1e6)
    kappa1 = (4 * 4 * 27) + (2 * 2 * 12 * 9)  # conv1 row + conv2 in-column, per channel
    kappa2 = (2 * 2 * 8 * 9) + (5 * 4)
    kappas = [kappa1, kappa2] if keys == ["conv1", "conv2"] else [kappa2, kappa1]
    expected = torch.softmax(torch.tensor(kappas, dtype=torch.float64) / 1e6, 0)
    torch.testing.assert_close(pruner.flops_cost, expected)


def test_selection_respects_the_floor_and_prefers_low_scores():
    torch.manual_seed(3)
    model = models.create_model("sew_resnet18", **SEW_KW)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), 0.6)
    masks, _ = pruner.select()
    scores = pruner.scores()
    for m, s, keep in zip(masks, scores, pruner.keep_floor, strict=True):
        assert int((~m).sum()) >= keep
        if m.any() and (~m).any():  # a group's pruned channels all score below its kept unprotected ones
            assert s[m].max() <= s[~m].max()
    cut = max(float(s[m].max()) for s, m in zip(scores, masks, strict=True) if m.any())
    for s, m, keep in zip(scores, masks, pruner.keep_floor, strict=True):
        unprotected_kept = (~m) & (s < torch.topk(s, keep).values[-1])
        assert (s[unprotected_kept] > cut).all()  # one global cut


def test_round_to_and_unreachable_targets():
    model = models.create_model("sew_resnet18", **SEW_KW)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), 0.4, round_to=4)
    masks, macs = pruner.select()
    assert all(int(m.sum()) % 4 == 0 for m in masks) and any(m.any() for m in masks)
    assert abs(1 - macs / pruner.dense_flops - 0.4) < 0.03  # coarser steps with round_to
    small = SmallCNN()
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(ValueError, match=r"out of reach.*at most 0\.\d+ of its .* floor "
                                         r"\(layer_prune_limit=0.75"):
        OCSPruner(small, torch.randn(1, 3, 4, 4), 0.95)  # refused at construction, nothing changed
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items())


# ----------------------------------------------------------------------------------------------- stability
def test_stability_matches_a_hand_computation():
    tracker = StabilityTracker()
    script = [None, None, [[0, 1, 2, 3], [0, 1]], [[0, 1, 2, 4], [0, 2]], [[0, 1, 2, 5], [0, 1]],
              [[0, 1, 2, 4], [0, 2]], [[0, 1, 2, 6], [1, 2]]]
    psi = [tracker.update(s) for s in script]
    # J(t) compares t with t-2: e4 vs e2: A 3/5, B 1 -> 0.8; e5 vs e3: 1; e6 vs e4: A 3/5, B 1/3
    j = [0, 0, 0, 0, 0.8, 1.0, (0.6 + 1 / 3) / 2]
    assert tracker.jaccard == pytest.approx(j)
    assert psi == pytest.approx([0, 0, 0, 0, 0.8 / 3, 1.8 / 3, (1.8 + j[6]) / 3])
    assert jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)


def scripted_pruner(monkeypatch, structures, **kw):
    """A SmallCNN pruner whose per-epoch selection is scripted: structures[e] = to-prune indices of conv1."""
    model = SmallCNN()
    pruner = OCSPruner(model, torch.randn(1, 3, 4, 4), 0.3,
                       optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **kw)
    state = {"epoch": 0}

    def select():
        masks = [torch.zeros(g.size, dtype=torch.bool) for g in pruner.groups]
        masks[[g.key for g in pruner.groups].index("conv1")][structures[state["epoch"]]] = True
        return masks, pruner.mac_model.macs(masks)

    monkeypatch.setattr(pruner, "select", select)

    def epoch_start(e):
        state["epoch"] = e
        pruner.epoch_start(e)

    return pruner, epoch_start


def test_ocs_psi_automatic_regularization_start_and_lambda(monkeypatch):
    # to-prune {e mod 8} of conv1's 8 channels; conv2 prunes nothing: J_avg = (6/8 + 1)/2 from epoch 4 on.
    structures = {e: [e % 8] for e in range(20)}
    pruner, epoch_start = scripted_pruner(monkeypatch, structures)
    log = []
    for e in range(12):
        epoch_start(e)
        log.append((pruner.stability, pruner.regularization_strength, pruner.should_prune))
    psi = [x[0] for x in log]
    assert psi[:4] == [0, 0, 0, 0]
    j = (6 / 8 + 1) / 2  # conv1: {0..7} without e vs without e-2 -> 6 shared of 8; conv2: 1
    assert psi[4:] == pytest.approx([j / 3, 2 * j / 3, j, j, j, j, j, j])
    # Ψ(t) - Ψ(t-2) <= 1e-4 first at t = 8; λ = 1e-4 + 1e-4 at every regularised even epoch
    assert pruner.regularization_start_epoch == 8
    assert [x[1] for x in log] == pytest.approx([0] * 8 + [2e-4, 2e-4, 3e-4, 3e-4])
    assert not any(x[2] for x in log)
    assert regularization_should_start([0, 0, 0.2, 0.4, 0.6, 0.6, 0.6], 6, 2)
    assert not regularization_should_start([0, 0, 0.2, 0.4, 0.6, 0.6], 5, 2)


def test_ocs_fixed_start_cap_and_threshold(monkeypatch):
    pruner, epoch_start = scripted_pruner(monkeypatch, {e: [0] for e in range(10)}, reg_start_epoch=5,
                                          prune_epoch_cap=9, stability_threshold=1.0)
    flags = []
    for e in range(7):
        epoch_start(e)
        flags.append((pruner.regularization_strength, pruner.should_prune))
    # identical structures: Ψ = 1/3, 2/3, 1 at epochs 4, 5, 6 -> prune after epoch 6
    assert [f[0] for f in flags] == pytest.approx([0, 0, 0, 0, 0, 1e-4, 2e-4])
    assert [f[1] for f in flags] == [False] * 6 + [True]
    pruner2, epoch_start2 = scripted_pruner(monkeypatch, {e: [e % 8] for e in range(12)}, prune_epoch_cap=9)
    for e in range(10):
        epoch_start2(e)
        assert pruner2.should_prune == (e == 9)


# -------------------------------------------------------------------------------------------- regularisers
def test_shrink_scales_exactly_the_to_prune_slices(monkeypatch):
    pruner, epoch_start = scripted_pruner(monkeypatch, {0: [1, 5]}, monitor_start_epoch=0, reg_start_epoch=0)
    model = pruner.model
    epoch_start(0)
    lam = pruner.regularization_strength
    assert lam == pytest.approx(2e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner.step()  # η = 0.1 from the optimizer
    f = 1 - lam * 0.1
    after = model.state_dict()
    expect = {k: v.clone() for k, v in before.items()}
    expect["conv1.weight"][[1, 5]] *= f
    expect["bn1.weight"][[1, 5]] *= f
    expect["conv2.weight"][:, [1, 5]] *= f
    for key in before:
        torch.testing.assert_close(after[key], expect[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])


def test_group_lasso_gradient_is_the_penalty_gradient(monkeypatch):
    pruner, epoch_start = scripted_pruner(monkeypatch, {0: [2, 3, 7]}, monitor_start_epoch=0,
                                          reg_start_epoch=0, regularizer="group_lasso", reg_init=0.05)
    model = pruner.model
    epoch_start(0)
    model.zero_grad(set_to_none=True)
    pruner.penalty().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    pruner.regularize()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(expected) == {"conv1.weight", "bn1.weight", "conv2.weight"}
    for n in expected:
        torch.testing.assert_close(got[n], expected[n])
    pruner.step()  # a no-op for group_lasso


# ------------------------------------------------------------------------------------------------------ state
def test_state_dict_survives_weights_only_and_resumes_exactly():
    def make():
        torch.manual_seed(0)
        m = SmallCNN()
        return m, OCSPruner(m, torch.randn(1, 3, 4, 4), 0.4, monitor_start_epoch=0, reg_start_epoch=1,
                            reg_interval=1, optimizer=torch.optim.SGD(m.parameters(), lr=0.5))

    def train_epoch(model, pruner, e):
        gen = torch.Generator().manual_seed(e)
        for _ in range(3):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            pruner.step()

    model, pruner = make()
    for e in range(3):
        pruner.epoch_start(e)
        train_epoch(model, pruner, e)
    buffer = io.BytesIO()
    torch.save({"ocs": pruner.state_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model2, pruner2 = make()
    model2.load_state_dict(ckpt["model"])
    pruner2.load_state_dict(ckpt["ocs"])
    for e in range(3, 6):
        for m, p in ((model, pruner), (model2, pruner2)):
            p.epoch_start(e)
            train_epoch(m, p, e)
        assert pruner2.summary() == pruner.summary()
        assert pruner2.selection == pruner.selection
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    spec = pruner.prune()
    state = pruner.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh, fresh_pruner = make()
    with pytest.raises(ValueError, match="apply_structure"):
        fresh_pruner.load_state_dict(state)
    thin = apply_structure(SmallCNN(), spec)
    thin_pruner = OCSPruner(thin, torch.randn(1, 3, 4, 4), 0.4)
    thin_pruner.load_state_dict(state)
    assert thin_pruner.pruned and thin_pruner.prune_epoch == 5 and thin_pruner.spec == spec
    weights = thin.conv1.weight.clone()
    thin_pruner.epoch_start(6)
    thin_pruner.step(lr=0.1)
    assert torch.equal(thin.conv1.weight, weights)  # no-ops after pruning


# -------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("target, error", [(0, ValueError), (1, ValueError), (1.5, ValueError),
                                           (-0.2, ValueError), (float("nan"), ValueError), ("0.5", TypeError),
                                           (True, TypeError)])
def test_target_outside_the_open_interval_is_rejected(target, error):
    with pytest.raises(error, match=r"target_flops_reduction must be a number in \(0, 1\), got "):
        OCSPruner(SmallCNN(), torch.randn(1, 3, 4, 4), target)


def test_other_arguments_name_themselves():
    for kw, name in [({"regularizer": "l1"}, "regularizer"),
                     ({"layer_prune_limit": 1.0}, "layer_prune_limit"), ({"reg_interval": 0}, "reg_interval"),
                     ({"stability_threshold": 0}, "stability_threshold"),
                     ({"prune_epoch_cap": 1}, "prune_epoch_cap")]:
        with pytest.raises(ValueError, match=name):
            OCSPruner(SmallCNN(), torch.randn(1, 3, 4, 4), 0.5, **kw)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x)).detach()  # breaks the autograd graph torch-pruning traces
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def test_untraceable_model_names_the_layer():
    with pytest.raises(GraphTraceError, match=r"layer 'conv1' \(Conv2d\)"):
        OCSPruner(Detached(), torch.randn(1, 3, 8, 8), 0.5)
    with pytest.raises(RuntimeError, match=r"failed in layer 'conv1' \(Conv2d\).*3 channels"):
        OCSPruner(SmallCNN(), torch.randn(1, 4, 4, 4), 0.5)


def test_spec_mismatch_names_layers_and_shapes():
    model = SmallCNN()
    pruner = OCSPruner(model, torch.randn(1, 3, 4, 4), 0.4)
    spec = pruner.prune()
    wide = copy.deepcopy(spec)
    wide["layers"]["conv2"]["out_channels"] = 20
    target = SmallCNN()
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError, match=r"conv2: the model has Conv2d\(in_channels=8, out_channels=12.*"
                                         r"the spec asks for Conv2d\(.*out_channels=20"):
        apply_structure(target, wide)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched on error
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1: the model has Conv2d.*no entry"):
        apply_structure(models.create_model("sew_resnet18", **SEW_KW), spec)
    renamed = copy.deepcopy(spec)
    renamed["layers"]["conv_2"] = renamed["layers"].pop("conv2")
    with pytest.raises(ValueError, match=r"conv_2: the spec lists it.*did you mean \['conv2'"):
        apply_structure(SmallCNN(), renamed)
    with pytest.raises(ValueError, match="structure_spec"):
        apply_structure(SmallCNN(), {"conv1": 3})


# ---------------------------------------------------------------------------------------------- combination
def test_ocs_then_soft_threshold_pruning_on_the_thin_model():
    model = models.create_model("sew_resnet18", **SEW_KW)
    OCSPruner(model, torch.randn(1, 3, 16, 16), 0.4).prune()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    lats = SoftThresholdPruner(model, final_threshold=0.05, schedule="s-lats", total_steps=2,
                               ignored_layers=["fc"], optimizer=optimizer)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for _ in range(2):
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(model)
        lats.step()
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert zeros > 0


def test_spec_of_a_soft_threshold_prepared_model_equals_the_plain_spec():
    """structure_spec reads widths through torch.nn.utils.parametrize (a LATS-prepared thin model, as in
    ocs-lats, has the spec of the plain thin model)."""
    model = models.create_model("sew_resnet18", **SEW_KW)
    OCSPruner(model, torch.randn(1, 3, 16, 16), 0.4).prune()
    plain = structure_spec(model)
    SoftThresholdPruner(model, final_threshold=0.05, schedule="constant", ignored_layers=["fc"])
    assert structure_spec(model) == plain
    assert plain["layers"]["conv1"]["type"] == "Conv2d"
