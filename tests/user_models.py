"""A user's own model, outside the registry: ``--model tests.user_models:build_csnn`` in the CLI tests."""
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

NOT_A_FACTORY = 3


def build_csnn(channels: int = 4, T: int = 2) -> nn.Module:
    """A small SpikingJelly CSNN on 8×8 digits: conv, BN, LIF, pool, a linear classifier; mean over T."""
    net = nn.Sequential(
        layer.Conv2d(1, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(channels * 4 * 4, 10, bias=False),
    )
    functional.set_step_mode(net, "m")
    return _RepeatT(net, T)


class _RepeatT(nn.Module):
    def __init__(self, net: nn.Module, T: int):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x):
        return self.net(x.unsqueeze(0).repeat(self.T, *[1] * x.dim())).mean(0)


def not_a_module():
    return "nope"


def build_spikformer(T: int = 2, embed_dims: int = 16) -> nn.Module:
    """SpikingJelly's own Spikformer on 8×8 digits (1 channel, 2×2 tokens of 4×4 patches): Conv1d layers and
    spike matrix products, as a user's transformer brings them; output averaged over T."""
    from spikingjelly.activation_based.model.spikformer import Spikformer

    net = Spikformer(T=T, in_channels=1, img_size_h=8, img_size_w=8, patch_size=4, num_classes=10,
                     embed_dims=embed_dims, num_heads=2, depths=1)
    return _MeanOverT(net)


class _MeanOverT(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).mean(0)
