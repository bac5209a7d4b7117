"""docs/spikingjelly.md's minimal diff, and examples/sj_fashion_mnist.py, on digits."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn
from torch.utils.data import DataLoader

import snn_lats
from experiments.data import digits

EXAMPLE = Path(__file__).parents[1] / "examples" / "sj_fashion_mnist.py"


def _plain_spikingjelly_net():
    net = nn.Sequential(
        layer.Conv2d(1, 16, 3, padding=1, bias=False), layer.BatchNorm2d(16),
        neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(16 * 4 * 4, 10),
    )
    functional.set_step_mode(net, "m")
    return net


def test_the_guides_diff_prunes_a_plain_spikingjelly_loop():
    torch.manual_seed(0)
    train_set, test_set = digits(seed=0)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    T = 4
    net = _plain_spikingjelly_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    pruner = snn_lats.SoftThresholdPruner(net, final_threshold=0.05, total_steps=len(loader),  # + the diff
                                          optimizer=optimizer)
    for x, y in loader:  # one epoch of the user's unchanged loop
        out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        functional.reset_net(net)
        pruner.step()  # + the diff
    pruner.squash()  # + the diff
    x_test = test_set.tensors[0].unsqueeze(0).repeat(T, 1, 1, 1, 1)
    report = snn_lats.metrics.measure(net, [x_test])  # + the diff
    assert report.total["weight_sparsity"] > 0.2 and report.total["sops"] > 0
    fresh = _plain_spikingjelly_net()
    fresh.load_state_dict(net.state_dict(), strict=True)


@pytest.mark.parametrize("prune", [False, True])
def test_example_script_runs_one_short_epoch_on_digits(prune, capsys):
    spec = importlib.util.spec_from_file_location("sj_fashion_mnist", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--data", "digits", "--epochs", "1", "--max-steps-per-epoch", "5"]
    argv += ["--prune"] if prune else []
    model, accuracy = example.main(argv)
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and 0.0 <= accuracy <= 1.0
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    if prune:
        assert "sparsity" in printed and "SOPs" in printed and zeros > 0
        assert not any(hasattr(m, "parametrizations") for m in model.modules())  # squashed: plain layers
    else:
        assert "sparsity" not in printed and zeros == 0


def test_example_falls_back_to_digits_without_fashion_mnist(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("sj_fashion_mnist", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--data-dir", str(tmp_path), "--epochs", "1", "--max-steps-per-epoch", "2"])
    assert "falling back to scikit-learn's digits" in capsys.readouterr().out
