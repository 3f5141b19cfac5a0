"""Gated GQA attention at the published model's heads (16 query heads, 2 KV heads, head dim 256), sigmoid output
gate included. All graph-replayed.

attn_decode: one new token per sequence over its cached context. ours: ops.attention_varlen's decode kernels
(split over the context, splits merged with the gate). sdpa: torch's scaled_dot_product_attention (enable_gqa)
on the cache slices of the batch, then the gate. Input sets whose caches together exceed L2. Bytes: the keys and
values read, q, gate and out.

attn_prefill: one sequence's causal attention. ours: the fused pre-pass (q/k norm, RoPE, keys and values into the
cache) and the flash prefill kernel with the gate (wgmma on sm90 with a 90a build); ours_portable: the same with the
mma.sync kernel that sm80 and sm100 run (on sm90 only). sdpa_cudnn, sdpa_flash: scaled_dot_product_attention (causal,
with that backend on the pre-passed q, k, v (K and V repeated per query head beforehand), then the gate (the
pre-pass and the repeat not counted for them).
FLOPs: 4 x T^2 / 2 x 256 x 16 (QK^T and PV over the causal half).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.timing import set_count, time_graph
from qwen3next_cuda import ops, reference
from qwen3next_cuda.config import Qwen3NextConfig

HEADS, KV_HEADS, DIM = 16, 2, 256
CASES = ((1, 4096), (1, 32768), (1, 131072), (32, 4096))  # (batch, context)
PREFILL_TOKENS = (4096, 32768)


def run(record) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for batch, context in CASES:
        kv_bytes = 2 * batch * context * KV_HEADS * DIM * 2
        nbytes = kv_bytes + 3 * batch * HEADS * DIM * 2
        count = set_count(nbytes)

        def randn(*shape):
            return torch.empty(*shape, dtype=torch.bfloat16, device="cuda").normal_(generator=gen)

        sets = []
        for _ in range(count):
            q, gate = randn(batch, HEADS, 2 * DIM).chunk(2, dim=-1)
            sets.append(dict(q=q.contiguous(), gate=gate, key=randn(batch, context, KV_HEADS, DIM),
                             value=randn(batch, context, KV_HEADS, DIM)))
        slots = torch.arange(batch, dtype=torch.int32, device="cuda")
        cu_seqlens = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
        context_lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
        params = {"batch": batch, "context": context}

        def ours(s):
            ops.attention_varlen(s["q"], s["key"], s["value"], slots, cu_seqlens, context_lens, gate=s["gate"],
                                 max_seqlen=1, max_context=context)

        record("attn_decode", "ours", params, time_graph(ours, sets), nbytes=nbytes)

        def sdpa(s):
            out = F.scaled_dot_product_attention(s["q"].unsqueeze(2), s["key"].transpose(1, 2),
                                                 s["value"].transpose(1, 2), enable_gqa=True)
            return out.squeeze(2) * torch.sigmoid(s["gate"])

        record("attn_decode", "sdpa", params, time_graph(sdpa, sets), nbytes=nbytes)

    for tokens in PREFILL_TOKENS:
        params, flops = {"batch": 1, "tokens": tokens}, 4 * tokens * tokens / 2 * DIM * HEADS

        def randn(*shape):
            return torch.empty(*shape, dtype=torch.bfloat16, device="cuda").normal_(generator=gen)

        q_raw, gate = randn(tokens, HEADS, 2 * DIM).chunk(2, dim=-1)
        k_raw, v = randn(tokens, KV_HEADS, DIM), randn(tokens, KV_HEADS, DIM)
        norms = randn(2, DIM) * 0.1
        cos, sin = reference.rope_cos_sin(torch.arange(tokens, device="cuda"), Qwen3NextConfig())
        key_cache, value_cache = randn(1, tokens, KV_HEADS, DIM), randn(1, tokens, KV_HEADS, DIM)
        slots = torch.zeros(1, dtype=torch.int32, device="cuda")
        cu_seqlens = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        context_lens = torch.tensor([tokens], dtype=torch.int32, device="cuda")

        def ours(_, portable=False):
            q = ops.attention_prepass(q_raw, k_raw, v, cos, sin, norms[0], norms[1], 1e-6, key_cache, value_cache,
                                      slots, cu_seqlens, context_lens)
            ops.attention_varlen(q, key_cache, value_cache, slots, cu_seqlens, context_lens, gate=gate,
                                 max_seqlen=tokens, portable=portable)

        record("attn_prefill", "ours", params, time_graph(ours, [None], replays=20), flops=flops)
        if ops.sm90a_kernels(torch.device("cuda")):  # the mma.sync kernel that sm80 and sm100 run
            record("attn_prefill", "ours_portable", params,
                   time_graph(lambda s: ours(s, portable=True), [None], replays=20), flops=flops)
        q = ops.attention_prepass(q_raw, k_raw, v, cos, sin, norms[0], norms[1], 1e-6, key_cache, value_cache, slots,
                                  cu_seqlens, context_lens).transpose(0, 1).unsqueeze(0)
        # K and V repeated per query head outside the timing (every backend takes plain multi-head inputs)
        k, v_heads = (c[0].transpose(0, 1).repeat_interleave(HEADS // KV_HEADS, dim=0)[None].contiguous()
                      for c in (key_cache, value_cache))
        for backend, impl in ((SDPBackend.CUDNN_ATTENTION, "sdpa_cudnn"), (SDPBackend.FLASH_ATTENTION, "sdpa_flash")):
            def sdpa(_):
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(q, k, v_heads, is_causal=True)
                return out[0].transpose(0, 1) * torch.sigmoid(gate)

            record("attn_prefill", impl, params, time_graph(sdpa, [None], replays=20), flops=flops)
