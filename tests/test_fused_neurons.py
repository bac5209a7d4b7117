"""Fused multi-step neurons: the torch backend against SpikingJelly, kernel sources, GPU kernels, the swap."""
import itertools
import shutil
import subprocess

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

import models
import snn_lats
from snn_lats.metrics import measure
from snn_lats.snn import MultiStepIFNode, MultiStepLIFNode, cuda_kernels, use_fused_neurons
from snn_lats.snn.reference import NeuronConfig

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}
CONFIGS = list(itertools.product(["lif", "if"], [True, False], [0.0, None], [True, False],
                                 ["atan", "sigmoid"]))


def _pair(kind, decay_input, v_reset, detach_reset, sg, backend="torch"):
    common = dict(v_reset=v_reset, detach_reset=detach_reset, step_mode="m", v_threshold=1.0)
    if kind == "lif":
        sj = neuron.LIFNode(tau=2.0, decay_input=decay_input, surrogate_function=SURROGATES[sg](), **common)
        ours = MultiStepLIFNode(tau=2.0, decay_input=decay_input, surrogate_function=SURROGATES[sg](),
                                backend=backend, **common)
    else:
        sj = neuron.IFNode(surrogate_function=SURROGATES[sg](), **common)
        ours = MultiStepIFNode(surrogate_function=SURROGATES[sg](), backend=backend, **common)
    return sj, ours


def _run(node, x, weights):
    x = x.clone().requires_grad_()
    spikes = node(x)
    loss = (spikes * weights).sum() + node.v.sum()
    (grad,) = torch.autograd.grad(loss, x)
    return spikes.detach(), node.v.detach(), grad


@pytest.mark.parametrize("kind, decay_input, v_reset, detach_reset, sg", [c for c in CONFIGS
                                                                          if c[0] == "lif" or c[1]])
def test_torch_backend_matches_spikingjelly(kind, decay_input, v_reset, detach_reset, sg):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 7) * 1.5  # odd sizes
    weights = torch.randn_like(x)
    sj, ours = _pair(kind, decay_input, v_reset, detach_reset, sg)
    s_ref, v_ref, g_ref = _run(sj, x, weights)
    s, v, g = _run(ours, x, weights)
    assert 0.05 < s.mean() < 0.95
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(v, v_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6)


def test_single_step_mode_equals_multi_step_and_state_carries_over():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 10)
    multi = MultiStepLIFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    single = MultiStepLIFNode(surrogate_function=surrogate.ATan(), step_mode="s")
    expected = multi(x)
    got = torch.stack([single(x[t]) for t in range(6)])
    assert torch.equal(got, expected)
    functional.reset_net(single)
    assert not isinstance(single.v, torch.Tensor) or single.v.abs().sum() == 0


def test_swap_keeps_a_sew_resnet_bit_identical_and_counts_as_neurons():
    torch.manual_seed(0)
    kwargs = dict(T=4, neuron_type="lif", stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.25,
                  detach_reset=False)
    reference = models.create_model("sew_resnet18", **kwargs)
    fused = models.create_model("sew_resnet18", **kwargs)
    fused.load_state_dict(reference.state_dict())
    functional.reset_net(fused)  # fill SpikingJelly 2.x's reset cache before the swap
    report = use_fused_neurons(fused)
    assert len(report.replaced) == 20 and not report.unsupported
    sn = fused.layer1[0].sn1
    assert isinstance(sn, MultiStepLIFNode) and sn.tau == 2.0 and sn.config.surrogate == "atan"
    assert sn.detach_reset is False
    x = torch.rand(4, 1, 8, 8) * 3
    out_ref, out = reference(x), fused(x)
    assert torch.equal(out, out_ref)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p), q in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    functional.reset_net(fused)  # the refreshed cache reaches the new neurons
    assert all(not isinstance(m.v, torch.Tensor) for m in fused.modules() if isinstance(m, neuron.BaseNode))
    functional.reset_net(reference)
    fused.eval(), reference.eval()
    rates_ref = measure(reference, [x]).layers
    rates = measure(fused, [x]).layers
    assert rates["layer2.0.sn1"]["firing_rate"] == rates_ref["layer2.0.sn1"]["firing_rate"]


def test_swap_reports_what_it_cannot_replace():
    model = models.create_model("sew_resnet18", neuron_type="plif", width_multiplier=0.25)
    report = use_fused_neurons(model)
    assert not report.replaced and len(report.unsupported) == 20
    assert "ParametricLIFNode" in next(iter(report.unsupported.values()))
    net = torch.nn.Sequential(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic()),
                              neuron.IFNode(surrogate_function=surrogate.ATan()))
    report = use_fused_neurons(net)
    assert report.replaced == ["1"] and "surrogate" in report.unsupported["0"]
    assert "kept 0" in str(report)


def test_fused_sew_resnet_trains_under_the_pruner():
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", T=2, neuron_type="if", stem="cifar", in_channels=1,
                                num_classes=10, width_multiplier=0.125)
    use_fused_neurons(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = snn_lats.SoftThresholdPruner(model, final_threshold=0.05, total_steps=4, ignored_layers=["fc"],
                                          optimizer=optimizer)
    x, y = torch.rand(8, 1, 8, 8) * 3, torch.randint(0, 10, (8,))
    for _ in range(4):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(model)
        pruner.step()
    assert pruner.sparsity_report().sparsity > 0.2


# --- kernel sources: compile on the CPU ---------------------------------------------------------------------

def _all_sources():
    for kind, decay, v_reset, detach, sg in CONFIGS:
        if kind == "if" and not decay:
            continue
        config = NeuronConfig(2.0 if kind == "lif" else None, decay, 1.0, v_reset, detach, sg, 2.0)
        for dtype in cuda_kernels.DTYPES.values():
            yield (cuda_kernels.kernel_name("forward", config, dtype),
                   cuda_kernels.forward_source(config, dtype))
            yield (cuda_kernels.kernel_name("backward", config, dtype),
                   cuda_kernels.backward_source(config, dtype))


def test_every_generated_kernel_compiles(tmp_path):
    sources = list(_all_sources())
    # {LIF decay_input, LIF, IF} x {hard, soft} x detach x {atan, sigmoid} x {fp32, fp16, bf16} x {fwd, bwd}
    assert len(sources) == len({name for name, _ in sources}) == 3 * 2 * 2 * 2 * 3 * 2
    if cuda_kernels.nvrtc_available():
        for name, source in sources:
            ptx = cuda_kernels.compile_check(source, f"{name}.cu")
            assert f".entry {name}" in ptx, name
    elif shutil.which("nvcc"):
        for name, source in sources:
            (tmp_path / f"{name}.cu").write_text(source)
            subprocess.run(["nvcc", "-ptx", "-arch=sm_80", "--fmad=false", str(tmp_path / f"{name}.cu"), "-o",
                            str(tmp_path / f"{name}.ptx")], check=True, capture_output=True)
    else:
        pytest.skip("neither NVRTC (torch's CUDA wheels) nor nvcc is available to compile the kernels")


def test_a_broken_kernel_reports_the_compiler_log():
    if not cuda_kernels.nvrtc_available():
        pytest.skip("NVRTC is not available")
    with pytest.raises(RuntimeError, match=r"(?s)NVRTC failed.*undefined_thing.*is undefined"):
        cuda_kernels.compile_check('extern "C" __global__ void k() { undefined_thing(); }')


# --- GPU: the cupy backend against the torch reference ------------------------------------------------------

needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernels.cupy_available()),
                               reason="needs CUDA and CuPy (pip install -e '.[cuda]') on a GPU machine")
GPU_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCE))
@pytest.mark.parametrize("kind, decay_input, v_reset, detach_reset, sg",
                         [c for c in CONFIGS if c[0] == "lif" or c[1]])
@pytest.mark.parametrize("shape", [(4, 2, 64, 56, 56), (5, 3, 7, 13)])  # odd sizes too
def test_cupy_matches_torch(dtype, kind, decay_input, v_reset, detach_reset, sg, shape):
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 1.5).to(dtype)
    weights = torch.randn_like(x)
    _, reference = _pair(kind, decay_input, v_reset, detach_reset, sg, backend="torch")
    _, fused = _pair(kind, decay_input, v_reset, detach_reset, sg, backend="cupy")
    s_ref, v_ref, g_ref = _run(reference, x, weights)
    s, v, g = _run(fused, x, weights)
    if dtype == torch.float32:
        assert torch.equal(s, s_ref)
    else:  # both compute in float32 from the same rounded inputs
        assert (s != s_ref).float().mean() < 1e-4
    tol = GPU_TOLERANCE[dtype]
    torch.testing.assert_close(v, v_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(g.float(), g_ref.float(), atol=tol, rtol=tol)


# --- bad input ----------------------------------------------------------------------------------------------

def test_bad_input():
    with pytest.raises(ValueError, match=r"backend='cupy' needs CUDA tensors.*cpu"):
        MultiStepLIFNode(backend="cupy")(torch.rand(2, 3))
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiStepLIFNode(backend="triton")
    with pytest.raises(ValueError, match="surrogate_function"):
        MultiStepIFNode(surrogate_function=surrogate.PiecewiseQuadratic())
    with pytest.raises(ValueError, match="tau"):
        MultiStepLIFNode(tau=0.5)
    with pytest.raises(ValueError, match=r"\[T, \.\.\.\]"):
        MultiStepLIFNode(step_mode="m")(torch.tensor(1.0))
    assert MultiStepLIFNode().resolve_backend(torch.rand(2, 3)) == "torch"  # automatic on the CPU
