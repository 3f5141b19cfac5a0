"""attn_decode: gated GQA attention of one new token per sequence over its cached context (16 query heads, 2 KV
heads, head dim 256, the published model's), sigmoid output gate included.

ours: ops.attention_varlen's decode kernels (split over the context, splits merged with the gate). sdpa:
torch's scaled_dot_product_attention (enable_gqa) on the cache slices of the batch, then the gate. Both
graph-replayed over input sets whose caches together exceed L2.

Bytes: the keys and values read (the context of every sequence), q, gate and out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.timing import set_count, time_graph
from qwen3next_cuda import ops

HEADS, KV_HEADS, DIM = 16, 2, 256
CASES = ((1, 4096), (1, 32768), (1, 131072), (32, 4096))  # (batch, context)


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
