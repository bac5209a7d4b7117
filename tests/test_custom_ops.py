"""The ``snn_lats::multistep_forward`` / ``multistep_backward`` custom ops (snn_lats/snn/ops.py).

opcheck on CPU over IF/LIF, hard/soft reset, both surrogates and three dtypes; the ops equal
``TorchMultiStep`` (the reference autograd function) exactly, forward and backward; a SEW ResNet block with
fused neurons compiles with ``fullgraph=True`` and no graph break, and the compiled run equals eager
(``aot_eager``: exactly; ``inductor``, marked slow: spikes exactly, gradients to float32 reordering).
"""
import dataclasses
import time

import pytest
import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from snn_lats.snn import MultiStepIFNode, MultiStepLIFNode, ops
from snn_lats.snn.reference import NeuronConfig, TorchMultiStep

CONFIGS = {
    "lif-hard-sigmoid": NeuronConfig(2.0, True, 1.0, 0.0, False, "sigmoid", 4.0),
    "lif-soft-atan-nodecay": NeuronConfig(3.0, False, 0.5, None, False, "atan", 2.0),
    "lif-hard-detach-atan": NeuronConfig(2.0, True, 1.0, -0.2, True, "atan", 3.0),
    "if-soft-sigmoid": NeuronConfig(None, False, 1.0, None, False, "sigmoid", 4.0),
    "if-hard-detach-atan": NeuronConfig(None, False, 0.8, 0.0, True, "atan", 2.0),
}
OPCHECK_CASES = [("lif-hard-sigmoid", torch.float32), ("lif-soft-atan-nodecay", torch.float32),
                 ("if-soft-sigmoid", torch.float32), ("if-hard-detach-atan", torch.bfloat16),
                 ("lif-hard-detach-atan", torch.float16)]


def _inputs(dtype=torch.float32, shape=(5, 3, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 1.5).to(dtype)
    v0 = torch.rand(shape[1:], generator=g) * 0.5
    return x, v0


@pytest.mark.parametrize("name,dtype", OPCHECK_CASES)
def test_opcheck_forward(name, dtype):
    x, v0 = _inputs(dtype)
    args = (x.requires_grad_(), v0.requires_grad_(), *ops.config_args(CONFIGS[name]), "torch")
    torch.library.opcheck(torch.ops.snn_lats.multistep_forward.default, args)


@pytest.mark.parametrize("name,dtype", OPCHECK_CASES)
def test_opcheck_backward(name, dtype):
    x, v0 = _inputs(dtype)
    _, _, h = torch.ops.snn_lats.multistep_forward(x, v0, *ops.config_args(CONFIGS[name]), "torch")
    grad_spikes, grad_v = _inputs(dtype, seed=1)
    args = (grad_spikes, grad_v, h, *ops.config_args(CONFIGS[name]), "torch")
    torch.library.opcheck(torch.ops.snn_lats.multistep_backward.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_op_equals_torch_multistep(name, dtype):
    c = CONFIGS[name]
    x, v0 = _inputs(dtype, shape=(6, 2, 3, 5))
    grad_spikes, grad_v = _inputs(dtype, shape=(6, 2, 3, 5), seed=2)
    results = []
    for fn in (lambda a, b: ops.multistep(a, b, c), lambda a, b: TorchMultiStep.apply(a, b, c)):
        xa, va = x.clone().requires_grad_(), v0.clone().requires_grad_()
        spikes, v_last = fn(xa, va)
        ((spikes.float() * grad_spikes.float()).sum() + (v_last * grad_v).sum()).backward()
        results.append((spikes, v_last, xa.grad, va.grad))
    for got, want in zip(*results, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert results[0][0].dtype == dtype and results[0][1].dtype == torch.float32


def test_only_spikes_used_gives_the_reference_gradient():  # grad for v_last is None (not materialised)
    c = CONFIGS["lif-hard-sigmoid"]
    x, v0 = _inputs()
    grads = []
    for fn in (ops.multistep, TorchMultiStep.apply):
        xa = x.clone().requires_grad_()
        fn(xa, v0, c)[0].sum().backward()
        grads.append(xa.grad)
    assert torch.equal(*grads)


def test_op_errors():
    x, v0 = _inputs()
    with pytest.raises(NotImplementedError, match="parametric"):
        ops.multistep(x, v0, dataclasses.replace(CONFIGS["lif-hard-sigmoid"], tau=None, parametric=True))
    with pytest.raises(ValueError, match="backend='cupy' needs CUDA tensors"):
        ops.multistep(x, v0, CONFIGS["lif-hard-sigmoid"], "cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.multistep(x, v0, CONFIGS["lif-hard-sigmoid"], "triton")
    with pytest.raises(ValueError, match="per-step shape"):
        ops.multistep(x, v0[0], CONFIGS["lif-hard-sigmoid"])
    with pytest.raises(ValueError, match="surrogate must be one of"):
        torch.ops.snn_lats.multistep_forward(x, v0, 2.0, True, 1.0, 0.0, False, "erf", 1.0, "torch")


def test_config_round_trip():
    for c in CONFIGS.values():
        assert ops.config_from_args(*ops.config_args(c)) == c


class SEWBlock(nn.Module):
    """SEW ResNet basic block (conv-bn-sn, conv-bn-sn, ADD connection) in SpikingJelly multi-step layers."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv1 = layer.Conv2d(channels, channels, 3, padding=1, bias=False, step_mode="m")
        self.bn1 = layer.BatchNorm2d(channels, step_mode="m")
        self.sn1 = MultiStepLIFNode(tau=2.0, backend="torch")
        self.conv2 = layer.Conv2d(channels, channels, 3, padding=1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(channels, step_mode="m")
        self.sn2 = MultiStepIFNode(v_reset=None, surrogate_function="atan")

    def forward(self, x):
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        return out + x


def _run(model, x):
    functional.reset_net(model)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def _block_and_input():
    torch.manual_seed(0)
    model = SEWBlock()
    x = (torch.rand(4, 2, 4, 8, 8) < 0.4).float()  # spikes in, as between SEW blocks
    return model, x


def test_sew_block_has_no_graph_break():
    model, x = _block_and_input()
    functional.reset_net(model)
    explanation = torch._dynamo.explain(model)(x)
    functional.reset_net(model)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_sew_block_compiled_equals_eager_aot_eager():
    model, x = _block_and_input()
    eager = _run(model, x)
    torch._dynamo.reset()
    compiled = _run(torch.compile(model, fullgraph=True, backend="aot_eager"), x)
    assert torch.equal(eager[0], compiled[0])
    assert torch.equal(eager[1], compiled[1])
    for a, b in zip(eager[2], compiled[2], strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_sew_block_compiled_equals_eager_inductor():
    model, x = _block_and_input()
    eager = _run(model, x)
    torch._dynamo.reset()
    start = time.perf_counter()
    compiled = _run(torch.compile(model, fullgraph=True), x)
    print(f"inductor compile + first run: {time.perf_counter() - start:.1f} s")
    assert torch.equal(eager[0], compiled[0])  # spikes: exact
    # gradients: inductor fuses and reorders float32 reductions (BatchNorm, conv weight grads); 1e-5 of the
    # largest entry is ~100x the observed difference
    for a, b in zip([eager[1], *eager[2]], [compiled[1], *compiled[2]], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_op_matches_reference(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from snn_lats.snn import cuda_kernels

    backends = ["torch"] + (["cupy"] if cuda_kernels.cupy_available() else [])
    c = CONFIGS["lif-hard-sigmoid"]
    x, v0 = _inputs(dtype, shape=(6, 64, 33))
    xa, va = x.clone().requires_grad_(), v0.clone().requires_grad_()
    spikes, v_last = TorchMultiStep.apply(xa, va, c)
    (spikes.float().sum() + v_last.sum()).backward()
    want = [spikes, v_last, xa.grad, va.grad]
    for backend in backends:
        xa = x.cuda().requires_grad_()
        va = v0.cuda().requires_grad_()
        spikes, v_last = ops.multistep(xa, va, c, backend)
        (spikes.float().sum() + v_last.sum()).backward()
        for got, ref in zip([spikes, v_last, xa.grad, va.grad], want, strict=True):
            assert got.dtype == ref.dtype
            # float32 math on both devices; expf/division may differ by an ulp, so the low-precision
            # gradients get their dtype's default tolerance
            tol = {"rtol": 1e-6, "atol": 1e-6} if got.dtype == torch.float32 else {}
            torch.testing.assert_close(got.cpu(), ref, **tol)
