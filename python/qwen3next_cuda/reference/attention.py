"""Causal grouped-query softmax attention over a KV cache."""

from __future__ import annotations

import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal GQA attention of the last T positions over all S cached positions.

    q: [B, T, Hq, D], the queries of positions S-T .. S-1; k, v: [B, S, Hkv, D], positions 0 .. S-1 (the new
    tokens' keys and values included). Query head h reads KV head h // (Hq // Hkv). ``scale`` defaults to
    D^-0.5. Computed in fp32, returns [B, T, Hq, D] in q.dtype.
    """
    num_tokens, num_heads, head_dim = q.shape[1:]
    cached = k.shape[1]
    group = num_heads // k.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    k, v = (x.float().repeat_interleave(group, dim=2).transpose(1, 2) for x in (k, v))  # [B, Hq, S, D]
    scores = (q.float().transpose(1, 2) @ k.transpose(-1, -2)) * scale  # [B, Hq, T, S]
    query_pos = torch.arange(cached - num_tokens, cached, device=q.device)
    future = torch.arange(cached, device=q.device) > query_pos.unsqueeze(-1)  # [T, S]
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return (probs @ v).transpose(1, 2).to(q.dtype)
