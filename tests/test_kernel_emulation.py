"""The CUDA kernel source strings of ``cuda_kernels.py``, compiled unmodified with g++ and run on the CPU
(``snn_lats.snn.host_emulation``), against the torch backend (``reference.TorchMultiStep``).

Every config (IF, LIF, LIF decay_input) x (hard, soft reset) x (detach, attach) x (atan, sigmoid) x
(fp32, fp16, bf16), N in (1, 257, 1000) (not multiples of BLOCK=256), T in (1, 5), through ``HostMultiStep``
which passes exactly ``CupyMultiStep``'s arguments. Spikes must match exactly; v_last exactly (the same
float32 operations in the same order); atan gradients exactly, sigmoid gradients within
``SIGMOID_SCALE_ULPS`` (see there).
"""
import itertools
import math

import pytest
import torch

from snn_lats.snn import cuda_kernels
from snn_lats.snn import host_emulation as he
from snn_lats.snn.reference import NeuronConfig, TorchMultiStep

AVAILABLE, REASON = he.host_compiler_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"no host C++ compiler for the CUDA shim: {REASON}")

NEURONS = {"if": (None, False), "lif": (2.0, False), "lif_decay_input": (2.0, True)}
CONFIGS = [NeuronConfig(tau=tau, decay_input=decay, v_threshold=1.0, v_reset=v_reset, detach_reset=detach,
                        surrogate=sg, alpha=4.0 if sg == "sigmoid" else 2.0)
           for (tau, decay), v_reset, detach, sg in itertools.product(NEURONS.values(), [0.0, None],
                                                                      [True, False], ["atan", "sigmoid"])]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(T, N) for T in (1, 5) for N in (1, 257, 1000)]
# Gradient tolerance. The kernel and the torch backend do the same float32 operations in the same order,
# except the sigmoid surrogate: ``torch.sigmoid`` (SLEEF, vectorised) is not ``1 / (1 + expf(-x))`` with
# glibc's expf, so sg can differ by an ulp, and that difference travels back through T steps of ``carry``
# where terms cancel (an entry near zero can be hundreds of its own ulps off). Hence: atan gradients must be
# bit-identical (measured: they are); sigmoid gradients may differ per entry by at most SIGMOID_SCALE_ULPS
# float32 ulps of the tensor's largest |entry| (measured max 3.8), or by 1 ulp of the output dtype at the
# entry (fp16 rounding of a 1-ulp float32 difference, measured max 1).
SIGMOID_SCALE_ULPS = 8
MANTISSA = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}
MIN_EXP = {torch.float32: -126, torch.float16: -14, torch.bfloat16: -126}


def _ulps(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """|got - ref| in units of the last place of ``dtype`` at ``ref``."""
    got, ref = got.double(), ref.double()
    exponent = torch.floor(torch.log2(ref.abs().clamp_min(2.0 ** MIN_EXP[dtype]))).clamp_min(MIN_EXP[dtype])
    return (got - ref).abs() / torch.exp2(exponent - MANTISSA[dtype])


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """All 2 x 24 kernels of one dtype in one shared object: three g++ runs, not 144."""
    he.precompile_neuron_kernels(CONFIGS)
    yield
    he.clear_neuron_kernels()


def _inputs(c: NeuronConfig, dtype: torch.dtype, T: int, N: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, N, generator=g) * 1.2 + 0.4).to(dtype)
    v0 = torch.randn(N, generator=g) * 0.3
    # a few neurons charge to exactly v_threshold at t = 0 (v0 = 0): the >= comparison decides them
    exact = min(N, 8)
    v0[:exact] = 0.0
    x[0, :exact] = c.v_threshold * (c.tau if c.decay_input and c.tau else 1.0)
    grad_spikes = torch.randn(T, N, generator=g).to(dtype)
    grad_v = torch.randn(N, generator=g)
    return x, v0, grad_spikes, grad_v


def _run(fn, x, v0, grad_spikes, grad_v, c):
    x = x.clone().requires_grad_()
    v0 = v0.clone().requires_grad_()
    spikes, v_last = fn.apply(x, v0, c)
    grad_x, grad_v0 = torch.autograd.grad((spikes, v_last), (x, v0), (grad_spikes, grad_v))
    return spikes.detach(), v_last.detach(), grad_x, grad_v0


def _within(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, c: NeuronConfig) -> bool:
    if c.surrogate == "atan":
        return torch.equal(got, ref)
    diff = (got.double() - ref.double()).abs()
    scale = SIGMOID_SCALE_ULPS * 2.0 ** -MANTISSA[torch.float32] * ref.double().abs().max()
    return bool(torch.all((diff <= scale) | (_ulps(got, ref, dtype) <= 1)))


def compare(c: NeuronConfig, dtype: torch.dtype, T: int, N: int, seed: int = 0) -> dict:
    x, v0, grad_spikes, grad_v = _inputs(c, dtype, T, N, seed)
    s, v, gx, gv = _run(he.HostMultiStep, x, v0, grad_spikes, grad_v, c)
    s_ref, v_ref, gx_ref, gv_ref = _run(TorchMultiStep, x, v0, grad_spikes, grad_v, c)
    assert s.dtype == s_ref.dtype == dtype and gx.dtype == gx_ref.dtype == dtype
    return dict(spike_mismatches=int((s != s_ref).sum()), spike_rate=float(s.float().mean()),
                v_abs=float((v - v_ref).abs().max()),
                gx_abs=float((gx.float() - gx_ref.float()).abs().max()),
                gv_abs=float((gv - gv_ref).abs().max()),
                gx_ok=_within(gx, gx_ref, dtype, c), gv_ok=_within(gv, gv_ref, torch.float32, c))


def _id(c: NeuronConfig) -> str:
    return cuda_kernels.kernel_name("x", c, "float")[len("snn_lats_"):-len("_float_x")]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("c", CONFIGS, ids=_id)
def test_kernel_source_on_host_matches_torch_backend(c, dtype):
    rates = []
    for T, N in SHAPES:
        r = compare(c, dtype, T, N, seed=T * 7919 + N)
        where = f"{_id(c)} {dtype} T={T} N={N}: {r}"
        assert r["spike_mismatches"] == 0, where
        assert r["v_abs"] == 0.0, where
        assert r["gx_ok"] and r["gv_ok"], where
        rates.append(r["spike_rate"])
    assert 0.05 < rates[-1] < 0.95  # mixed spikes in the largest case


def test_a_wrong_kernel_source_is_caught(monkeypatch):
    """``h > v_threshold`` instead of ``>=``: the neurons charged to exactly the threshold tell them apart."""
    c = CONFIGS[0]
    good = cuda_kernels.forward_source(c, "float")
    bad = good.replace("h >= v_threshold", "h > v_threshold")
    assert bad != good
    monkeypatch.setitem(he._NEURON_KERNELS, ("forward", c, "float"),
                        he.compile_on_host(bad, cuda_kernels.kernel_name("forward", c, "float")))
    r = compare(c, torch.float32, 5, 257)
    assert r["spike_mismatches"] > 0


def test_a_wrong_scalar_argument_is_caught(monkeypatch):
    """The plumbing is checked too: a launcher that swaps tau for 1.0 changes v_last."""
    c = CONFIGS[-1]  # LIF decay_input
    kernel = he._NEURON_KERNELS[("forward", c, "float")]

    class Swapped:
        def __call__(self, grid, block, *args):
            args = list(args)
            args[7] = 1.0
            kernel(grid, block, *args)

    monkeypatch.setitem(he._NEURON_KERNELS, ("forward", c, "float"), Swapped())
    r = compare(c, torch.float32, 5, 257)
    assert r["v_abs"] > 0


def test_shim_conversions_round_to_nearest_even():
    source = """
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void snn_lats_test_convert(const float* __restrict__ x, __half* __restrict__ h,
    __nv_bfloat16* __restrict__ b, float* __restrict__ back, const long long N)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    h[i] = __float2half_rn(x[i]);
    b[i] = __float2bfloat16_rn(x[i]);
    back[i] = __half2float(h[i]) + __bfloat162float(b[i]);
}
"""
    kernel = he.compile_on_host(source)
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2 ** 31, 2 ** 31, (200_000,), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits.view(torch.float32), torch.randn(10_000, generator=g),
                   torch.tensor([0.0, -0.0, 65504.0, 65520.0, 1e-8, 6e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11,
                                 1 + 2 ** -8, 1 + 3 * 2 ** -8, math.inf, -math.inf, math.nan])])
    n = x.numel()
    h, b = torch.empty(n, dtype=torch.float16), torch.empty(n, dtype=torch.bfloat16)
    back = torch.empty(n)
    kernel((n + 255) // 256, 256, x, h, b, back, n)
    torch.testing.assert_close(h, x.half(), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(b, x.bfloat16(), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(back, x.half().float() + x.bfloat16().float(), rtol=0, atol=0, equal_nan=True)


def test_the_source_is_compiled_unmodified_with_a_launcher_after_it():
    source = cuda_kernels.backward_source(CONFIGS[5], "__half")
    text, kernels = he._translation_unit((source,))
    assert source in text and text.index(source) < text.index("launch_")
    (name,) = kernels
    assert name == cuda_kernels.kernel_name("backward", CONFIGS[5], "__half")
    names = ["grad_spikes", "grad_v_last", "charged", "grad_x", "grad_v0", "T", "N", "tau", "v_threshold",
             "v_reset", "alpha", "atan_scale"]
    assert [p.name for p in kernels[name]] == names
    assert [p.type for p in kernels[name]][:5] == ["__half", "float", "float", "__half", "float"]


def test_bad_arguments_name_the_parameter():
    c = CONFIGS[0]
    kernel = he._NEURON_KERNELS[("forward", c, "float")]
    x, v0 = torch.zeros(2, 3), torch.zeros(3)
    out = [torch.empty(2, 3), torch.empty(2, 3), torch.empty(3)]
    scalars = [2, 3, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="argument x .*float16|argument x .*torch.float32"):
        kernel(1, 256, x.half(), v0, *out, *scalars)
    with pytest.raises(ValueError, match="argument v0 .*contiguous"):
        kernel(1, 256, x, torch.zeros(3, 2)[:, 0], *out, *scalars)
    with pytest.raises(TypeError, match="argument T .*int"):
        kernel(1, 256, x, v0, *out, 2.0, *scalars[1:])
    with pytest.raises(TypeError, match="argument tau .*float"):
        kernel(1, 256, x, v0, *out, 2, 3, "1", *scalars[3:])
    with pytest.raises(TypeError, match="takes 11 arguments"):
        kernel(1, 256, x, v0)
    with pytest.raises(ValueError, match="1-D"):
        kernel((1, 2), 256, x, v0, *out, *scalars)
    with pytest.raises(ValueError, match="no extern"):
        he.compile_on_host("int main() { return 0; }")
