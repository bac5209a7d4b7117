"""The CUDA kernel source strings of ``cuda_kernels.py``, compiled unmodified with g++ and run on the CPU
(``snn_lats.snn.host_emulation``), against the torch backend (``reference.TorchMultiStep``).

Every config (IF, LIF, LIF decay_input, PLIF, PLIF decay_input) x (hard, soft reset) x (detach, attach) x
(atan, sigmoid) x (fp32, fp16, bf16) x (stored-h, recompute backward), N in (1, 257, 1000) (not multiples of
BLOCK=256), T in (1, 5), through ``HostMultiStep``, which passes exactly the CUDA op's arguments. Spikes must
match exactly; v_last exactly (the same float32 operations in the same order); atan gradients exactly (the
PLIF leak gradient included), sigmoid gradients within ``SIGMOID_SCALE_ULPS`` (see there); and the two
backward variants must agree with each other bit for bit (the recompute kernel rebuilds h exactly).
"""
import math

import pytest
import torch

from snn_lats.snn import cuda_kernels
from snn_lats.snn import host_emulation as he
from snn_lats.snn.reference import NeuronConfig

AVAILABLE, REASON = he.host_compiler_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"no host C++ compiler for the CUDA shim: {REASON}")

CONFIGS = he.COMPARE_CONFIGS  # the grid, shared with experiments/kernel_emulation.py
DTYPES = he.COMPARE_DTYPES
STEPS = he.COMPARE_STEPS
SHAPES = he.COMPARE_SHAPES
# Gradient tolerance. The kernel and the torch backend do the same float32 operations in the same order,
# except the sigmoid surrogate: ``torch.sigmoid`` (SLEEF, vectorised) is not ``1 / (1 + expf(-x))`` with
# glibc's expf, so sg can differ by an ulp, and that difference travels back through T steps of ``carry``
# where terms cancel (an entry near zero can be hundreds of its own ulps off). Hence: atan gradients must be
# bit-identical (measured: they are); sigmoid gradients may differ per entry by at most SIGMOID_SCALE_ULPS
# float32 ulps of the tensor's largest |entry| (measured max 3.8), or by 1 ulp of the output dtype at the
# entry (fp16 rounding of a 1-ulp float32 difference, measured max 1).
SIGMOID_SCALE_ULPS = 8
MANTISSA = he.MANTISSA
_ulps = he.dtype_ulps  # |got - ref| in units of the last place of ``dtype`` at ``ref``


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """All 5 x 40 kernels of one dtype in one shared object: three g++ runs, not 600."""
    he.precompile_neuron_kernels(CONFIGS, steps=STEPS)
    yield
    he.clear_neuron_kernels()


def _within(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, c: NeuronConfig, scale=None) -> bool:
    if c.surrogate == "atan":
        return torch.equal(got, ref)
    diff = (got.double() - ref.double()).abs()
    scale = ref.double().abs().max() if scale is None else scale
    bound = SIGMOID_SCALE_ULPS * 2.0 ** -MANTISSA[torch.float32] * scale
    return bool(torch.all((diff <= bound) | (_ulps(got, ref, dtype) <= 1)))


def compare(c: NeuronConfig, dtype: torch.dtype, T: int, N: int, seed: int = 0,
            recompute: bool = False) -> dict:
    """``he.compare_with_reference`` plus this test's verdicts ``gx_ok``, ``gv_ok`` (and ``gk_ok``)."""
    result = he.compare_with_reference(c, dtype, T, N, seed=seed, recompute=recompute)
    (s, _, gx, gv, *gk), (s_ref, _, gx_ref, gv_ref, *gk_ref) = result["outputs"], result["reference"]
    assert s.dtype == s_ref.dtype == dtype and gx.dtype == gx_ref.dtype == dtype
    result["gx_ok"] = _within(gx, gx_ref, dtype, c)
    result["gv_ok"] = _within(gv, gv_ref, torch.float32, c)
    if c.parametric:
        # dL/dk sums one partial per neuron: its tolerance scales with the sum of |partials|
        result["gk_ok"] = _within(gk[0], gk_ref[0], torch.float32, c, scale=result["gk_scale"])
    return result


def _id(c: NeuronConfig) -> str:
    return he.config_id(c)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("c", CONFIGS, ids=_id)
def test_kernel_source_on_host_matches_torch_backend(c, dtype):
    rates = []
    for T, N in SHAPES:
        variants = []
        for recompute in (False, True):
            r = compare(c, dtype, T, N, seed=he.compare_seed(T, N), recompute=recompute)
            where = f"{_id(c)} {dtype} T={T} N={N} recompute={recompute}: {r}"
            assert r["spike_mismatches"] == 0, where
            assert r["v_abs"] == 0.0, where
            assert r["gx_ok"] and r["gv_ok"] and r.get("gk_ok", True), where
            variants.append(r["outputs"])
        for stored, lean in zip(*variants, strict=True):  # the two kernels do the same float32 operations
            assert torch.equal(stored, lean), f"{_id(c)} {dtype} T={T} N={N}: stored-h != recompute"
        rates.append(r["spike_rate"])
    assert 0.05 < rates[-1] < 0.95  # mixed spikes in the largest case


def test_recompute_refuses_T_beyond_its_registers():
    c = CONFIGS[0]
    T = cuda_kernels.RECOMPUTE_MAX_T + 1
    x, v0 = torch.zeros(T, 3), torch.zeros(3)
    with pytest.raises(ValueError, match="RECOMPUTE_MAX_T"):
        cuda_kernels.cupy_backward(x, None, c, None, x, v0, launch=he.launch)
    with pytest.raises(ValueError, match="steps must be an int"):
        cuda_kernels.backward_source(c, "float", "backward_recompute", T)


def test_a_wrong_kernel_source_is_caught(monkeypatch):
    """``h > v_threshold`` instead of ``>=``: the neurons charged to exactly the threshold tell them apart."""
    c = CONFIGS[0]
    good = cuda_kernels.forward_source(c, "float")
    bad = good.replace("h >= v_threshold", "h > v_threshold")
    assert bad != good
    monkeypatch.setitem(he._NEURON_KERNELS, ("forward", c, "float", None),
                        he.compile_on_host(bad, cuda_kernels.kernel_name("forward", c, "float", None)))
    r = compare(c, torch.float32, 5, 257)
    assert r["spike_mismatches"] > 0


def test_a_wrong_scalar_argument_is_caught(monkeypatch):
    """The plumbing is checked too: a launcher that swaps tau for 1.0 changes v_last."""
    c = next(c for c in CONFIGS if c.tau and c.decay_input)
    kernel = he._NEURON_KERNELS[("forward", c, "float", None)]

    class Swapped:
        def __call__(self, grid, block, *args):
            args = list(args)
            args[7] = 1.0
            kernel(grid, block, *args)

    monkeypatch.setitem(he._NEURON_KERNELS, ("forward", c, "float", None), Swapped())
    r = compare(c, torch.float32, 5, 257)
    assert r["v_abs"] > 0


def test_a_wrong_recompute_kernel_is_caught(monkeypatch):
    """The recompute backward must rebuild h from the saved v0: starting from 0 instead changes the grads."""
    c = CONFIGS[-1]  # PLIF decay_input, sigmoid
    key = ("backward_recompute", c, "float", 5)
    good = cuda_kernels.source(*key)
    bad = good.replace("const float v_init = v0[i];", "const float v_init = 0.0f;")
    assert bad != good
    monkeypatch.setitem(he._NEURON_KERNELS, key, he.compile_on_host(bad, cuda_kernels.kernel_name(*key)))
    r = compare(c, torch.float32, 5, 257, recompute=True)
    assert r["spike_mismatches"] == 0 and not (r["gx_ok"] and r["gv_ok"])


def test_a_wrong_leak_gradient_is_caught(monkeypatch):
    """dL/dk without the leak of the potential, (X - V) replaced by X: only the leak gradient changes."""
    c = next(c for c in CONFIGS if c.parametric and c.decay_input and c.surrogate == "atan")
    key = ("backward", c, "float", None)
    good = cuda_kernels.source(*key)
    bad = good.replace("(x[k] - (previous - v_reset))", "(x[k])")
    assert bad != good
    monkeypatch.setitem(he._NEURON_KERNELS, key, he.compile_on_host(bad, cuda_kernels.kernel_name(*key)))
    r = compare(c, torch.float32, 5, 257)
    assert r["gx_ok"] and r["gv_ok"] and not r["gk_ok"]


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
    kernel = he._NEURON_KERNELS[("forward", c, "float", None)]
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
