"""The pruner on SpikingJelly SEW ResNets in multi-step mode (installed version, and 0.0.0.0.14 side by
side)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based.model import sew_resnet
from torch.utils.data import DataLoader

import models
import snn_lats
from experiments.data import digits
from tests.conftest import HANG

LEGACY_DIR = Path(os.environ.get("SNN_LATS_SJ_LEGACY", Path(sys.prefix) / "sj-legacy"))


def _spikingjelly_sew18():
    net = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode,
                                  surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(net, "m")
    return net


def test_small_sew_resnet_trains_under_the_pruner_on_digits():
    torch.manual_seed(0)
    train_set, test_set = digits(seed=0)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    model = models.create_model("sew_resnet18", T=4, neuron_type="lif", stem="cifar", in_channels=1,
                                num_classes=10, width_multiplier=0.25)
    total = 4 * len(loader)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.05, total_steps=total,
                                          ignored_layers=["fc"], optimizer=optimizer)
    assert len(pruner.layers) == 20  # every conv of SEW ResNet-18: stem, 16 in blocks, 3 downsample
    losses = []
    for _ in range(4):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            functional.reset_net(model)
            pruner.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        x, y = test_set.tensors
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    functional.reset_net(model)
    assert pruner.threshold == pytest.approx(0.05)
    assert pruner.sparsity_report().sparsity > 0.4
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert accuracy > 0.85  # 10 classes: chance is 0.1


def test_prepared_convs_keep_spikingjelly_behaviour_and_reset_net_reaches_every_neuron():
    net = _spikingjelly_sew18()
    x = torch.rand(4, 2, 3, 32, 32)
    functional.reset_net(net)  # 2.x caches the resettable modules here; preparing must not invalidate it
    snn_lats.SoftThresholdPruner(net, final_threshold=0.01, total_steps=10, ignored_layers=["fc"])
    conv = net.layer1[0].conv1
    assert isinstance(conv, layer.Conv2d) and conv.step_mode == "m"
    assert type(conv).__name__ == "ParametrizedConv2d"
    net.train()
    net(x)
    nodes = [m for m in net.modules() if isinstance(m, neuron.BaseNode)]
    assert len(nodes) == 20
    assert any(isinstance(n.v, torch.Tensor) and n.v.abs().sum() > 0 for n in nodes)
    functional.reset_net(net)
    assert all(not isinstance(n.v, torch.Tensor) or n.v.abs().sum() == 0 for n in nodes)


def test_squashed_sew_resnet18_matches_and_loads_strictly_into_spikingjelly():
    torch.manual_seed(0)
    net = _spikingjelly_sew18()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    pruner = snn_lats.SoftThresholdPruner(net, final_threshold=0.02, schedule="s-lats", total_steps=2,
                                          ignored_layers=["fc"], optimizer=optimizer)
    x = torch.rand(4, 2, 3, 32, 32)
    for _ in range(2):
        net(x).mean(0).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(net)
        pruner.step()
    net.eval()
    with torch.no_grad():
        before = net(x)
    functional.reset_net(net)
    sparsity = pruner.sparsity_report().sparsity
    assert sparsity > 0.3
    pruner.squash()
    with torch.no_grad():
        after = net(x)
    functional.reset_net(net)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    state = net.state_dict()
    _spikingjelly_sew18().load_state_dict(state, strict=True)
    # the registry's SEW ResNet-18 uses SpikingJelly's key layout too
    models.create_model("sew_resnet18").load_state_dict(state, strict=True)
    assert snn_lats.sparsity_report(net, ignored_layers=["fc"]).sparsity == pytest.approx(sparsity)


@pytest.mark.slow
def test_spikingjelly_0_0_0_0_14_side_by_side():
    """The same pruning flow under SpikingJelly 0.0.0.0.14 (installed beside the main one by `make test`)."""
    if not (LEGACY_DIR / "spikingjelly").is_dir():
        pytest.skip(f"spikingjelly 0.0.0.0.14 not installed at {LEGACY_DIR} (make test installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY_DIR), str(Path(__file__).parents[1])])}
    script = Path(__file__).with_name("legacy_spikingjelly_check.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "legacy spikingjelly OK" in result.stdout
