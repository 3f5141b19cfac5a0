"""The reference ops: internal consistency (chunked vs recurrent, full vs step-by-step conv) and agreement with
the corresponding transformers functions. CPU, fp32 unless a test is about low-precision rounding."""

from __future__ import annotations

import math
import types
import zlib

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen3NextConfig as HFConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.qwen3_next import modeling_qwen3_next as hf

from qwen3next_cuda import reference as ref
from qwen3next_cuda.config import Qwen3NextConfig
from utils import assert_close


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: fresh inputs per test and per parameter set, reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.name.encode()))


def randn(gen, *shape, scale=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def uniform(gen, *shape, low=0.0, high=1.0):
    return torch.rand(*shape, generator=gen) * (high - low) + low


# ---- gated delta rule --------------------------------------------------------------------------------------

def delta_rule_inputs(gen, batch, num_tokens, key_heads=2, value_heads=4, key_dim=32, value_dim=24):
    """Raw q, k [B,T,Hk,dk], v [B,T,Hv,dv], g, beta [B,T,Hv] from gdn_gating, and a non-zero state [B,Hv,dk,dv]."""
    q = randn(gen, batch, num_tokens, key_heads, key_dim)
    k = randn(gen, batch, num_tokens, key_heads, key_dim)
    v = randn(gen, batch, num_tokens, value_heads, value_dim)
    a, b = randn(gen, 2, batch, num_tokens, value_heads)
    A_log = uniform(gen, value_heads, low=0.005, high=0.5).log()  # gentle decay: the state stays relevant
    g, beta = ref.gdn_gating(a, b, A_log, randn(gen, value_heads))
    state = randn(gen, batch, value_heads, key_dim, value_dim, scale=0.5)
    return q, k, v, g, beta, state


@pytest.mark.parametrize("num_tokens", [1, 15, 63, 64, 65, 300])
def test_delta_rule_chunked_matches_recurrent(gen, num_tokens):
    q, k, v, g, beta, state = delta_rule_inputs(gen, 2, num_tokens)
    state_before = state.clone()
    out, final = ref.gated_delta_rule_chunked(q, k, v, g, beta, initial_state=state)
    out_ref, final_ref = ref.gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=state)
    assert torch.equal(state, state_before), "the initial state must not be modified"
    assert out.shape == v.shape and final.shape == state.shape and final.dtype == torch.float32
    assert_close(out, out_ref, atol=5e-6, rtol=1e-5, name="output")
    assert_close(final, final_ref, atol=5e-6, rtol=1e-5, name="final state")


@pytest.mark.parametrize("chunk_size", [1, 16, 37])
def test_delta_rule_chunk_size_does_not_matter(gen, chunk_size):
    q, k, v, g, beta, state = delta_rule_inputs(gen, 1, 100)
    out, final = ref.gated_delta_rule_chunked(q, k, v, g, beta, initial_state=state, chunk_size=chunk_size)
    out_ref, final_ref = ref.gated_delta_rule_chunked(q, k, v, g, beta, initial_state=state)
    assert_close(out, out_ref, atol=5e-6, rtol=1e-5, name="output")
    assert_close(final, final_ref, atol=5e-6, rtol=1e-5, name="final state")


def test_delta_rule_without_state_starts_from_zero(gen):
    q, k, v, g, beta, state = delta_rule_inputs(gen, 2, 20)
    for rule in (ref.gated_delta_rule_recurrent, ref.gated_delta_rule_chunked):
        out, final = rule(q, k, v, g, beta)
        out_zero, final_zero = rule(q, k, v, g, beta, initial_state=torch.zeros_like(state))
        assert torch.equal(out, out_zero) and torch.equal(final, final_zero)


@pytest.mark.parametrize("num_tokens", [1, 63, 130])
def test_delta_rule_matches_transformers(gen, num_tokens):
    q, k, v, g, beta, state = delta_rule_inputs(gen, 2, num_tokens)
    common = dict(initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    # key head i serves value heads ratio*i .. ratio*i + ratio-1; transformers before 5.2x wants them repeated
    ratio = v.shape[2] // q.shape[2]
    q_rep, k_rep = (t.repeat_interleave(ratio, dim=2) for t in (q, k))
    for ours, theirs in ((ref.gated_delta_rule_recurrent, hf.torch_recurrent_gated_delta_rule),
                         (ref.gated_delta_rule_chunked, hf.torch_chunk_gated_delta_rule)):
        out, final = ours(q, k, v, g, beta, initial_state=state)
        out_hf, final_hf = theirs(q_rep, k_rep, v, g, beta, **common)
        assert_close(out, out_hf, atol=5e-6, rtol=1e-5, name=f"{ours.__name__} output")
        assert_close(final, final_hf, atol=5e-6, rtol=1e-5, name=f"{ours.__name__} final state")


def test_gdn_gating(gen):
    a, b = randn(gen, 2, 3, 5, 4)
    A_log, dt_bias = randn(gen, 2, 4)
    g, beta = ref.gdn_gating(a, b, A_log, dt_bias)
    assert g.dtype == beta.dtype == torch.float32
    assert_close(g, -A_log.exp() * F.softplus(a + dt_bias), rtol=1e-6, name="g")
    assert_close(beta, torch.sigmoid(b), rtol=1e-6, name="beta")
    _, beta_bf16 = ref.gdn_gating(a, b.bfloat16(), A_log, dt_bias)
    assert beta_bf16.dtype == torch.float32 and torch.equal(beta_bf16, b.bfloat16().sigmoid().float())


# ---- causal conv1d -----------------------------------------------------------------------------------------

CHANNELS, WIDTH = 40, 4


def conv_inputs(gen, batch, num_tokens):
    """x [B,T,C], weight [C,K], a non-zero state [B,C,K-1]."""
    return (randn(gen, batch, num_tokens, CHANNELS), randn(gen, CHANNELS, WIDTH, scale=0.5),
            randn(gen, batch, CHANNELS, WIDTH - 1))


@pytest.mark.parametrize("num_tokens", [1, 2, 15, 63])
def test_conv_full_matches_steps(gen, num_tokens):
    x, weight, state = conv_inputs(gen, 2, num_tokens)
    y, final = ref.causal_conv1d(x, weight, state)
    step_state = state.clone()
    y_steps = torch.stack([ref.causal_conv1d_update(x[:, t], weight, step_state) for t in range(num_tokens)], dim=1)
    assert_close(y, y_steps, atol=1e-6, rtol=1e-5, name="output")
    assert torch.equal(final, step_state), "final state"
    assert torch.equal(final[..., -min(num_tokens, WIDTH - 1):], x.transpose(1, 2)[..., -(WIDTH - 1):])


@pytest.mark.parametrize("split", [1, 2, 3, 20])
def test_conv_split_across_calls(gen, split):
    x, weight, state = conv_inputs(gen, 2, 29)
    y, final = ref.causal_conv1d(x, weight, state)
    y_first, mid = ref.causal_conv1d(x[:, :split], weight, state)
    y_second, final_split = ref.causal_conv1d(x[:, split:], weight, mid)
    assert_close(torch.cat([y_first, y_second], dim=1), y, atol=1e-6, rtol=1e-5)
    assert torch.equal(final_split, final)


def test_conv_matches_transformers(gen):
    x, weight, state = conv_inputs(gen, 2, 15)
    y, final = ref.causal_conv1d(x, weight)
    y_hf = hf.causal_conv1d_fn(x.transpose(1, 2), weight, activation="silu").transpose(1, 2)
    assert_close(y, y_hf, atol=1e-6, rtol=1e-5, name="full sequence")
    assert torch.equal(final, x.transpose(1, 2)[..., -(WIDTH - 1):])

    ours_state, hf_state = state.clone(), state.clone()
    y_step = ref.causal_conv1d_update(x[:, 0], weight, ours_state)
    y_step_hf = hf.causal_conv1d_update(x[:, 0, :, None], hf_state, weight, activation="silu")[..., 0]
    assert_close(y_step, y_step_hf, atol=1e-6, rtol=1e-5, name="decode step")
    assert torch.equal(ours_state, hf_state)


# ---- norms -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_transformers(gen, dtype):
    x = randn(gen, 3, 7, 72, scale=3.0, dtype=dtype)
    norm = hf.Qwen3NextRMSNorm(72, eps=1e-6).to(dtype)
    norm.weight.data = randn(gen, 72, scale=0.3, dtype=dtype)
    out = ref.rmsnorm(x, norm.weight, 1e-6)
    assert out.dtype == dtype
    assert_close(out, norm(x).detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_gated_matches_transformers(gen, dtype):
    x, z = randn(gen, 2, 11, 4, 128, scale=2.0, dtype=dtype)
    norm = hf.Qwen3NextRMSNormGated(128, eps=1e-6).to(dtype)
    norm.weight.data = 1 + randn(gen, 128, scale=0.3, dtype=dtype)
    out = ref.rmsnorm_gated(x, z, norm.weight, 1e-6)
    assert out.dtype == dtype
    # bf16 too: the same roundings in the same order give the same bits
    assert_close(out, norm(x, z).detach(), atol=1e-6 if dtype == torch.float32 else 0.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_add(gen, dtype):
    x, residual = randn(gen, 2, 5, 9, 72, dtype=dtype)
    weight = randn(gen, 72, scale=0.3, dtype=dtype)
    new_residual, normed = ref.rmsnorm_add(x, residual, weight, 1e-6)
    assert new_residual.dtype == normed.dtype == dtype
    assert torch.equal(new_residual, x + residual), "residual add rounded to the input dtype"
    assert torch.equal(normed, ref.rmsnorm(x + residual, weight, 1e-6)), "norm of the rounded sum"


# ---- MoE ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_router_topk(gen, norm_topk_prob):
    logits = randn(gen, 37, 16, scale=2.0)
    weights, ids = ref.router_topk(logits, 4, norm_topk_prob)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int64 and ids.shape == (37, 4)
    probs = logits.double().softmax(-1)
    expected_ids = probs.argsort(dim=-1, descending=True)[:, :4]
    expected = probs.gather(-1, expected_ids)
    if norm_topk_prob:
        expected = expected / expected.sum(-1, keepdim=True)
    assert torch.equal(ids, expected_ids)
    assert_close(weights, expected, rtol=1e-6)


def hf_moe_block(gen, norm_topk_prob):
    """A transformers sparse MoE block with random weights (hidden 72, 12 experts of width 64, top 3)."""
    config = HFConfig(hidden_size=72, num_experts=12, num_experts_per_tok=3, moe_intermediate_size=64,
                      shared_expert_intermediate_size=56, norm_topk_prob=norm_topk_prob)
    block = hf.Qwen3NextSparseMoeBlock(config).eval()
    for param in block.parameters():
        param.data = randn(gen, *param.shape, scale=param.shape[-1] ** -0.5)
    prefix = "mlp."
    state = {prefix + k: ref.interleave_gate_up(v) if k == "experts.gate_up_proj" else v
             for k, v in block.state_dict().items()}  # the in-memory layout
    return block, ref.MoEWeights.from_state_dict(state, prefix)


@pytest.mark.parametrize("num_tokens", [1, 15, 63])
@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_moe_matches_transformers(gen, num_tokens, norm_topk_prob):
    block, weights = hf_moe_block(gen, norm_topk_prob)
    x = randn(gen, num_tokens, 72)
    with torch.no_grad():
        expected = block(x.unsqueeze(0))[0]
    assert_close(ref.moe(x, weights, 3, norm_topk_prob), expected, atol=1e-5, rtol=1e-4)


# ---- RoPE --------------------------------------------------------------------------------------------------

YARN_VARIANTS = {
    "default": None,
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    "yarn_explicit_attention_factor": {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.3,
                                       "original_max_position_embeddings": 2048, "beta_fast": 16.0},
    "yarn_mscale": {"rope_type": "yarn", "factor": 16.0, "mscale": 0.8, "mscale_all_dim": 0.6,
                    "original_max_position_embeddings": 1024},
    "yarn_untruncated": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192,
                         "truncate": False, "beta_slow": 2.0},
}


def rope_configs(scaling):
    """Our config and the transformers one, from the same published config dict."""
    raw = {"model_type": "qwen3_next", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 256, "rope_theta": 1e7,
           "partial_rotary_factor": 0.25, "max_position_embeddings": 262144, "rope_scaling": scaling}
    return Qwen3NextConfig.from_dict(raw), HFConfig(**{k: v for k, v in raw.items() if k != "model_type"})


@pytest.mark.parametrize("variant", list(YARN_VARIANTS))
def test_rope_matches_transformers(variant):
    config, hf_config = rope_configs(YARN_VARIANTS[variant])
    rope_type = hf_config.rope_parameters["rope_type"]
    assert rope_type == config.rope.type
    init = hf.Qwen3NextRotaryEmbedding.compute_default_rope_parameters if rope_type == "default" \
        else ROPE_INIT_FUNCTIONS[rope_type]
    inv_freq_hf, scale_hf = init(hf_config)
    inv_freq, scale = ref.rope_inv_freq(config)
    assert inv_freq.shape == (config.rotary_dim // 2,)
    assert torch.equal(inv_freq, inv_freq_hf) and math.isclose(scale, scale_hf, rel_tol=1e-12)

    positions = torch.tensor([0, 1, 2, 15, 63, 300, 4097, 100_000])
    cos, sin = ref.rope_cos_sin(positions, config)
    cos_hf, sin_hf = hf.Qwen3NextRotaryEmbedding(hf_config)(torch.zeros(1), positions[None])
    assert_close(cos, cos_hf[0], atol=1e-6, name="cos")
    assert_close(sin, sin_hf[0], atol=1e-6, name="sin")


def test_apply_partial_rope_matches_transformers(gen):
    config, hf_config = rope_configs(YARN_VARIANTS["yarn"])
    q, k = randn(gen, 2, 2, 9, 4, 256)
    cos, sin = ref.rope_cos_sin(torch.arange(100, 109), config)
    q_hf, k_hf = hf.apply_rotary_pos_emb(q, k, cos[None], sin[None], unsqueeze_dim=2)
    assert_close(ref.apply_partial_rope(q, cos, sin), q_hf, atol=1e-6, rtol=1e-6, name="q")
    assert_close(ref.apply_partial_rope(k, cos[None].expand(2, -1, -1), sin[None].expand(2, -1, -1)), k_hf,
                 atol=1e-6, rtol=1e-6, name="k with per-row tables")
    assert torch.equal(ref.apply_partial_rope(q, cos, sin)[..., config.rotary_dim:], q[..., config.rotary_dim:])


# ---- attention ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cached,num_tokens", [(0, 15), (0, 1), (37, 1), (20, 11)])
def test_attention_matches_transformers(gen, cached, num_tokens):
    total = cached + num_tokens
    q = randn(gen, 2, num_tokens, 6, 32)
    k, v = randn(gen, 2, 2, total, 2, 32)
    out = ref.attention(q, k, v)
    query_pos = torch.arange(cached, total)[:, None]
    mask = torch.zeros(num_tokens, total).masked_fill(torch.arange(total) > query_pos, float("-inf"))
    module = types.SimpleNamespace(num_key_value_groups=3, training=False)
    out_hf, _ = hf.eager_attention_forward(module, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           mask, scaling=32**-0.5)
    assert_close(out, out_hf, atol=1e-6, rtol=1e-5)


def test_varlen_attention_over_cache_slots_matches_dense(gen):
    """Sequences of 3, 1 and 7 new tokens after 5, 0 and 2 cached ones, in permuted slots of one cache."""
    new, cached, slots = [3, 1, 7], [5, 0, 2], [2, 0, 3]
    key_cache, value_cache = randn(gen, 2, 4, 16, 2, 32)
    q = randn(gen, sum(new), 6, 32)
    k, v = randn(gen, 2, sum(new), 2, 32)
    history_k, history_v = key_cache.clone(), value_cache.clone()
    cu_seqlens = torch.tensor([0, 3, 4, 11], dtype=torch.int32)
    context_lens = torch.tensor([c + n for c, n in zip(cached, new)], dtype=torch.int32)
    slot_tensor = torch.tensor(slots, dtype=torch.int32)
    ref.append_kv(key_cache, value_cache, k, v, slot_tensor, cu_seqlens, context_lens)
    out = ref.attention_varlen(q, key_cache, value_cache, slot_tensor, cu_seqlens, context_lens)
    for s, slot in enumerate(slots):
        rows = slice(int(cu_seqlens[s]), int(cu_seqlens[s + 1]))
        dense_k = torch.cat([history_k[slot, :cached[s]], k[rows]])
        dense_v = torch.cat([history_v[slot, :cached[s]], v[rows]])
        assert torch.equal(key_cache[slot, :context_lens[s]], dense_k)
        expected = ref.attention(q[None, rows], dense_k[None], dense_v[None])[0]
        assert_close(out[rows], expected, atol=1e-6, rtol=1e-6, name=f"sequence {s}")
    untouched = [slot for slot in range(4) if slot not in slots]
    assert torch.equal(key_cache[untouched], history_k[untouched])


def test_varlen_attention_skips_padding_slots(gen):
    """A sequence with slot -1 (a padded batch row) writes nothing into the cache and attends to nothing."""
    key_cache, value_cache = randn(gen, 2, 3, 8, 2, 32)
    history_k, history_v = key_cache.clone(), value_cache.clone()
    q = randn(gen, 3, 6, 32)
    k, v = randn(gen, 2, 3, 2, 32)
    slots = torch.tensor([-1, 1], dtype=torch.int32)
    cu_seqlens = torch.tensor([0, 2, 3], dtype=torch.int32)
    context_lens = torch.tensor([2, 4], dtype=torch.int32)
    ref.append_kv(key_cache, value_cache, k, v, slots, cu_seqlens, context_lens)
    out = ref.attention_varlen(q, key_cache, value_cache, slots, cu_seqlens, context_lens)
    for slot in (0, 2):  # the padding row's -1 would have been the last slot
        assert torch.equal(key_cache[slot], history_k[slot]) and torch.equal(value_cache[slot], history_v[slot])
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    assert torch.equal(key_cache[1, 3], k[2])
