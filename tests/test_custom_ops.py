"""The ``snn_lats::multistep_forward`` / ``multistep_backward`` custom ops (snn_lats/snn/ops.py).

opcheck on CPU over IF/LIF, hard/soft reset, both surrogates and three dtypes; the ops equal
``TorchMultiStep`` (the reference autograd function) exactly, forward and backward; a SEW ResNet block with
fused neurons compiles with ``fullgraph=True`` and no graph break, and the compiled run equals eager
(``aot_eager``: exactly; ``inductor``, marked slow: spikes exactly, gradients to float32 reordering).
"""
import time

import pytest
import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from snn_lats.snn import MultiStepIFNode, MultiStepLIFNode, MultiStepParametricLIFNode, ops
from snn_lats.snn.reference import NeuronConfig, TorchMultiStep

CONFIGS = {
    "lif-hard-sigmoid": NeuronConfig(2.0, True, 1.0, 0.0, False, "sigmoid", 4.0),
    "lif-soft-atan-nodecay": NeuronConfig(3.0, False, 0.5, None, False, "atan", 2.0),
    "lif-hard-detach-atan": NeuronConfig(2.0, True, 1.0, -0.2, True, "atan", 3.0),
    "if-soft-sigmoid": NeuronConfig(None, False, 1.0, None, False, "sigmoid", 4.0),
    "if-hard-detach-atan": NeuronConfig(None, False, 0.8, 0.0, True, "atan", 2.0),
    "plif-hard-sigmoid": NeuronConfig(None, True, 1.0, 0.0, False, "sigmoid", 4.0, parametric=True),
    "plif-soft-atan-nodecay": NeuronConfig(None, False, 0.5, None, True, "atan", 2.0, parametric=True),
}
OPCHECK_CASES = [("lif-hard-sigmoid", torch.float32), ("lif-soft-atan-nodecay", torch.float32),
                 ("if-soft-sigmoid", torch.float32), ("if-hard-detach-atan", torch.bfloat16),
                 ("lif-hard-detach-atan", torch.float16), ("plif-hard-sigmoid", torch.float32),
                 ("plif-soft-atan-nodecay", torch.bfloat16)]
RECOMPUTE = [False, True]


def _inputs(dtype=torch.float32, shape=(5, 3, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 1.5).to(dtype)
    v0 = torch.rand(shape[1:], generator=g) * 0.5
    return x, v0


def _leak(c: NeuronConfig):
    return torch.tensor(0.37) if c.parametric else None


@pytest.mark.parametrize("recompute", RECOMPUTE, ids=["stored_h", "recompute"])
@pytest.mark.parametrize("name,dtype", OPCHECK_CASES)
def test_opcheck_forward(name, dtype, recompute):
    c = CONFIGS[name]
    x, v0 = _inputs(dtype)
    leak = _leak(c)
    leak = None if leak is None else leak.requires_grad_()
    args = (x.requires_grad_(), v0.requires_grad_(), leak, *ops.config_args(c), "torch", recompute)
    torch.library.opcheck(torch.ops.snn_lats.multistep_forward.default, args)


@pytest.mark.parametrize("recompute", RECOMPUTE, ids=["stored_h", "recompute"])
@pytest.mark.parametrize("name,dtype", OPCHECK_CASES)
def test_opcheck_backward(name, dtype, recompute):
    c = CONFIGS[name]
    x, v0 = _inputs(dtype)
    leak = _leak(c)
    _, _, h = torch.ops.snn_lats.multistep_forward(x, v0, leak, *ops.config_args(c), "torch", recompute)
    assert h.shape == ((0,) if recompute else x.shape)
    grad_spikes, grad_v = _inputs(dtype, seed=1)
    keep = recompute or c.parametric
    args = (grad_spikes, grad_v, None if recompute else h, x if keep else None, v0 if keep else None, leak,
            *ops.config_args(c), "torch")
    torch.library.opcheck(torch.ops.snn_lats.multistep_backward.default, args)


def _through(fn, c, x, v0, grad_spikes, grad_v):
    xa, va = x.clone().requires_grad_(), v0.clone().requires_grad_()
    leak = _leak(c)
    leak = None if leak is None else leak.to(x.device)
    leak = None if leak is None else leak.requires_grad_()
    spikes, v_last = fn(xa, va, leak)
    ((spikes.float() * grad_spikes.float()).sum() + (v_last * grad_v).sum()).backward()
    return [spikes, v_last, xa.grad, va.grad] + ([leak.grad] if c.parametric else [])


@pytest.mark.parametrize("recompute", RECOMPUTE, ids=["stored_h", "recompute"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_op_equals_torch_multistep(name, dtype, recompute):
    """Both backward variants give TorchMultiStep's results bit for bit (recompute rebuilds h exactly)."""
    c = CONFIGS[name]
    x, v0 = _inputs(dtype, shape=(6, 2, 3, 5))
    grad_spikes, grad_v = _inputs(dtype, shape=(6, 2, 3, 5), seed=2)
    got = _through(lambda a, b, k: ops.multistep(a, b, c, "torch", k, recompute), c, x, v0, grad_spikes,
                   grad_v)
    want = _through(lambda a, b, k: TorchMultiStep.apply(a, b, c, k), c, x, v0, grad_spikes, grad_v)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and torch.equal(g, w)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32


def test_plif_reference_equals_spikingjelly_autograd():
    """The hand-written PLIF backward (dL/dk reduced over T and neurons) against autograd through
    SpikingJelly's own ParametricLIFNode, w included."""
    pytest.importorskip("spikingjelly.activation_based.neuron")
    from spikingjelly.activation_based import neuron, surrogate

    from snn_lats.snn import MultiStepParametricLIFNode

    for decay_input, v_reset, detach in [(True, 0.0, False), (False, None, True), (True, -0.1, True)]:
        x = torch.randn(7, 3, 11, generator=torch.Generator().manual_seed(3)) * 1.3 + 0.3
        results = []
        for node in (neuron.ParametricLIFNode(init_tau=3.0, decay_input=decay_input, v_reset=v_reset,
                                              detach_reset=detach, surrogate_function=surrogate.ATan(),
                                              step_mode="m"),
                     MultiStepParametricLIFNode(init_tau=3.0, decay_input=decay_input, v_reset=v_reset,
                                                detach_reset=detach, surrogate_function="atan",
                                                backend="torch")):
            xa = x.clone().requires_grad_()
            out = node(xa)
            (out * torch.linspace(-1, 2, out.numel()).view_as(out)).sum().backward()
            results.append((out, xa.grad, node.w.grad))
        (s_sj, gx_sj, gw_sj), (s, gx, gw) = results
        assert torch.equal(s, s_sj)
        torch.testing.assert_close(gx, gx_sj, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(gw, gw_sj, rtol=1e-5, atol=1e-7)
        assert float(gw.abs()) > 0


def _saved_bytes(run) -> int:
    """Bytes autograd keeps for the backward of ``run()``, each storage counted once."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(saved.values())


@pytest.mark.parametrize("T", [4, ops.RECOMPUTE_MAX_T + 1])
def test_saved_state_per_variant(T):
    """Stored h keeps T·N float32; recompute keeps x (bf16 here) and v0; None stores h on the torch
    backend (recompute is chosen for cupy only). PLIF's stored-h backward keeps x and v0 as well."""
    x, v0 = _inputs(torch.bfloat16, shape=(T, 8, 16))
    xa, va = x.clone().requires_grad_(), v0.clone().requires_grad_()
    stored, lean = 4 * x.numel(), 2 * x.numel() + 4 * v0.numel()
    for name, recompute, want in [("lif-hard-sigmoid", False, stored), ("lif-hard-sigmoid", True, lean),
                                  ("lif-hard-sigmoid", None, stored),
                                  ("plif-hard-sigmoid", False, stored + lean + 4),
                                  ("plif-hard-sigmoid", True, lean + 4)]:
        c = CONFIGS[name]
        leak = _leak(c)
        got = _saved_bytes(lambda: ops.multistep(xa, va, c, "torch", leak, recompute))  # noqa: B023
        assert got == want, (name, recompute)


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
    plif = CONFIGS["plif-hard-sigmoid"]
    with pytest.raises(ValueError, match="leak .*exactly when config.parametric"):
        ops.multistep(x, v0, plif)
    with pytest.raises(ValueError, match="leak .*exactly when config.parametric"):
        ops.multistep(x, v0, CONFIGS["lif-hard-sigmoid"], leak=torch.tensor(0.5))
    with pytest.raises(ValueError, match="leak must be a 0-dim float32"):
        ops.multistep(x, v0, plif, leak=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="backend='cupy' needs CUDA tensors"):
        ops.multistep(x, v0, CONFIGS["lif-hard-sigmoid"], "cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.multistep(x, v0, CONFIGS["lif-hard-sigmoid"], "triton")
    with pytest.raises(ValueError, match="per-step shape"):
        ops.multistep(x, v0[0], CONFIGS["lif-hard-sigmoid"])
    with pytest.raises(ValueError, match="surrogate must be one of"):
        torch.ops.snn_lats.multistep_forward(x, v0, None, 2.0, True, 1.0, 0.0, False, "erf", 1.0, "torch",
                                             True)
    with pytest.raises(ValueError, match="tau must be <= 0"):
        torch.ops.snn_lats.multistep_forward(x, v0, torch.tensor(0.5), 2.0, True, 1.0, 0.0, False, "atan",
                                             1.0, "torch", True)
    with pytest.raises(ValueError, match="needs x_seq and v0"):
        torch.ops.snn_lats.multistep_backward(x, v0, None, None, None, None,
                                              *ops.config_args(CONFIGS["lif-hard-sigmoid"]), "torch")


def test_config_round_trip():
    for c in CONFIGS.values():
        assert ops.config_from_args(*ops.config_args(c), parametric=c.parametric) == c


class SEWBlock(nn.Module):
    """SEW ResNet basic block (conv-bn-sn, conv-bn-sn, ADD connection) in SpikingJelly multi-step layers."""

    def __init__(self, channels: int = 4, second: str = "if"):
        super().__init__()
        self.conv1 = layer.Conv2d(channels, channels, 3, padding=1, bias=False, step_mode="m")
        self.bn1 = layer.BatchNorm2d(channels, step_mode="m")
        self.sn1 = MultiStepLIFNode(tau=2.0, backend="torch")
        self.conv2 = layer.Conv2d(channels, channels, 3, padding=1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(channels, step_mode="m")
        self.sn2 = (MultiStepIFNode(v_reset=None, surrogate_function="atan") if second == "if" else
                    MultiStepParametricLIFNode(init_tau=2.5, v_reset=None, surrogate_function="atan"))

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


def _block_and_input(second="if"):
    torch.manual_seed(0)
    model = SEWBlock(second=second)
    x = (torch.rand(4, 2, 4, 8, 8) < 0.4).float()  # spikes in, as between SEW blocks
    return model, x


@pytest.mark.parametrize("second", ["if", "plif"])
def test_sew_block_has_no_graph_break(second):
    model, x = _block_and_input(second)
    functional.reset_net(model)
    explanation = torch._dynamo.explain(model)(x)
    functional.reset_net(model)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("second", ["if", "plif"])
def test_sew_block_compiled_equals_eager_aot_eager(second):
    model, x = _block_and_input(second)
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
@pytest.mark.parametrize("recompute", RECOMPUTE, ids=["stored_h", "recompute"])
@pytest.mark.parametrize("name", ["lif-hard-sigmoid", "plif-soft-atan-nodecay"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_op_matches_reference(dtype, name, recompute):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from snn_lats.snn import cuda_kernels

    backends = ["torch"] + (["cupy"] if cuda_kernels.cupy_available() else [])
    c = CONFIGS[name]
    x, v0 = _inputs(dtype, shape=(6, 64, 33))
    grad_spikes, grad_v = _inputs(dtype, shape=(6, 64, 33), seed=4)
    want = _through(lambda a, b, k: TorchMultiStep.apply(a, b, c, k), c, x, v0, grad_spikes, grad_v)
    for backend in backends:
        got = _through(lambda a, b, k: ops.multistep(a, b, c, backend, k, recompute), c,  # noqa: B023
                       x.cuda(), v0.cuda(), grad_spikes.cuda(), grad_v.cuda())
        for g, ref in zip(got, want, strict=True):
            assert g.dtype == ref.dtype
            # float32 math on both devices; CUDA's expf may differ by an ulp, so the low-precision gradients
            # get their dtype's default tolerance (the leak gradient sums over every neuron)
            tol = {"rtol": 1e-5, "atol": 1e-6} if g.dtype == torch.float32 else {}
            torch.testing.assert_close(g.cpu(), ref, **tol)
