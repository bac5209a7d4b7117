"""Small spiking transformers written the way the official repositories write theirs, for the client matrix.

Written here, not copied: plain ``nn.Conv2d``/``nn.Conv1d``/``nn.Linear``/``BatchNorm`` layers fed with
``[T*B, ...]`` and multi-step neurons fed with ``[T, B, ...]``, the input repeated over T inside ``forward``,
and three attentions:

- ``spikformer_like``: Spikformer's spiking self-attention, spike matrix products ``q @ kᵀ`` and ``(·) @ v``;
- ``sdt_like``: the Spike-Driven Transformer's attention, elementwise masks ``k ⊙ v`` and ``q ⊙ kv`` with a
  column sum in between, membrane shortcuts, and a ``(logits, hook)`` tuple as output;
- ``qkformer_like``: QKFormer's token attention, a channel sum of q, a neuron, then the mask ``attn ⊙ k``;

and ``csnn_like``, the convolutional SNN of SpikingJelly's own clock_driven tutorials (``SeqToANNContainer``
around conv-BN, multi-step LIF), whose channels OCS can remove (the transformers' hard-coded reshapes to the
embedding width make most of theirs unremovable).

``neuron(**kw)`` builds a multi-step LIF: SpikingJelly 0.0.0.0.14's ``clock_driven.neuron.MultiStepLIFNode``
where that namespace exists (the API the official repositories import), else the one-line port to
``activation_based.neuron.LIFNode(step_mode="m")``.
"""
from __future__ import annotations

import torch
from torch import nn

try:  # SpikingJelly 0.0.0.0.12-0.0.0.0.14
    from spikingjelly.clock_driven.layer import SeqToANNContainer
    from spikingjelly.clock_driven.neuron import MultiStepLIFNode

    CLOCK_DRIVEN = True
except ImportError:  # 2.x: the port users make
    from spikingjelly.activation_based.layer import SeqToANNContainer
    from spikingjelly.activation_based.neuron import LIFNode

    CLOCK_DRIVEN = False


def neuron(v_threshold: float = 1.0) -> nn.Module:
    if CLOCK_DRIVEN:
        return MultiStepLIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch")
    return LIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m")


class ConvStem(nn.Module):
    """conv-BN-LIF, conv-BN-LIF, max pool: [T, B, C, H, W] -> [T, B, D, H/2, W/2] spikes."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, dim // 2, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(dim // 2)
        self.lif0 = neuron()
        self.conv1 = nn.Conv2d(dim // 2, dim, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.lif1 = neuron()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        T, B, _, H, W = x.shape
        x = self.lif0(self.bn0(self.conv0(x.flatten(0, 1))).reshape(T, B, -1, H, W))
        x = self.lif1(self.bn1(self.conv1(x.flatten(0, 1))).reshape(T, B, -1, H, W))
        x = self.pool(x.flatten(0, 1))
        return x.reshape(T, B, *x.shape[1:])


class SpikingSelfAttention(nn.Module):
    """Spikformer's SSA on tokens [T, B, N, D]: linear-BN-LIF for q, k, v; (q @ kᵀ) @ v · scale; LIF; proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, 0.125
        for name in ("q", "k", "v", "proj"):
            setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", neuron())
        self.attn_lif = neuron(v_threshold=0.5)

    def _branch(self, name, x):
        T, B, N, D = x.shape
        y = getattr(self, f"{name}_linear")(x.flatten(0, 1))
        y = getattr(self, f"{name}_bn")(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, D)
        return getattr(self, f"{name}_lif")(y.contiguous())

    def forward(self, x):
        T, B, N, D = x.shape
        q, k, v = (self._branch(n, x).reshape(T, B, N, self.heads, D // self.heads).permute(0, 1, 3, 2, 4)
                   for n in ("q", "k", "v"))
        attn = q @ k.transpose(-2, -1)
        y = (attn @ v) * self.scale
        y = self.attn_lif(y.transpose(2, 3).reshape(T, B, N, D).contiguous())
        return self._branch("proj", y)


class SpikformerLike(nn.Module):
    def __init__(self, T: int = 2, in_channels: int = 1, dim: int = 16, heads: int = 2,
                 num_classes: int = 10):
        super().__init__()
        self.T = T
        self.stem = ConvStem(in_channels, dim)
        self.attn = SpikingSelfAttention(dim, heads)
        self.mlp_linear = nn.Linear(dim, dim)
        self.mlp_bn = nn.BatchNorm1d(dim)
        self.mlp_lif = neuron()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stem(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))
        T, B, D = x.shape[:3]
        x = x.flatten(3).transpose(-1, -2)  # [T, B, N, D] tokens
        x = x + self.attn(x)
        y = self.mlp_bn(self.mlp_linear(x.flatten(0, 1)).transpose(-1, -2)).transpose(-1, -2)
        x = x + self.mlp_lif(y.reshape(x.shape).contiguous())
        return self.head(x.mean(2).mean(0))


class SpikeDrivenAttention(nn.Module):
    """SDSA on [T, B, D, H, W] membrane-shortcut features: q ⊙ LIF(Σ_tokens k ⊙ v), then a 1×1 conv."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.shortcut_lif = neuron()
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv2d(dim, dim, 1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{name}_lif", neuron())
        self.talking_heads_lif = neuron(v_threshold=0.5)
        self.proj_conv = nn.Conv2d(dim, dim, 1)
        self.proj_bn = nn.BatchNorm2d(dim)

    def forward(self, x, hook=None):
        T, B, D, H, W = x.shape
        s = self.shortcut_lif(x).flatten(0, 1)
        heads = []
        for name in ("q", "k", "v"):
            y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(s)).reshape(T, B, D, H, W)
            y = getattr(self, f"{name}_lif")(y.contiguous())
            heads.append(y.flatten(3).transpose(-1, -2).reshape(T, B, H * W, self.heads, D // self.heads)
                         .permute(0, 1, 3, 2, 4).contiguous())  # [T, B, heads, N, D/heads]
        q, k, v = heads
        kv = k.mul(v).sum(dim=-2, keepdim=True)
        kv = self.talking_heads_lif(kv)
        y = q.mul(kv)
        if hook is not None:
            hook["kv"] = kv.detach()
        y = y.transpose(3, 4).reshape(T, B, D, H, W).flatten(0, 1)
        y = self.proj_bn(self.proj_conv(y)).reshape(T, B, D, H, W)
        return x + y, hook


class SDTLike(nn.Module):
    """Returns ``(logits, hook)`` as the official model does."""

    def __init__(self, T: int = 2, in_channels: int = 1, dim: int = 16, heads: int = 2,
                 num_classes: int = 10):
        super().__init__()
        self.T = T
        self.stem_conv = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(dim)
        self.attn = SpikeDrivenAttention(dim, heads)
        self.mlp_lif = neuron()
        self.mlp_conv = nn.Conv2d(dim, dim, 1)
        self.mlp_bn = nn.BatchNorm2d(dim)
        self.head_lif = neuron()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x, hook=None):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B, _, H, W = x.shape
        x = self.stem_bn(self.stem_conv(x.flatten(0, 1))).reshape(T, B, -1, H, W)  # membrane potential
        x, hook = self.attn(x, hook)
        y = self.mlp_bn(self.mlp_conv(self.mlp_lif(x).flatten(0, 1))).reshape(x.shape)
        x = x + y
        x = self.head_lif(x.flatten(3).mean(3))
        return self.head(x).mean(0), hook


class TokenQKAttention(nn.Module):
    """QKFormer's token attention on [T, B, D, N]: mask = LIF(Σ_channels q) per head, then mask ⊙ k."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        for name in ("q", "k"):
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, 1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", neuron())
        self.attn_lif = neuron(v_threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, 1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = neuron()

    def forward(self, x):
        T, B, D, N = x.shape
        def branch(n):
            y = getattr(self, f"{n}_bn")(getattr(self, f"{n}_conv")(x.flatten(0, 1))).reshape(T, B, D, N)
            return getattr(self, f"{n}_lif")(y).reshape(T, B, self.heads, D // self.heads, N)

        q, k = branch("q"), branch("k")
        attn = self.attn_lif(torch.sum(q, dim=3, keepdim=True))
        y = torch.mul(attn, k).flatten(2, 3)
        return self.proj_lif(self.proj_bn(self.proj_conv(y.flatten(0, 1))).reshape(T, B, D, N))


class QKFormerLike(nn.Module):
    def __init__(self, T: int = 2, in_channels: int = 1, dim: int = 16, heads: int = 2,
                 num_classes: int = 10):
        super().__init__()
        self.T = T
        self.stem = ConvStem(in_channels, dim)
        self.attn = TokenQKAttention(dim, heads)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stem(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).flatten(3)  # [T, B, D, N]
        x = x + self.attn(x)
        return self.head(x.mean(3).mean(0))


class CSNNLike(nn.Module):
    """Two conv-BN-LIF stages, global average pooling, a linear head; mean over T."""

    def __init__(self, T: int = 2, in_channels: int = 1, channels: int = 8, num_classes: int = 10):
        super().__init__()
        self.T = T
        self.conv_fc = nn.Sequential(
            SeqToANNContainer(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                              nn.BatchNorm2d(channels)),
            neuron(),
            SeqToANNContainer(nn.MaxPool2d(2), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                              nn.BatchNorm2d(channels)),
            neuron(),
            SeqToANNContainer(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)),
        )

    def forward(self, x):
        return self.conv_fc(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(0)


def csnn_like(**kw) -> nn.Module:
    return CSNNLike(**kw)


def spikformer_like(**kw) -> nn.Module:
    return SpikformerLike(**kw)


def sdt_like(**kw) -> nn.Module:
    return SDTLike(**kw)


def qkformer_like(**kw) -> nn.Module:
    return QKFormerLike(**kw)


CLIENTS = {"spikformer_like": spikformer_like, "sdt_like": sdt_like, "qkformer_like": qkformer_like,
           "csnn_like": csnn_like}
