"""The reference model vs transformers.Qwen3NextForCausalLM on tiny random configs with the real structure:
full-sequence logits, prefill + decode through the hybrid cache, and greedy generation. CPU, fp32."""

from __future__ import annotations

import types
import zlib

import pytest
import torch
from transformers import Qwen3NextConfig as HFConfig
from transformers import Qwen3NextForCausalLM

from qwen3next_cuda.config import Qwen3NextConfig
from qwen3next_cuda.reference import Qwen3NextReference
from qwen3next_cuda.weights import from_transformers
from utils import assert_close, calc_diff

COMMON = dict(vocab_size=397, hidden_size=72, linear_num_key_heads=2, linear_num_value_heads=4,
              linear_key_head_dim=16, linear_value_head_dim=24, linear_conv_kernel_dim=4,
              moe_intermediate_size=40, shared_expert_intermediate_size=56, partial_rotary_factor=0.25,
              rope_theta=10000.0, max_position_embeddings=256, rms_norm_eps=1e-6, eos_token_id=None, pad_token_id=0)

CONFIGS = {
    # 3 DeltaNet layers then one attention layer, as the published model repeats
    "interval4": dict(num_hidden_layers=4, full_attention_interval=4, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=32, num_experts=12, num_experts_per_tok=3),
    "interval2_tied_unnormalised_topk": dict(
        num_hidden_layers=4, full_attention_interval=2, num_attention_heads=6, num_key_value_heads=2, head_dim=48,
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, tie_word_embeddings=True),
    # YaRN over an original context shorter than the test sequences
    "interval3_yarn": dict(
        num_hidden_layers=3, full_attention_interval=3, num_attention_heads=4, num_key_value_heads=1, head_dim=64,
        num_experts=16, num_experts_per_tok=4,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
}

BATCH, SEQ_LEN = 2, 90
# prefill (two delta-rule chunks), single-token steps, a multi-token chunk on a non-empty cache, more steps
SCHEDULE = [70, 1, 1, 1, 1, 9, 1, 1, 1, 1, 1, 1, 1]
PROMPT_LEN, NEW_TOKENS = 12, 32


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights everywhere, norms, A_log and dt_bias included, scaled so activations stay O(1)."""
    for name, param in model.named_parameters():
        if name.endswith("A_log"):
            value = (torch.rand(param.shape, generator=gen) * 16 + 0.01).log()
        elif name.endswith("dt_bias"):
            value = torch.randn(param.shape, generator=gen)
        elif "norm" in name:  # zero-centred norms around 0, the gated DeltaNet norm around 1
            value = torch.randn(param.shape, generator=gen) * 0.3 + name.endswith("linear_attn.norm.weight")
        else:
            value = torch.randn(param.shape, generator=gen) * param.shape[-1] ** -0.5
        param.data.copy_(value)


@pytest.fixture(scope="module", params=list(CONFIGS))
def setup(request):
    """A random transformers model, the reference on the same weights, token ids and transformers' logits."""
    gen = torch.Generator().manual_seed(zlib.crc32(request.param.encode()))
    hf_config = HFConfig(**COMMON, **CONFIGS[request.param])
    hf_config._attn_implementation = "eager"
    hf_model = Qwen3NextForCausalLM(hf_config).eval()
    randomize_(hf_model, gen)
    config = Qwen3NextConfig.from_dict(hf_config.to_dict())
    assert config.layer_types == hf_config.layer_types and len(set(config.layer_types)) == 2
    assert config.rope.type == hf_config.rope_parameters["rope_type"] and config.rotary_dim == config.head_dim // 4
    model = Qwen3NextReference(config, from_transformers(hf_model.state_dict(), config))
    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), generator=gen)
    with torch.no_grad():
        hf_logits = hf_model(input_ids).logits
    return types.SimpleNamespace(hf_model=hf_model, model=model, input_ids=input_ids, hf_logits=hf_logits)


def test_full_sequence_logits(setup):
    logits = setup.model.forward(setup.input_ids)
    assert logits.dtype == torch.float32 and logits.shape == setup.hf_logits.shape
    assert setup.hf_logits.std() > 0.5, "degenerate logits make the comparison meaningless"
    assert_close(logits, setup.hf_logits, atol=1e-3, max_rel_err=1e-4)
    last = setup.model.forward(setup.input_ids, last_only=True)
    assert_close(last, logits[:, -1:], atol=1e-5, rtol=1e-5, name="last_only")


def test_prefill_then_decode(setup):
    model, input_ids = setup.model, setup.input_ids
    assert sum(SCHEDULE) == SEQ_LEN
    cache = model.new_cache(BATCH, SEQ_LEN)
    pieces, start = [], 0
    for num_tokens in SCHEDULE:
        pieces.append(model.forward(input_ids[:, start:start + num_tokens], cache))
        start += num_tokens
        assert cache.length == start
    logits = torch.cat(pieces, dim=1)
    assert_close(logits, model.forward(input_ids), atol=1e-3, max_rel_err=1e-4, name="vs full-sequence reference")
    assert_close(logits, setup.hf_logits, atol=1e-3, max_rel_err=1e-4, name="vs transformers")
    with pytest.raises(ValueError, match="exceed the cache size"):
        model.forward(input_ids[:, :1], cache)


def test_greedy_generation_matches_transformers(setup):
    prompt = setup.input_ids[:, :PROMPT_LEN]
    new_tokens = setup.model.generate(prompt, NEW_TOKENS)
    with torch.no_grad():
        hf_tokens = setup.hf_model.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)[:, PROMPT_LEN:]
    assert new_tokens.shape == (BATCH, NEW_TOKENS)
    assert all(len(row.unique()) > 4 for row in hf_tokens), f"degenerate generation: {hf_tokens.tolist()}"
    assert torch.equal(new_tokens, hf_tokens), f"ours {new_tokens.tolist()}\ntransformers {hf_tokens.tolist()}"


def test_bf16_runs_close_to_fp32(setup):
    """bf16 weights: the model computes in bf16 (fp32 delta-rule state) and stays near the fp32 logits; the
    random tiny models amplify rounding (transformers in bf16 is as far off), so only gross errors fail."""
    model = Qwen3NextReference(setup.model.config, {k: v.bfloat16() for k, v in setup.model.weights.items()})
    cache = model.new_cache(BATCH, SEQ_LEN)
    prefill = model.forward(setup.input_ids[:, :-1], cache)
    step = model.forward(setup.input_ids[:, -1:], cache)
    assert prefill.dtype == torch.float32 and cache.key[model.config.full_attention_layers[0]].dtype == torch.bfloat16
    assert calc_diff(torch.cat([prefill, step], dim=1), setup.hf_logits) < 0.1
