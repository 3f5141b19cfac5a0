"""e2e_decode, e2e_prefill: the model end to end at the published widths with 4 layers (3 DeltaNet + 1 attention),
random weights, against transformers' Qwen3NextForCausalLM on the same weights (bf16, flash-linear-attention
installed, experts_implementation="grouped_mm").

ours_graph / ours_eager: a decode step (one token per sequence) by CUDA-graph replay / eagerly, wall time per
step of a run of steps (host work included, as a user sees it); ours: a prefill of one prompt. hf_fla: the same
through transformers (decode from the cache its own prefill of the context left; only where that prefill fits).

floor_us: decode, the bytes a step reads (Qwen3NextCUDA.decode_step_bytes: the weights, the experts the batch
selects under uniform routing, states, keys and values) at the copy ceiling; prefill, the larger of the FLOPs
(2 x active parameters per token, lm_head for the last token, causal attention, the chunked delta rule) at the
matmul ceiling and the weights read once (at 4096 tokens every expert: the block is bound by its weights) at the
copy ceiling. transformers is asked for the last token's logits only (logits_to_keep=1), as ours returns.
ours_graph_extrapolated / ours_extrapolated (layers=48): the published depth from the same runs at 4 and 8 layers
(12 groups of 4 layers, embeddings and lm_head once; see `extrapolate`), bytes and FLOPs alike.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch

from qwen3next_cuda import Qwen3NextCUDA, graphs
from qwen3next_cuda.config import Qwen3NextConfig
from qwen3next_cuda.sampling import GenerationConfig
from qwen3next_cuda.tools.make_checkpoint import preset_config, random_weights
from qwen3next_cuda.weights import from_transformers

LAYERS = 4
DECODE = [(batch, context) for context in (1024, 32768) for batch in (1, 8, 32, 128)]
PEER_DECODE = {(1, 1024), (8, 1024), (32, 1024)}  # where transformers' own prefill of the context is practical
PREFILL = (4096, 32768)
STEPS = 20
DEPTH = 48  # the published model's layers, for the extrapolated rows


def transformers_model(config: Qwen3NextConfig):
    """transformers' model at ``config``, random bf16 weights drawn on the GPU, grouped_mm experts; or None."""
    try:
        from transformers import Qwen3NextConfig as HFConfig
        from transformers import Qwen3NextForCausalLM
    except ImportError:
        return None
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = Qwen3NextForCausalLM(HFConfig(**config.to_dict())).eval()
    finally:
        torch.set_default_dtype(default)
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("A_log"):
                param.uniform_(1.0, 16.0, generator=gen).log_()
            elif name.endswith("dt_bias"):
                param.normal_(1.0, 0.1, generator=gen)
            elif name.endswith("linear_attn.norm.weight"):
                param.normal_(1.0, 0.02, generator=gen)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    model.set_experts_implementation("grouped_mm")
    return model


def our_model(hf_model, config: Qwen3NextConfig) -> Qwen3NextCUDA:
    """Ours on the same weights (shared storage, but the regrouped in_proj rows)."""
    return Qwen3NextCUDA(config, from_transformers(hf_model.state_dict(), config), None,
                         GenerationConfig(eos_token_ids=()))


def wall_us(step, repeats: int) -> float:
    """Median wall time of ``step()`` in microseconds, the GPU drained before and after each."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def our_decode(model: Qwen3NextCUDA, batch: int, context: int, cuda_graph: bool) -> float:
    """Per-step wall time of STEPS decode steps after a (zeroed) context of ``context`` tokens."""
    cache = model.new_cache(batch, context + 2 * STEPS + 8)
    slots = [cache.allocate(cache.max_len) for _ in range(batch)]
    decode = (graphs.DecodeGraphs(model, cache, buckets=(batch,)).decode if cuda_graph
              else lambda tokens, step_slots: model.decode(tokens, step_slots, cache))
    tokens = torch.randint(0, model.config.vocab_size, (batch,), device="cuda")

    def run():
        for slot in slots:
            cache.lengths[slot] = context - 1
        for _ in range(STEPS):
            decode(tokens, slots)

    run()  # warm-up
    return wall_us(run, 3) / STEPS


def hf_decode(hf_model, batch: int, context: int) -> float:
    ids = torch.randint(0, hf_model.config.vocab_size, (batch, context), device="cuda")
    with torch.no_grad():
        cache = hf_model(ids, use_cache=True, logits_to_keep=1).past_key_values
        token = ids[:, -1:]
        step = functools.partial(hf_model, token, past_key_values=cache, use_cache=True)
        step()  # warm-up: the first decode step's lazy initialisation and kernel compilation
        times = [wall_us(step, 1) for _ in range(STEPS // 4)]
    return statistics.median(times)


def prefill_flops(config: Qwen3NextConfig, model: Qwen3NextCUDA, tokens: int) -> float:
    """2 x active parameters per token (the top-k experts of the stacks; no embeddings; lm_head for the last token
    only, the one whose logits a prefill returns), causal attention (QK^T and PV over half the pairs), the chunked
    delta rule (5.8 MFLOP per token and layer at the published heads, see benchmarks/NOTES.md)."""
    active = 0
    for name, weight in model._model.weights.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            continue
        share = config.num_experts_per_tok / config.num_experts if ".mlp.experts." in name else 1
        active += weight.numel() * share
    attention = 2 * 2 * tokens * tokens / 2 * config.num_attention_heads * config.head_dim
    delta_rule = 5.8e6 * tokens
    return (2 * active * tokens + 2 * model._model.lm_head.numel() + attention * len(config.full_attention_layers)
            + delta_rule * len(config.linear_attention_layers))


def our_prefill(model: Qwen3NextCUDA, prompt: list[int]) -> float:
    def step():
        cache = model.new_cache(1, len(prompt))
        model.prefill([prompt], [cache.allocate(len(prompt))], cache)

    step()  # warm-up
    return wall_us(step, 3)


def extrapolate(at_4: float, at_8: float) -> float:
    """The published depth from 4 and 8 layers: the 4-layer value plus 11 more groups of 4 layers (3 DeltaNet + 1
    attention) at what the second group cost. Embeddings, final norm and lm_head are counted once."""
    return at_4 + (DEPTH // LAYERS - 1) * (at_8 - at_4)


def run(record) -> None:
    config = preset_config("slice", layers=LAYERS, mtp=False)
    hf_model = transformers_model(config)
    model = (Qwen3NextCUDA(config, random_weights(config, device="cuda"), None, GenerationConfig(eos_token_ids=()))
             if hf_model is None else our_model(hf_model, config))
    prompts = {tokens: torch.randint(0, config.vocab_size, (tokens,)).tolist() for tokens in PREFILL}
    measured = {}  # (bench, params) -> (µs, bytes or FLOPs) of the 4-layer model, for the extrapolation

    for batch, context in DECODE:
        params = {"layers": LAYERS, "batch": batch, "context": context}
        nbytes = model.decode_step_bytes(batch, context)
        measured["e2e_decode", batch, context] = (our_decode(model, batch, context, True), nbytes)
        record("e2e_decode", "ours_graph", params, measured["e2e_decode", batch, context][0], nbytes=nbytes)
        record("e2e_decode", "ours_eager", params, our_decode(model, batch, context, False), nbytes=nbytes)
        if hf_model is not None and (batch, context) in PEER_DECODE:
            record("e2e_decode", "hf_fla", params, hf_decode(hf_model, batch, context), nbytes=nbytes)

    for tokens, prompt in prompts.items():
        params = {"layers": LAYERS, "tokens": tokens}
        flops = prefill_flops(config, model, tokens)
        nbytes = model.weight_bytes(tokens)
        measured["e2e_prefill", tokens] = (our_prefill(model, prompt), flops, nbytes)
        record("e2e_prefill", "ours", params, measured["e2e_prefill", tokens][0], flops=flops, nbytes=nbytes)
        if hf_model is not None:
            ids = torch.tensor([prompt], device="cuda")
            with torch.no_grad():  # the last token's logits only, as ours returns
                hf_prefill = functools.partial(hf_model, ids, logits_to_keep=1)
                hf_prefill()
                record("e2e_prefill", "hf_fla", params, wall_us(hf_prefill, 3), flops=flops, nbytes=nbytes)

    # The same at 8 layers (fresh random weights: the times do not depend on their values), alone on the GPU.
    model = hf_model = None
    torch.cuda.empty_cache()
    config = preset_config("slice", layers=2 * LAYERS, mtp=False)
    model = Qwen3NextCUDA(config, random_weights(config, device="cuda"), None, GenerationConfig(eos_token_ids=()))
    for batch, context in DECODE:
        at_4, bytes_4 = measured["e2e_decode", batch, context]
        nbytes = extrapolate(bytes_4, model.decode_step_bytes(batch, context))
        record("e2e_decode", "ours_graph_extrapolated", {"layers": DEPTH, "batch": batch, "context": context},
               extrapolate(at_4, our_decode(model, batch, context, True)), nbytes=nbytes)
    for tokens, prompt in prompts.items():
        at_4, flops_4, bytes_4 = measured["e2e_prefill", tokens]
        record("e2e_prefill", "ours_extrapolated", {"layers": DEPTH, "tokens": tokens},
               extrapolate(at_4, our_prefill(model, prompt)),
               flops=extrapolate(flops_4, prefill_flops(config, model, tokens)),
               nbytes=extrapolate(bytes_4, model.weight_bytes(tokens)))
