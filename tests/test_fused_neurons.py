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
from snn_lats.snn import (
    MultiStepIFNode,
    MultiStepLIFNode,
    MultiStepParametricLIFNode,
    cuda_kernels,
    use_fused_neurons,
)
from snn_lats.snn.reference import NeuronConfig

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}
CONFIGS = [c for c in itertools.product(["lif", "if", "plif"], [True, False], [0.0, None], [True, False],
                                        ["atan", "sigmoid"]) if c[0] != "if" or c[1]]  # IF has no decay


def _pair(kind, decay_input, v_reset, detach_reset, sg, backend="torch"):
    common = dict(v_reset=v_reset, detach_reset=detach_reset, step_mode="m", v_threshold=1.0)
    if kind == "lif":
        sj = neuron.LIFNode(tau=2.0, decay_input=decay_input, surrogate_function=SURROGATES[sg](), **common)
        ours = MultiStepLIFNode(tau=2.0, decay_input=decay_input, surrogate_function=SURROGATES[sg](),
                                backend=backend, **common)
    elif kind == "plif":
        sj = neuron.ParametricLIFNode(init_tau=2.5, decay_input=decay_input,
                                      surrogate_function=SURROGATES[sg](), **common)
        ours = MultiStepParametricLIFNode(init_tau=2.5, decay_input=decay_input,
                                          surrogate_function=SURROGATES[sg](), backend=backend, **common)
    else:
        sj = neuron.IFNode(surrogate_function=SURROGATES[sg](), **common)
        ours = MultiStepIFNode(surrogate_function=SURROGATES[sg](), backend=backend, **common)
    return sj, ours


def _run(node, x, weights):
    """(spikes, v_last, grad x[, grad w]) of a weighted loss on spikes and v_last."""
    x = x.clone().requires_grad_()
    spikes = node(x)
    loss = (spikes * weights).sum() + node.v.sum()
    grads = torch.autograd.grad(loss, [x] + ([node.w] if hasattr(node, "w") else []))
    return spikes.detach(), node.v.detach(), *grads


@pytest.mark.parametrize("recompute", [False, True], ids=["stored_h", "recompute"])
@pytest.mark.parametrize("kind, decay_input, v_reset, detach_reset, sg", CONFIGS)
def test_torch_backend_matches_spikingjelly(kind, decay_input, v_reset, detach_reset, sg, recompute):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 7) * 1.5  # odd sizes
    weights = torch.randn_like(x)
    sj, ours = _pair(kind, decay_input, v_reset, detach_reset, sg)
    ours.recompute = recompute
    s_ref, v_ref, *g_ref = _run(sj, x, weights)
    s, v, *g = _run(ours, x, weights)
    assert 0.05 < s.mean() < 0.95
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(v, v_ref, atol=1e-6, rtol=0)
    for got, want in zip(g, g_ref, strict=True):  # grad x, and PLIF's grad w (a sum over all neurons)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


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


def _assert_same_step(reference, fused, x):
    """Bit-identical outputs, and every parameter's gradient to float32 noise."""
    out_ref, out = reference(x), fused(x)
    assert torch.equal(out, out_ref)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p), q in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


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
    _assert_same_step(reference, fused, x)
    functional.reset_net(fused)  # the refreshed cache reaches the new neurons
    assert all(not isinstance(m.v, torch.Tensor) for m in fused.modules() if isinstance(m, neuron.BaseNode))
    functional.reset_net(reference)
    fused.eval(), reference.eval()
    rates_ref = measure(reference, [x]).layers
    rates = measure(fused, [x]).layers
    assert rates["layer2.0.sn1"]["firing_rate"] == rates_ref["layer2.0.sn1"]["firing_rate"]


def test_swap_replaces_plif_keeping_its_parameter():
    """A PLIF SEW ResNet (the SEW papers' neuron): the swap keeps each node's very ``w`` Parameter (so an
    optimizer built before the swap still updates it), and the model is bit-identical forward, with the
    same gradients for every parameter, w included."""
    torch.manual_seed(0)
    kwargs = dict(T=4, neuron_type="plif", stem="cifar", in_channels=1, num_classes=10, width_multiplier=0.25)
    reference = models.create_model("sew_resnet18", **kwargs)
    with torch.no_grad():  # distinct learned leaks per layer
        for i, m in enumerate(m for m in reference.modules() if isinstance(m, neuron.ParametricLIFNode)):
            m.w.fill_(-0.5 + 0.05 * i)
    fused = models.create_model("sew_resnet18", **kwargs)
    fused.load_state_dict(reference.state_dict())
    w_before = {n: p for n, p in fused.named_parameters() if n.endswith(".w")}
    report = use_fused_neurons(fused)
    assert len(report.replaced) == 20 and not report.unsupported
    sn = fused.layer1[0].sn1
    assert isinstance(sn, MultiStepParametricLIFNode) and sn.w is w_before["layer1.0.sn1.w"]
    assert dict(fused.state_dict()).keys() == dict(reference.state_dict()).keys()
    x = torch.rand(4, 1, 8, 8) * 3
    _assert_same_step(reference, fused, x)
    assert float(sn.w.grad.abs()) > 0


def test_swap_reports_what_it_cannot_replace():
    net = torch.nn.Sequential(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic()),
                              neuron.IFNode(surrogate_function=surrogate.ATan()),
                              neuron.QIFNode(), neuron.LIFNode(store_v_seq=True))
    report = use_fused_neurons(net)
    assert report.replaced == ["1"] and "surrogate" in report.unsupported["0"]
    assert "QIFNode has no fused equivalent" in report.unsupported["2"]
    assert "store_v_seq" in report.unsupported["3"]
    assert "kept 0" in str(report)


@pytest.mark.skipif(cuda_kernels.cupy_available(), reason="needs a machine without a working CuPy GPU")
def test_a_cupy_swap_without_a_cupy_gpu_is_refused_before_anything_is_swapped():
    net = models.create_model("sew_resnet18", T=2, num_classes=10, width_multiplier=0.125)
    before = [type(m) for m in net.modules()]
    with pytest.raises(RuntimeError, match=r"backend='cupy' needs CuPy with a working CUDA GPU"):
        use_fused_neurons(net, backend="cupy")
    assert [type(m) for m in net.modules()] == before  # not one neuron swapped


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

KERNEL_KINDS = [("forward", None), ("forward_recompute", None), ("backward", None), ("backward_recompute", 4),
                ("backward_recompute", cuda_kernels.RECOMPUTE_MAX_T)]


def _all_sources():
    for kind, decay, v_reset, detach, sg in CONFIGS:
        config = NeuronConfig(2.0 if kind == "lif" else None, decay and kind != "if", 1.0, v_reset, detach,
                              sg, 2.0, parametric=kind == "plif")
        for dtype in cuda_kernels.DTYPES.values():
            for kernel, steps in KERNEL_KINDS:
                yield (cuda_kernels.kernel_name(kernel, config, dtype, steps),
                       cuda_kernels.source(kernel, config, dtype, steps))


def test_every_generated_kernel_compiles(tmp_path):
    sources = list(_all_sources())
    # {LIF, PLIF} x decay_input + IF, x {hard, soft} x detach x {atan, sigmoid} x {fp32, fp16, bf16} x 5 kinds
    assert len(sources) == len({name for name, _ in sources}) == 5 * 2 * 2 * 2 * 3 * len(KERNEL_KINDS)
    # one translation unit for all of them: the CUDA headers are parsed once, not 600 times
    unit = "\n".join(source for _, source in sources)
    if cuda_kernels.nvrtc_available():
        ptx = cuda_kernels.compile_check(unit, "all_kernels.cu")
    elif shutil.which("nvcc"):
        (tmp_path / "all_kernels.cu").write_text(unit)
        subprocess.run(["nvcc", "-ptx", "-arch=sm_80", "--fmad=false", str(tmp_path / "all_kernels.cu"), "-o",
                        str(tmp_path / "all_kernels.ptx")], check=True, capture_output=True)
        ptx = (tmp_path / "all_kernels.ptx").read_text()
    else:
        pytest.skip("neither NVRTC (torch's CUDA wheels) nor nvcc is available to compile the kernels")
    for name, _ in sources:
        assert f".entry {name}(" in ptx, name


def test_a_broken_kernel_reports_the_compiler_log():
    if not cuda_kernels.nvrtc_available():
        pytest.skip("NVRTC is not available")
    with pytest.raises(RuntimeError, match=r"(?s)NVRTC failed.*undefined_thing.*is undefined"):
        cuda_kernels.compile_check('extern "C" __global__ void k() { undefined_thing(); }')


# --- GPU: the cupy backend against the torch reference ------------------------------------------------------

needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernels.cupy_available()),
                               reason="needs CUDA and CuPy (pip install -e '.[cuda]') on a GPU machine")
# every neuron kind, reset, detach and surrogate at least once; kept small because each config compiles four
# kernels per dtype and `make gpu-check` gives `pytest -m gpu` 50 s (the CPU emulation runs all 40 configs)
GPU_CONFIGS = [("lif", True, 0.0, False, "sigmoid"), ("lif", False, None, True, "atan"),
               ("if", True, 0.0, True, "atan"), ("if", True, None, False, "sigmoid"),
               ("plif", True, 0.0, False, "sigmoid"), ("plif", False, None, True, "atan"),
               ("plif", True, None, False, "atan")]
GPU_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCE))
@pytest.mark.parametrize("kind, decay_input, v_reset, detach_reset, sg", GPU_CONFIGS)
@pytest.mark.parametrize("shape, recompute", [((4, 2, 64, 56, 56), True), ((5, 3, 7, 13), True),
                                              ((5, 3, 7, 13), False)])  # odd sizes too
def test_cupy_matches_torch(dtype, kind, decay_input, v_reset, detach_reset, sg, shape, recompute):
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 1.5).to(dtype)
    weights = torch.randn_like(x)
    _, reference = _pair(kind, decay_input, v_reset, detach_reset, sg, backend="torch")
    _, fused = _pair(kind, decay_input, v_reset, detach_reset, sg, backend="cupy")
    reference.to("cuda"), fused.to("cuda")
    fused.recompute = recompute
    s_ref, v_ref, *g_ref = _run(reference, x, weights)
    s, v, *g = _run(fused, x, weights)
    if dtype == torch.float32:
        assert torch.equal(s, s_ref)
    else:  # both compute in float32 from the same rounded inputs
        assert (s != s_ref).float().mean() < 1e-4
    tol = GPU_TOLERANCE[dtype]
    torch.testing.assert_close(v, v_ref, atol=tol, rtol=tol)
    for got, want in zip(g, g_ref, strict=True):
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


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
