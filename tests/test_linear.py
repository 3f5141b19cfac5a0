"""The few-token projection kernel (decode_linear) vs the fp32 reference, and ops.linear's dispatch."""

import pytest
import torch
import torch.nn.functional as F

from qwen3next_cuda import ops
from tests.utils import assert_close, nan_like

cuda = pytest.mark.cuda
# (out_features, in_features): the model's projections (DeltaNet in_proj, out_proj / o_proj, attention q/k/v), odd
# row counts, the shortest K, K past one pass of the lanes' loads (4096), the longest K at 2 tokens
SHAPES = [(12352, 2048), (2048, 4096), (9216, 2048), (333, 8), (77, 264), (129, 4104), (50, 8192)]


def _inputs(tokens, rows, k, gen, x_pad=0):
    wide = torch.randn(tokens, k + x_pad, generator=gen, device="cuda").bfloat16()
    weight = (torch.randn(rows, k, generator=gen, device="cuda") / k**0.5).bfloat16()
    return wide[:, :k], weight


@pytest.fixture
def gen():
    return torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)


@cuda
@pytest.mark.parametrize("tokens", [1, 2])
@pytest.mark.parametrize("rows,k", SHAPES)
def test_decode_linear_matches_fp32(tokens, rows, k, gen):
    x, weight = _inputs(tokens, rows, k, gen, x_pad=24)  # x's rows strided
    out_wide = torch.full((tokens, rows + 8), float("nan"), device="cuda", dtype=torch.bfloat16)
    out = out_wide[:, :rows]  # strided output rows too
    torch.ops.qwen3next.decode_linear(out, x, weight)
    assert_close(out, x.float() @ weight.float().T, atol=1e-2, rtol=1e-2, name="out")
    assert torch.isnan(out_wide[:, rows:]).all(), "wrote past the output rows"
    again = nan_like(out)
    torch.ops.qwen3next.decode_linear(again, x, weight)
    assert torch.equal(again, out), "repeated runs differ"


@cuda
def test_linear_dispatch_and_graph(gen):
    """ops.linear: the kernel for 1 or 2 rows (any leading dims), cuBLAS past them; a captured call replays."""
    x, weight = _inputs(3, 2048, 4096, gen)
    assert_close(ops.linear(x[:2].unsqueeze(1), weight), F.linear(x[:2], weight).unsqueeze(1), atol=1e-2, rtol=1e-2,
                 name="2 tokens")
    assert torch.equal(ops.linear(x, weight), F.linear(x, weight)), "3 tokens should run cuBLAS"
    static_x = x[:1].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = ops.linear(static_x, weight)
    static_x.copy_(x[1:2])
    graph.replay()
    assert torch.equal(static_out, ops.linear(x[1:2], weight)), "the replay differs from an eager call"


@cuda
@pytest.mark.parametrize("case,message", [
    ("tokens", "at most 2 tokens"), ("k", "multiple of 8"), ("dtype", "must be bfloat16"),
    ("shape", "weight must be"), ("shared", "shared memory"), ("out", "out must have shape"),
])
def test_decode_linear_bad_input(case, message, gen):
    tokens, rows, k = {"tokens": (3, 64, 256), "k": (1, 64, 12), "shared": (2, 64, 8200)}.get(case, (2, 64, 256))
    x = torch.randn(tokens, k, device="cuda").bfloat16()
    weight = torch.randn(rows, k + (8 if case == "shape" else 0), device="cuda").bfloat16()
    out = torch.empty(tokens, rows + (1 if case == "out" else 0), device="cuda", dtype=torch.bfloat16)
    if case == "dtype":
        x = x.half()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.qwen3next.decode_linear(out, x, weight)


def test_linear_matches_torch_on_cpu():
    x, weight = torch.randn(3, 64), torch.randn(40, 64)
    assert torch.equal(ops.linear(x, weight), F.linear(x, weight))
