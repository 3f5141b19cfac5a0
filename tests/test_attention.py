"""Gated GQA attention kernels (GPU). Pre-pass: q/k norm, partial RoPE and the cache writes against the reference
(varlen, positions past 32K, padding writes nothing). Decode: the split-context kernel against the fp32 reference
for T = 1..8 tokens per sequence, odd batches, permuted slots with padding (its rows untouched), contexts from T
to past 32K, one split and many; CUDA-graph replay; bad inputs. Prefill: the flash kernel against the fp32
reference for varlen batches (1, 15, 63, 300, 4097 tokens), with cached prefixes (chunked prefill) and positions
past 32K, padding untouched."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda import ops, reference
from qwen3next_cuda.config import Qwen3NextConfig, RopeConfig
from utils import assert_close, nan_like

# default RoPE, and YaRN with an attention factor (cos / sin magnitudes above 1)
ROPES = pytest.mark.parametrize("rope", [RopeConfig(), RopeConfig(type="yarn", factor=4.0, attention_factor=1.3,
                                                                   original_max_position_embeddings=65536)],
                                ids=["default", "yarn"])
cuda = pytest.mark.cuda
HEADS, KV_HEADS, DIM = 16, 2, 256


def make_case(gen, contexts, tokens, max_len, num_slots):
    """q, gate [B*T, Hq, D] (gate a strided view, as the model's q_proj split gives it), caches, slots (a permutation
    with every third sequence padding), context lengths."""
    batch = len(contexts)
    qg = torch.randn(batch * tokens, HEADS, 2 * DIM, generator=gen).to("cuda", torch.bfloat16)
    q, gate = qg.chunk(2, dim=-1)
    key_cache = torch.randn(num_slots, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    value_cache = torch.randn(num_slots, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    slots = torch.randperm(num_slots, generator=gen)[:batch].int()
    slots[1::3] = -1
    return (q.contiguous(), gate, key_cache, value_cache, slots.cuda(),
            torch.tensor(contexts, dtype=torch.int32, device="cuda"))


def expected(q, gate, key_cache, value_cache, slots, context_lens, tokens):
    """The fp32 reference over the sequences with a slot; NaN rows for padding."""
    out = torch.full(q.shape, float("nan"), device="cuda")
    for b, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        rows = slice(b * tokens, (b + 1) * tokens)
        context = int(context_lens[b])
        cu = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        out[rows] = reference.attention_varlen(q[rows].float(), key_cache.float(), value_cache.float(),
                                               slots[b:b + 1], cu, context_lens[b:b + 1], gate=gate[rows].float())
        assert context >= tokens
    return out


@cuda
@pytest.mark.parametrize("tokens", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("contexts,max_len", [([8], 64), ([300, 15, 4097, 64, 1000], 4097), ([33000, 70], 33000)],
                         ids=["short", "mixed", "long"])
@pytest.mark.parametrize("max_context", [None, 1])  # splits for the whole cache, or a single split
def test_kernel_matches_reference(tokens, contexts, max_len, max_context):
    gen = torch.Generator().manual_seed(tokens + len(contexts) + (max_context or 0))
    q, gate, key_cache, value_cache, slots, context_lens = make_case(gen, contexts, tokens, max_len,
                                                                     num_slots=len(contexts) + 2)
    out = nan_like(q)
    torch.ops.qwen3next.attention_decode(out.view(q.shape[0], -1), q, gate, key_cache, value_cache, slots,
                                         context_lens, DIM ** -0.5, max_context or max_len)
    ref = expected(q, gate, key_cache, value_cache, slots, context_lens, tokens)
    padded = torch.isnan(ref)
    assert bool(torch.isnan(out[padded]).all()), "padding rows were written"
    assert_close(out[~padded].float(), ref[~padded], atol=2e-3, rtol=2e-2, max_rel_err=1e-2)


@cuda
def test_ops_path_and_graph_replay():
    gen = torch.Generator().manual_seed(9)
    q, gate, key_cache, value_cache, slots, context_lens = make_case(gen, [100, 2000, 37], 1, 2048, num_slots=4)
    slots = torch.randperm(4, generator=gen)[:3].int().cuda()  # three distinct slots, no padding
    cu = torch.arange(4, dtype=torch.int32, device="cuda")
    eager = ops.attention_varlen(q, key_cache, value_cache, slots, cu, context_lens, gate=gate, max_seqlen=1)
    ref = reference.attention_varlen(q.float(), key_cache.float(), value_cache.float(), slots, cu, context_lens,
                                     gate=gate.float())
    assert_close(eager.float(), ref, atol=2e-3, rtol=2e-2, max_rel_err=1e-2)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.attention_varlen(q, key_cache, value_cache, slots, cu, context_lens, gate=gate, max_seqlen=1)
    graph.replay()
    assert torch.equal(out, eager)


@cuda
def test_decode_fits_follows_the_kernels_shared_memory():
    """Two stages of 64 keys and values plus 16-row query tiles, rows of 264 bf16, at most 64 rows."""
    device = torch.cuda.current_device()
    optin = torch.cuda.get_device_properties(device).shared_memory_per_block_optin
    for rows, tiles in ((1, 1), (16, 1), (17, 2), (32, 2), (33, 4), (64, 4)):
        fits = (16 * tiles + 4 * 64) * (DIM + 8) * 2 <= optin
        assert torch.ops.qwen3next.attention_decode_fits(device, rows) == fits, rows
    assert not torch.ops.qwen3next.attention_decode_fits(device, 65)
    assert not torch.ops.qwen3next.attention_decode_fits(device, 0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        torch.ops.qwen3next.attention_decode_fits(torch.cuda.device_count(), 8)


@cuda
def test_decode_shapes_the_decode_kernel_cannot_take_go_to_the_prefill_kernel(monkeypatch):
    """As on an A100 with 5-8 tokens per sequence (its shared memory holds fewer than two decode stages with 64 query
    rows): ops.attention_varlen runs the prefill kernel over the cached contexts instead, with the same result."""
    tokens = 6
    gen = torch.Generator().manual_seed(11)
    q, gate, key_cache, value_cache, slots, context_lens = make_case(gen, [300, 15, 4097, 64], tokens, 4097,
                                                                     num_slots=6)
    cu = torch.arange(0, 4 * tokens + 1, tokens, dtype=torch.int32, device="cuda")
    monkeypatch.setattr(ops, "attention_decode_fits", lambda device, rows: False)
    out = ops.attention_varlen(q, key_cache, value_cache, slots, cu, context_lens, gate=gate, max_seqlen=tokens)
    ref = expected(q, gate, key_cache, value_cache, slots, context_lens, tokens)
    kept = ~torch.isnan(ref)
    assert_close(out[kept].float(), ref[kept], atol=2e-3, rtol=2e-2, max_rel_err=1e-2)


@cuda
def test_bad_inputs():
    gen = torch.Generator().manual_seed(1)
    q, gate, key_cache, value_cache, slots, context_lens = make_case(gen, [10, 20], 1, 32, num_slots=3)
    out = torch.empty(2, HEADS * DIM, dtype=torch.bfloat16, device="cuda")
    args = dict(out=out, q=q, gate=gate, key_cache=key_cache, value_cache=value_cache, slots=slots,
                context_lens=context_lens, scale=DIM ** -0.5, max_context=32)

    def call(**changes):
        a = {**args, **changes}
        torch.ops.qwen3next.attention_decode(a["out"], a["q"], a["gate"], a["key_cache"], a["value_cache"],
                                             a["slots"], a["context_lens"], a["scale"], a["max_context"])

    call()
    with pytest.raises(RuntimeError, match="bfloat16"):
        call(q=q.float())
    with pytest.raises(RuntimeError, match="value_cache"):
        call(value_cache=value_cache[:, :16].contiguous())
    with pytest.raises(RuntimeError, match="query rows"):
        call(q=q.repeat(5, 1, 1), gate=gate.repeat(5, 1, 1), out=out.repeat(5, 1), slots=slots[:1],
             context_lens=context_lens[:1])
    with pytest.raises(RuntimeError, match="context_lens"):
        call(context_lens=context_lens[:1])
    with pytest.raises(RuntimeError, match="max_context"):
        call(max_context=0)


@cuda
@ROPES
def test_prepass_matches_reference(rope):
    """Positions past 32K; with YaRN the cos / sin tables carry its attention factor (magnitudes above 1)."""
    gen = torch.Generator().manual_seed(11)
    lengths, starts, slots = [1, 5, 300, 2], [0, 40000 - 5, 17, 3], [2, 0, -1, 3]  # one past 32K, one padding
    tokens, max_len = sum(lengths), 40000
    qg = torch.randn(tokens, HEADS, 2 * DIM, generator=gen).to("cuda", torch.bfloat16)
    q = qg[..., :DIM]  # a strided view, as the model's q_proj split gives it
    k, v = (torch.randn(tokens, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16) for _ in range(2))
    q_norm, k_norm = ((torch.randn(DIM, generator=gen) * 0.1).to("cuda", torch.bfloat16) for _ in range(2))
    positions = torch.cat([torch.arange(s, s + n) for s, n in zip(starts, lengths)]).cuda()
    cos, sin = reference.rope_cos_sin(positions, Qwen3NextConfig(rope=rope))
    key_cache = torch.randn(4, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    value_cache = torch.randn(4, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    cu = torch.tensor([0, 1, 6, 306, 308], dtype=torch.int32, device="cuda")
    context = torch.tensor([s + n for s, n in zip(starts, lengths)], dtype=torch.int32, device="cuda")
    slot_tensor = torch.tensor(slots, dtype=torch.int32, device="cuda")
    ref_key, ref_value = key_cache.clone(), value_cache.clone()
    out_q = ops.attention_prepass(q, k, v, cos, sin, q_norm, k_norm, 1e-6, key_cache, value_cache, slot_tensor, cu,
                                  context)
    bounds = cu.tolist()
    for s, slot in enumerate(slots):  # the reference, one valid sequence at a time
        if slot < 0:
            continue
        rows = slice(bounds[s], bounds[s + 1])
        one = torch.tensor([0, lengths[s]], dtype=torch.int32, device="cuda")
        ref_q = reference.attention_prepass(q[rows], k[rows], v[rows], cos[rows], sin[rows], q_norm, k_norm, 1e-6,
                                            ref_key, ref_value, slot_tensor[s:s + 1], one, context[s:s + 1])
        assert_close(out_q[rows].float(), ref_q.float(), atol=1e-2, rtol=1e-2, name=f"q of sequence {s}")
    # every valid key and value lands where the reference puts it; padding writes nothing
    assert_close(key_cache.float(), ref_key.float(), atol=1e-2, rtol=1e-2, name="key cache")
    assert torch.equal(value_cache, ref_value)


@cuda
@pytest.mark.parametrize("kernel", ["portable", "sm90a"])
@pytest.mark.parametrize("lengths,prefixes", [([1, 15, 63, 300], [0, 0, 0, 0]), ([4097], [0]),
                                              ([65, 129, 7], [1000, 5, 33000])], ids=["varlen", "4097", "prefix"])
def test_prefill_matches_reference(lengths, prefixes, kernel):
    """Both prefill kernels: mma.sync ("portable": sm80, sm100, and sm90 on request) and wgmma (sm90, built with
    90a)."""
    if kernel == "sm90a" and not ops.sm90a_kernels(torch.device("cuda")):
        pytest.skip("no sm90 GPU or no 90a in this build")
    gen = torch.Generator().manual_seed(sum(lengths))
    batch, tokens = len(lengths), sum(lengths)
    max_len = max(p + n for p, n in zip(prefixes, lengths))
    qg = torch.randn(tokens, HEADS, 2 * DIM, generator=gen).to("cuda", torch.bfloat16)
    q, gate = qg.chunk(2, dim=-1)
    q = q.contiguous()
    key_cache = torch.randn(batch + 1, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    value_cache = torch.randn(batch + 1, max_len, KV_HEADS, DIM, generator=gen).to("cuda", torch.bfloat16)
    slots = torch.randperm(batch + 1, generator=gen)[:batch].int()
    slots[1::3] = -1  # padding (sequence 1: the prefix case's sequence past 32K is the third)
    slots = slots.cuda()
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    context = torch.tensor([p + n for p, n in zip(prefixes, lengths)], dtype=torch.int32, device="cuda")
    out = nan_like(q)
    torch.ops.qwen3next.attention_prefill(out.view(tokens, -1), q, gate, key_cache, value_cache, slots, cu, context,
                                          DIM ** -0.5, max(lengths), kernel == "portable")
    # A grid hint too small (one tile per head and sequence): CTAs stride over the rest, same result.
    strided = torch.empty_like(out)
    torch.ops.qwen3next.attention_prefill(strided.view(tokens, -1), q, gate, key_cache, value_cache, slots, cu,
                                          context, DIM ** -0.5, 1, kernel == "portable")
    valid = torch.repeat_interleave(slots.cpu() >= 0, torch.tensor(lengths)).cuda()
    assert torch.equal(strided[valid], out[valid]), "a small max_seqlen hint changed the result"
    bounds = cu.tolist()
    for s, slot in enumerate(slots.tolist()):
        rows = slice(bounds[s], bounds[s + 1])
        if slot < 0:
            assert bool(torch.isnan(out[rows]).all()), f"padding sequence {s} was written"
            continue
        one = torch.tensor([0, lengths[s]], dtype=torch.int32, device="cuda")
        ref = reference.attention_varlen(q[rows].float(), key_cache.float(), value_cache.float(), slots[s:s + 1], one,
                                         context[s:s + 1], gate=gate[rows].float())
        assert_close(out[rows].float(), ref, atol=2e-3, rtol=2e-2, max_rel_err=1e-2, name=f"sequence {s}")


@cuda
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@ROPES
def test_rope_tables_match_reference(rope, dtype):
    """The tables' kernel against the torch expression, positions up to the longest context (large angles)."""
    config = Qwen3NextConfig(rope=rope)
    inv_freq, scale = reference.rope_inv_freq(config)
    frequencies = (inv_freq.cuda(), scale)
    positions = torch.cat([torch.tensor([0, 1, 262143]), torch.randint(0, 262144, (37,))]).to("cuda", dtype)
    cos, sin = ops.rope_cos_sin(positions.view(5, 8), config, frequencies)
    ref_cos, ref_sin = reference.rope_cos_sin(positions.view(5, 8), config, frequencies)
    assert_close(cos, ref_cos, atol=1e-6, rtol=1e-6, name="cos")
    assert_close(sin, ref_sin, atol=1e-6, rtol=1e-6, name="sin")
