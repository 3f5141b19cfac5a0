"""RMSNorm kernels (plain, fused residual add, gated) vs the fp32 reference."""

import pytest
import torch

from qwen3next_cuda import ops, reference
from tests.utils import assert_close, nan_like

cuda = pytest.mark.cuda
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# tolerance of a result rounded once to the dtype, against an fp32 reference of the same inputs
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=1e-4, rtol=2e-3),
       torch.bfloat16: dict(atol=1e-3, rtol=1.6e-2)}


def _randn(*shape, dtype, device="cuda", gen=None):
    return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


@pytest.fixture
def gen():
    return torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 2048), (15, 2048), (63, 72), (300, 2048), (4097, 128),
                                           (7, 100), (5, 4096), (9, 512), (3, 8192)])
def test_rmsnorm_add(dtype, tokens, hidden, gen):
    x = _randn(tokens, hidden, dtype=dtype, gen=gen)
    residual = _randn(tokens, hidden, dtype=dtype, gen=gen) * 4
    weight = _randn(hidden, dtype=dtype, gen=gen) * 0.1
    residual_out, out = nan_like(x), nan_like(x)
    torch.ops.qwen3next.rmsnorm_add(residual_out, out, x, residual, weight, 1e-6)

    expected_residual = x + residual  # torch adds in fp32 and rounds once, as the kernel does
    assert torch.equal(residual_out, expected_residual), "residual_out differs from x + residual"
    ref = reference.rmsnorm(expected_residual.float(), weight.float(), 1e-6)
    assert_close(out, ref, **TOL[dtype], name="normed")


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 2048), (33, 2048), (300, 72), (9, 13)])
def test_rmsnorm(dtype, tokens, hidden, gen):
    x = _randn(tokens, hidden, dtype=dtype, gen=gen) * 3
    weight = _randn(hidden, dtype=dtype, gen=gen) * 0.1
    out = nan_like(x)
    torch.ops.qwen3next.rmsnorm(out, x, weight, 1e-6)
    assert_close(out, reference.rmsnorm(x.float(), weight.float(), 1e-6), **TOL[dtype])


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 15, 63, 300, 4097])
def test_rmsnorm_gated_strided_gate(dtype, tokens, gen):
    """The real layout: o [T, 32, 128] contiguous, z a slice of the wider [q|k|v|z] projection."""
    heads, dim = 32, 128
    x = _randn(tokens, heads, dim, dtype=dtype, gen=gen)
    projection = _randn(tokens, 12288, dtype=dtype, gen=gen) * 2
    z = projection[:, 8192:].view(tokens, heads, dim)
    weight = (1 + 0.1 * _randn(dim, dtype=torch.float32, gen=gen)).to(dtype)
    out = nan_like(x)
    torch.ops.qwen3next.rmsnorm_gated(out, x, z, weight, 1e-6)
    ref = reference.rmsnorm_gated(x.float(), z.float(), weight.float(), 1e-6)
    assert_close(out, ref, **TOL[dtype])


@cuda
@pytest.mark.parametrize("dim", [128, 64, 24, 7])
def test_rmsnorm_gated_row_lengths(dim, gen):
    x = _randn(37, 3, dim, dtype=torch.bfloat16, gen=gen)
    z = _randn(37, 3, dim, dtype=torch.bfloat16, gen=gen)
    weight = _randn(dim, dtype=torch.bfloat16, gen=gen)
    out = ops.rmsnorm_gated(x, z, weight, 1e-6)
    assert_close(out, reference.rmsnorm_gated(x.float(), z.float(), weight.float(), 1e-6), **TOL[torch.bfloat16])


@cuda
def test_ops_accept_any_layout(gen):
    """ops copy inputs whose last dimension is strided (the chunked delta rule's output is) once."""
    x = _randn(8, 32, 5, dtype=torch.bfloat16, gen=gen).transpose(0, 2)  # [5, 32, 8], last-dim stride 160
    z = _randn(5, 32, 8, dtype=torch.bfloat16, gen=gen)
    weight = _randn(8, dtype=torch.bfloat16, gen=gen)
    out = ops.rmsnorm_gated(x, z, weight, 1e-6)
    assert_close(out, reference.rmsnorm_gated(x.float(), z.float(), weight.float(), 1e-6), **TOL[torch.bfloat16])


@cuda
def test_in_place_aliasing(gen):
    """residual_out may be residual and out may be x: each element is read before it is written."""
    x = _randn(65, 2048, dtype=torch.bfloat16, gen=gen)
    residual = _randn(65, 2048, dtype=torch.bfloat16, gen=gen)
    weight = _randn(2048, dtype=torch.bfloat16, gen=gen) * 0.1
    expected_residual, expected_out = ops.rmsnorm_add(x, residual, weight, 1e-6)
    torch.ops.qwen3next.rmsnorm_add(residual, x, x, residual, weight, 1e-6)
    assert torch.equal(residual, expected_residual) and torch.equal(x, expected_out)


@cuda
def test_ops_pick_kernel_and_match_reference_in_bf16(gen):
    x = _randn(3, 5, 2048, dtype=torch.bfloat16, gen=gen)
    residual = _randn(3, 5, 2048, dtype=torch.bfloat16, gen=gen)
    weight = _randn(2048, dtype=torch.bfloat16, gen=gen) * 0.1
    new_residual, out = ops.rmsnorm_add(x, residual, weight, 1e-6)
    ref_residual, ref_out = reference.rmsnorm_add(x, residual, weight, 1e-6)
    assert torch.equal(new_residual, ref_residual)
    assert_close(out, ref_out, atol=1e-2, rtol=1e-2)  # both rounded to bf16: one ulp apart at most


@cuda
def test_bad_inputs_raise_clear_errors(gen):
    x = _randn(4, 64, dtype=torch.bfloat16, gen=gen)
    w = _randn(64, dtype=torch.bfloat16, gen=gen)
    out = torch.empty_like(x)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        torch.ops.qwen3next.rmsnorm(out, x, w[:32], 1e-6)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.qwen3next.rmsnorm(out, x, w.float(), 1e-6)
    with pytest.raises(RuntimeError, match="must be on cuda"):
        torch.ops.qwen3next.rmsnorm(out, x, w.cpu(), 1e-6)
    with pytest.raises(RuntimeError, match="must have shape"):
        torch.ops.qwen3next.rmsnorm(out[:2], x, w, 1e-6)
    with pytest.raises(RuntimeError, match="contiguous in its last dimension"):
        torch.ops.qwen3next.rmsnorm(out, x.t().contiguous().t(), w, 1e-6)
    tokens_swapped = _randn(2, 4, 64, dtype=torch.bfloat16, gen=gen).transpose(0, 1)  # [4, 2, 64], strides 64, 256
    with pytest.raises(RuntimeError, match="cannot be viewed as rows"):
        torch.ops.qwen3next.rmsnorm(torch.empty_like(tokens_swapped), tokens_swapped, w, 1e-6)
    with pytest.raises(RuntimeError, match="too long"):
        big = _randn(2, 20000, dtype=torch.bfloat16, gen=gen)
        torch.ops.qwen3next.rmsnorm(torch.empty_like(big), big, _randn(20000, dtype=torch.bfloat16, gen=gen), 1e-6)
    with pytest.raises(RuntimeError, match="eps must be positive"):
        torch.ops.qwen3next.rmsnorm(out, x, w, 0.0)


@cuda
def test_opcheck_and_compile(gen):
    x = _randn(9, 256, dtype=torch.bfloat16, gen=gen)
    r = _randn(9, 256, dtype=torch.bfloat16, gen=gen)
    w = _randn(256, dtype=torch.bfloat16, gen=gen)
    torch.library.opcheck(torch.ops.qwen3next.rmsnorm_add.default,
                          (torch.empty_like(x), torch.empty_like(x), x, r, w, 1e-6))
    torch.library.opcheck(torch.ops.qwen3next.rmsnorm_gated.default, (torch.empty_like(x), x, r, w, 1e-6))
    compiled = torch.compile(ops.rmsnorm_add, fullgraph=True)
    for got, want in zip(compiled(x, r, w, 1e-6), ops.rmsnorm_add(x, r, w, 1e-6)):
        assert torch.equal(got, want)


def test_cpu_falls_back_to_reference():
    gen = torch.Generator().manual_seed(0)
    x, r = torch.randn(5, 72, generator=gen), torch.randn(5, 72, generator=gen)
    w = torch.randn(72, generator=gen)
    for got, want in zip(ops.rmsnorm_add(x, r, w, 1e-6), reference.rmsnorm_add(x, r, w, 1e-6)):
        assert torch.equal(got, want)


@pytest.mark.skipif(not ops.HAS_KERNELS, reason="extension not built")
def test_fake_implementations_trace_on_meta():
    x = torch.empty(4, 2048, device="meta", dtype=torch.bfloat16)
    w = torch.empty(2048, device="meta", dtype=torch.bfloat16)
    torch.ops.qwen3next.rmsnorm_add(torch.empty_like(x), torch.empty_like(x), x, x, w, 1e-6)
    torch.ops.qwen3next.rmsnorm_gated(torch.empty_like(x), x, x, w, 1e-6)
    torch.ops.qwen3next.rmsnorm(torch.empty_like(x), x, w, 1e-6)
