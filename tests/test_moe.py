"""Sparse MoE block, the few-token kernels and the many-token path (GPU; the latter's logic on the CPU too):
against the reference on the same bf16 inputs (same router logits, experts in fp32) for the model's shapes and the
tiny preset's; random and skewed routing, norm_topk_prob both ways, NaN-poisoned output, repeated runs identical,
CUDA-graph replay, bad inputs."""

from __future__ import annotations

import functools

import pytest
import torch

from qwen3next_cuda import ops, reference
from utils import assert_close, nan_like

cuda = pytest.mark.cuda
MODEL = dict(hidden=2048, experts=512, top_k=10, width=512, shared_width=512)
TINY = dict(hidden=128, experts=16, top_k=4, width=64, shared_width=128)


@functools.lru_cache(maxsize=2)
def expert_weights(hidden, experts, width, shared_width, device="cuda") -> reference.MoEWeights:
    """Random bf16 weights with the checkpoint's scales, drawn once per shape on ``device`` (the model's are 3 GB);
    the router is drawn per test (see make_case)."""
    gen = torch.Generator(device=device).manual_seed(hidden + experts)

    def randn(*shape, scale):
        return torch.empty(*shape, dtype=torch.bfloat16, device=device).normal_(std=scale, generator=gen)

    return reference.MoEWeights(
        router=None, gate_up=randn(experts, 2 * width, hidden, scale=hidden ** -0.5),
        down=randn(experts, hidden, width, scale=width ** -0.5),
        shared_gate=randn(shared_width, hidden, scale=hidden ** -0.5),
        shared_up=randn(shared_width, hidden, scale=hidden ** -0.5),
        shared_down=randn(hidden, shared_width, scale=shared_width ** -0.5),
        shared_expert_gate=randn(1, hidden, scale=hidden ** -0.5))


def make_case(gen, shape, tokens, skewed=False, device="cuda"):
    """x [tokens, H] and the weights with a fresh router; ``skewed``: router rows 0 and 1 and every token point
    along one direction, so every token picks experts 0 and 1 first."""
    hidden = shape["hidden"]
    router = torch.randn(shape["experts"], hidden, generator=gen) * hidden ** -0.5
    x = torch.randn(tokens, hidden, generator=gen)
    if skewed:
        direction = torch.randn(hidden, generator=gen)
        direction /= direction.norm()
        router[:2] = 8 * direction
        x += 6 * direction
    weights = expert_weights(hidden, shape["experts"], shape["width"], shape["shared_width"], device)
    return x.to(device, torch.bfloat16), weights._replace(router=router.to(device, torch.bfloat16))


@cuda
@pytest.mark.parametrize("shape", [MODEL, TINY], ids=["model", "tiny"])
@pytest.mark.parametrize("tokens", [1, 3, 17, 64, 65, 256])
@pytest.mark.parametrize("skewed", [False, True], ids=["random", "skewed"])
@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_kernel_matches_reference(shape, tokens, skewed, norm_topk_prob):
    gen = torch.Generator().manual_seed(tokens * 4 + 2 * skewed + norm_topk_prob + shape["hidden"])
    x, weights = make_case(gen, shape, tokens, skewed)
    logits = torch.nn.functional.linear(x, weights.router)
    if skewed:  # the routing the test means: experts 0 and 1 for every token
        ids = reference.router_topk(logits, shape["top_k"], norm_topk_prob)[1]
        assert bool((ids[:, :2].sort(dim=1).values == torch.tensor([0, 1], device="cuda")).all())
    out = nan_like(x)
    torch.ops.qwen3next.moe_decode(out, x, weights.router, weights.gate_up, weights.down, weights.shared_gate,
                                   weights.shared_up, weights.shared_down, weights.shared_expert_gate, shape["top_k"],
                                   norm_topk_prob)
    toss_ups = routing_is_a_toss_up(x, weights, shape["top_k"])
    assert toss_ups.float().mean() <= 0.02
    assert_matches_reference(out, x, weights, shape["top_k"], norm_topk_prob, tokens=~toss_ups)
    assert torch.equal(ops.moe(x, weights, shape["top_k"], norm_topk_prob), out)  # repeated runs are identical


@cuda
@pytest.mark.parametrize("shape", [MODEL, TINY], ids=["model", "tiny"])
@pytest.mark.parametrize("tokens", [1, 3, 17])
@pytest.mark.parametrize("ties", ["all", "pairs"])
def test_tied_logits_go_to_the_lower_expert(shape, tokens, ties):
    """Equal logits (bf16 ties are common among 512 experts) are taken lower expert id first, the route's key order:
    a zero router ties every logit (the experts 0 .. k-1, equal weights), a router of repeated rows (row 2i + 1 =
    row 2i) ties each logit with its partner. Compared with the reference mixing the experts of a stable sort."""
    top_k = shape["top_k"]
    gen = torch.Generator().manual_seed(tokens + shape["hidden"] + len(ties))
    x, weights = make_case(gen, shape, tokens)
    router = weights.router.clone()
    if ties == "all":
        router.zero_()
    else:
        router[1::2] = router[::2]
    weights = weights._replace(router=router)
    logits = torch.nn.functional.linear(x, router).float()
    expert_ids = torch.sort(logits, dim=-1, descending=True, stable=True).indices[:, :top_k]
    route_weights = torch.softmax(logits, dim=-1).gather(-1, expert_ids)
    route_weights /= route_weights.sum(-1, keepdim=True)
    expected = reference.mix_experts(x, weights, route_weights, expert_ids).float()
    out = ops.moe(x, weights, top_k, True).float()
    kept = ~routing_is_a_toss_up(x, weights, top_k)
    assert kept.float().mean() >= 0.9
    rms = float(expected[kept].norm()) / expected[kept].numel() ** 0.5
    assert_close(out[kept], expected[kept], atol=8 * 2.5e-3 * rms, rtol=2e-2, max_rel_err=5e-3)


def assert_matches_reference(out, x, weights, top_k, norm_topk_prob, error=2.5e-3, tokens=None):
    """``error``: the path's expected bf16 error relative to the output's RMS (Gaussian). The few-token kernels
    round the hidden activation and the output only: about 0.25% (H100: relative norm error <= 0.29%); the
    many-token path's grouped GEMMs also round gate, up, silu(gate) * up scaled by its route weight and each
    expert's output: 0.48% (0.46% before the scaling moved there). Elements within 8 sigma, the norm within twice
    the error. ``tokens``: the rows compared (default all)."""
    expected = reference.moe(x, weights, top_k, norm_topk_prob).float()  # bf16 logits by cuBLAS, fp32 experts
    out = out.float()
    if tokens is not None:
        out, expected = out[tokens], expected[tokens]
    rms = float(expected.norm()) / expected.numel() ** 0.5
    assert_close(out, expected, atol=8 * error * rms, rtol=2e-2, max_rel_err=2 * error)


def routing_is_a_toss_up(x, weights, top_k):
    """Tokens that the kernels' own router GEMM may route otherwise than the reference's cuBLAS GEMM: both round
    fp32 sums to bf16 logits, summed in different orders, so a logit a hair (1e-3 of a bf16 step) from a rounding
    boundary may round either way, and that matters when the k-th and (k+1)-th logits are then one bf16 step apart
    or less. About one token in a thousand."""
    exact = (x.double() @ weights.router.double().T).topk(top_k + 1, dim=-1).values[:, top_k - 1:]  # k-th, k+1-th
    step = torch.finfo(torch.bfloat16).eps * torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(1e-30))))
    near_boundary = ((exact - exact.bfloat16().double()).abs() - step / 2).abs() < 1e-3 * step
    rounded = exact.bfloat16().double()
    return near_boundary.any(-1) & ((rounded[:, 0] - rounded[:, 1]).abs() <= step.max(-1).values)


def grouped_gemm_kernels():
    """The grouped GEMM kernels this GPU and build can run: "portable" (sm80+), "sm90a" (sm90, a build with 90a)."""
    if not (torch.cuda.is_available() and ops.HAS_KERNELS):
        return []
    return ["portable"] + ["sm90a"] * ops.sm90a_kernels(torch.device("cuda"))


GROUPED_GEMM_KERNELS = ["portable", "sm90a"]


@cuda
@pytest.mark.parametrize("shape", [MODEL, TINY], ids=["model", "tiny"])
@pytest.mark.parametrize("tokens", [257, 4097])
@pytest.mark.parametrize("skewed", [False, True], ids=["random", "skewed"])
@pytest.mark.parametrize("norm_topk_prob", [True, False])
@pytest.mark.parametrize("kernel", GROUPED_GEMM_KERNELS)
def test_many_tokens_match_reference(shape, tokens, skewed, norm_topk_prob, kernel, monkeypatch):
    """Past the few-token kernels (prefill): grouped GEMMs over the pairs sorted by expert, in chunks (a small
    chunk here, so that 4097 tokens cross several); sm90a: SiLU·up in the gate_up GEMM's epilogue, portable: the
    mma.sync GEMMs with moe_swiglu between them."""
    if kernel not in grouped_gemm_kernels():
        pytest.skip(f"this GPU or build has no {kernel} grouped GEMM")
    monkeypatch.setattr(ops, "MOE_GROUPED_CHUNK", 1500)
    monkeypatch.setattr(ops, "sm90a_kernels", lambda device: kernel == "sm90a")
    gen = torch.Generator().manual_seed(tokens * 4 + 2 * skewed + norm_topk_prob + shape["hidden"])
    x, weights = make_case(gen, shape, tokens, skewed)
    assert ops._moe_grouped_fits(x, weights)  # the path under test, not the reference's
    out = ops.moe(x, weights, shape["top_k"], norm_topk_prob)
    assert_matches_reference(out, x, weights, shape["top_k"], norm_topk_prob, error=4.8e-3)
    assert torch.equal(ops.moe(x, weights, shape["top_k"], norm_topk_prob), out)  # repeated runs are identical


def grouped_gemm(kernel, out, a, b, offsets):
    if kernel not in grouped_gemm_kernels():
        pytest.skip(f"this GPU or build has no {kernel} grouped GEMM")
    torch.ops.qwen3next.moe_grouped_gemm(out, a, b, offsets, kernel == "portable")


@cuda
@pytest.mark.parametrize("kernel", GROUPED_GEMM_KERNELS)
@pytest.mark.parametrize("n,k", [(1024, 2048), (2048, 512), (64, 128)], ids=["gate_up", "down", "small"])
def test_grouped_gemm_matches_per_group_products(kernel, n, k):
    """Groups of 0, 1, 3, 77, 128, 200 and 513 rows (empty ones, partial tiles) in a shuffled order."""
    gen = torch.Generator().manual_seed(n + k)
    sizes = torch.tensor([0, 77, 1, 0, 513, 3, 128, 200, 0])
    rows = int(sizes.sum())
    a = torch.randn(rows, k, generator=gen).to("cuda", torch.bfloat16)
    b = (torch.randn(len(sizes), n, k, generator=gen) * k ** -0.5).to("cuda", torch.bfloat16)
    offsets = sizes.cumsum(0).to("cuda", torch.int32)
    out = nan_like(torch.empty(rows, n, dtype=torch.bfloat16, device="cuda"))
    grouped_gemm(kernel, out, a, b, offsets)
    begin = 0
    for e, size in enumerate(sizes.tolist()):
        expected = a[begin:begin + size].double() @ b[e].double().T
        assert_close(out[begin:begin + size].double(), expected, atol=2e-2, rtol=1e-2, name=f"group {e}")
        begin += size
    again = torch.empty_like(out)
    grouped_gemm(kernel, again, a, b, offsets)
    assert torch.equal(again, out)


@cuda
@pytest.mark.parametrize("kernel", GROUPED_GEMM_KERNELS)
def test_grouped_gemm_bad_inputs(kernel):
    a = torch.zeros(10, 64, dtype=torch.bfloat16, device="cuda")
    b = torch.zeros(2, 32, 64, dtype=torch.bfloat16, device="cuda")
    offsets = torch.tensor([4, 10], dtype=torch.int32, device="cuda")
    out = torch.empty(10, 32, dtype=torch.bfloat16, device="cuda")
    grouped_gemm(kernel, out, a, b, offsets)
    with pytest.raises(RuntimeError, match="bfloat16"):
        grouped_gemm(kernel, out, a.float(), b, offsets)
    with pytest.raises(RuntimeError, match="int32"):
        grouped_gemm(kernel, out, a, b, offsets.long())
    with pytest.raises(RuntimeError, match="offsets"):
        grouped_gemm(kernel, out, a, b, offsets[:1])
    with pytest.raises(RuntimeError, match="out"):
        grouped_gemm(kernel, torch.empty(10, 16, dtype=torch.bfloat16, device="cuda"), a, b, offsets)
    with pytest.raises(RuntimeError, match="multiples of 8"):
        grouped_gemm(kernel, torch.empty(10, 12, dtype=torch.bfloat16, device="cuda"), a, b[:, :12].contiguous(),
                     offsets)


@cuda
@pytest.mark.parametrize("n,k", [(1024, 2048), (128, 64), (192, 64)], ids=["gate_up", "small", "partial_tile"])
def test_grouped_gemm_swiglu_matches_per_group_products(n, k):
    """The sm90a grouped GEMM with SiLU·up and the route weights in its epilogue, on gate/up rows interleaved by
    reference.interleave_gate_up; groups of 0, 1, 3, 77, 128, 200 and 513 rows."""
    if "sm90a" not in grouped_gemm_kernels():
        pytest.skip("no sm90 GPU or no 90a in this build")
    gen = torch.Generator().manual_seed(n + k + 1)
    sizes = torch.tensor([0, 77, 1, 0, 513, 3, 128, 200, 0])
    rows = int(sizes.sum())
    a = torch.randn(rows, k, generator=gen).to("cuda", torch.bfloat16)
    gate_up = (torch.randn(len(sizes), n, k, generator=gen) * k ** -0.5).to("cuda", torch.bfloat16)
    scale = torch.rand(rows, generator=gen).cuda()
    offsets = sizes.cumsum(0).to("cuda", torch.int32)
    out = nan_like(torch.empty(rows, n // 2, dtype=torch.bfloat16, device="cuda"))
    b = reference.interleave_gate_up(gate_up)
    torch.ops.qwen3next.moe_grouped_gemm_swiglu(out, a, b, offsets, scale)
    begin = 0
    for e, size in enumerate(sizes.tolist()):
        gate, up = (a[begin:begin + size].double() @ gate_up[e].double().T).chunk(2, dim=-1)
        expected = torch.nn.functional.silu(gate) * up * scale[begin:begin + size, None].double()
        assert_close(out[begin:begin + size].double(), expected, atol=2e-2, rtol=2e-2, name=f"group {e}")
        begin += size
    again = torch.empty_like(out)
    torch.ops.qwen3next.moe_grouped_gemm_swiglu(again, a, b, offsets, scale)
    assert torch.equal(again, out)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.qwen3next.moe_grouped_gemm_swiglu(out, a, b, offsets, scale.bfloat16())
    with pytest.raises(RuntimeError, match="out"):
        torch.ops.qwen3next.moe_grouped_gemm_swiglu(torch.empty(rows, n, dtype=torch.bfloat16, device="cuda"), a, b,
                                                    offsets, scale)
    with pytest.raises(RuntimeError, match="multiple of 64"):
        torch.ops.qwen3next.moe_grouped_gemm_swiglu(out[:, :16].contiguous(), a, b[:, :32].contiguous(), offsets,
                                                    scale)


def test_interleave_gate_up_round_trip():
    w = torch.randn(3, 128, 5)
    interleaved = reference.interleave_gate_up(w)
    gate, up = w.chunk(2, dim=1)
    assert torch.equal(interleaved[:, :32], gate[:, :32]) and torch.equal(interleaved[:, 32:64], up[:, :32])
    assert torch.equal(interleaved[:, 64:96], gate[:, 32:]) and torch.equal(interleaved[:, 96:], up[:, 32:])
    split = reference.split_gate_up(interleaved)
    assert torch.equal(split[0], gate) and torch.equal(split[1], up)
    x = torch.randn(7, 5)
    columns = reference.split_gate_up(x @ interleaved[1].T, dim=-1)  # a product's columns split the same way
    assert_close(columns[0], x @ gate[1].T, atol=1e-5, rtol=1e-5)
    assert_close(columns[1], x @ up[1].T, atol=1e-5, rtol=1e-5)
    narrow = torch.randn(2, 80, 4)  # a width that is no multiple of 32: one block, the gate rows first
    assert torch.equal(reference.interleave_gate_up(narrow), narrow)
    assert torch.equal(reference.split_gate_up(narrow)[1], narrow[:, 40:])
    with pytest.raises(ValueError, match="even"):
        reference.interleave_gate_up(torch.randn(2, 95, 4))


@cuda
@pytest.mark.parametrize("pairs,width", [(1, 32), (4097, 512), (33, 96)])
def test_swiglu_matches_torch(pairs, width):
    """act = silu(gate) * up * scale, in fp32, rounded once; gate and up columns interleaved as the weights' rows."""
    gen = torch.Generator().manual_seed(pairs + width)
    gate_up = (torch.randn(pairs, 2 * width, generator=gen) * 3).to("cuda", torch.bfloat16)
    scale = torch.rand(pairs, generator=gen).cuda()
    act = nan_like(torch.empty(pairs, width, dtype=torch.bfloat16, device="cuda"))
    torch.ops.qwen3next.moe_swiglu(act, gate_up, scale)
    gate, up = reference.split_gate_up(gate_up.float(), dim=-1)
    expected = torch.nn.functional.silu(gate) * up * scale[:, None]
    assert_close(act.float(), expected, atol=1e-2, rtol=1e-2)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.qwen3next.moe_swiglu(act, gate_up, scale.bfloat16())
    with pytest.raises(RuntimeError, match="act"):
        torch.ops.qwen3next.moe_swiglu(torch.empty(pairs, width + 32, dtype=torch.bfloat16, device="cuda"), gate_up,
                                       scale)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        torch.ops.qwen3next.moe_swiglu(act, gate_up[:, :48].contiguous(), scale)


@cuda
@pytest.mark.parametrize("tokens,top_k,hidden", [(1, 1, 8), (300, 10, 2048), (77, 16, 136)])
def test_combine_matches_torch(tokens, top_k, hidden):
    """out[n] = sum_j routed[pair_of[n, j]] + sigmoid(gate[n]) * shared[n], in fp32, rounded once."""
    gen = torch.Generator().manual_seed(tokens + top_k)
    routed = torch.randn(tokens * top_k + 5, hidden, generator=gen).to("cuda", torch.bfloat16)  # 5 rows unused
    pair_of = torch.randperm(tokens * top_k + 5, generator=gen)[:tokens * top_k].view(tokens, top_k).cuda()
    shared = torch.randn(tokens, hidden, generator=gen).to("cuda", torch.bfloat16)
    gate = torch.randn(tokens, 1, generator=gen).to("cuda", torch.bfloat16)
    out = nan_like(shared)
    torch.ops.qwen3next.moe_combine(out, routed, pair_of, shared, gate)
    expected = routed[pair_of].float().sum(1) + torch.sigmoid(gate.float()) * shared.float()
    assert_close(out.float(), expected, atol=2e-2, rtol=1e-2)
    args = dict(out=out, routed=routed, pair_of=pair_of, shared=shared, gate=gate)

    def call(**changes):
        a = {**args, **changes}
        torch.ops.qwen3next.moe_combine(a["out"], a["routed"], a["pair_of"], a["shared"], a["gate"])

    with pytest.raises(RuntimeError, match="int64"):
        call(pair_of=pair_of.int())
    with pytest.raises(RuntimeError, match="bfloat16"):
        call(shared=shared.float())
    with pytest.raises(RuntimeError, match="gate"):
        call(gate=torch.cat([gate, gate]))
    with pytest.raises(RuntimeError, match="top_k"):
        call(pair_of=pair_of.repeat(1, 17)[:, :17 * top_k].contiguous())


def _cpu_grouped_mm() -> bool:
    try:
        torch._grouped_mm(torch.ones(2, 16, dtype=torch.bfloat16), torch.ones(1, 16, 16, dtype=torch.bfloat16),
                          offs=torch.tensor([2], dtype=torch.int32))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


@pytest.mark.skipif(not _cpu_grouped_mm(), reason="this torch has no CPU grouped GEMM")
@pytest.mark.parametrize("tokens", [1, 300])
@pytest.mark.parametrize("skewed", [False, True], ids=["random", "skewed"])
@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_many_token_path_on_cpu(tokens, skewed, norm_topk_prob):
    """The many-token path's sorting, grouping and combine through torch's CPU grouped GEMM (a GPU runs the same
    code with its CUDA kernel), so that CI checks them without a GPU."""
    gen = torch.Generator().manual_seed(tokens + 2 * skewed + norm_topk_prob)
    x, weights = make_case(gen, TINY, tokens, skewed, device="cpu")
    out = ops._moe_grouped(x, weights, TINY["top_k"], norm_topk_prob)
    assert_matches_reference(out, x, weights, TINY["top_k"], norm_topk_prob, error=4.8e-3)
    assert torch.equal(ops._moe_grouped(x, weights, TINY["top_k"], norm_topk_prob), out)


@cuda
def test_cuda_graph_replay_matches_eager():
    gen = torch.Generator().manual_seed(3)
    x, weights = make_case(gen, MODEL, 8)
    eager = ops.moe(x, weights, MODEL["top_k"], True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.moe(x, weights, MODEL["top_k"], True)
    graph.replay()
    assert torch.equal(out, eager)


@cuda
def test_bad_inputs():
    gen = torch.Generator().manual_seed(1)
    x, weights = make_case(gen, TINY, 4)
    args = dict(out=torch.empty_like(x), x=x, **weights._asdict(), top_k=4, norm_topk_prob=True)

    def call(**changes):
        a = {**args, **changes}
        torch.ops.qwen3next.moe_decode(a["out"], a["x"], a["router"], a["gate_up"], a["down"],
                                       a["shared_gate"], a["shared_up"], a["shared_down"], a["shared_expert_gate"],
                                       a["top_k"], a["norm_topk_prob"])

    call()
    with pytest.raises(RuntimeError, match="bfloat16"):
        call(x=x.float())
    with pytest.raises(RuntimeError, match="top_k"):
        call(top_k=17)
    with pytest.raises(RuntimeError, match="router"):
        call(router=weights.router[:8].contiguous())
    with pytest.raises(RuntimeError, match="multiple of 16 experts"):
        call(router=weights.router[:8].contiguous(), gate_up=weights.gate_up[:8].contiguous(),
             down=weights.down[:8].contiguous())
    with pytest.raises(RuntimeError, match="down"):
        call(down=weights.down[:, :, :32].contiguous())
    with pytest.raises(RuntimeError, match="multiples of 32"):
        call(gate_up=weights.gate_up[:, :96].contiguous(), down=weights.down[:, :, :48].contiguous())
