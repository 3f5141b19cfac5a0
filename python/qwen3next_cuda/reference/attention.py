"""Causal grouped-query softmax attention over a KV cache."""

from __future__ import annotations

import torch

from .norm import rmsnorm
from .rope import apply_partial_rope


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


def append_kv(key_cache: torch.Tensor, value_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              slots: torch.Tensor, cu_seqlens: torch.Tensor, context_lens: torch.Tensor) -> None:
    """Writes the new keys and values of a varlen batch into a slot-addressed cache, at their positions.

    k, v: [N, Hkv, D], sequence s being rows ``cu_seqlens[s]:cu_seqlens[s + 1]`` (T_s tokens); key_cache,
    value_cache: [slots, max_len, Hkv, D], modified; slots: [S]; context_lens: [S], each sequence's length with
    the new tokens, which go to positions ``context_lens[s] - T_s ..``. A slot outside the cache (padding, -1) is
    skipped, as the kernels do.
    """
    bounds = cu_seqlens.tolist()
    for s, (slot, end) in enumerate(zip(slots.tolist(), context_lens.tolist())):
        if not 0 <= slot < key_cache.shape[0]:
            continue
        rows = slice(bounds[s], bounds[s + 1])
        key_cache[slot, end - (rows.stop - rows.start):end] = k[rows]
        value_cache[slot, end - (rows.stop - rows.start):end] = v[rows]


def attention_varlen(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slots: torch.Tensor,
                     cu_seqlens: torch.Tensor, context_lens: torch.Tensor, scale: float | None = None,
                     gate: torch.Tensor | None = None, max_seqlen: int | None = None,
                     max_context: int | None = None) -> torch.Tensor:
    """Causal GQA attention of a varlen batch over each sequence's cached keys and values.

    q: [N, Hq, D], sequence s being rows ``cu_seqlens[s]:cu_seqlens[s + 1]``, its newest tokens; key_cache,
    value_cache: [slots, max_len, Hkv, D], sequence s holding positions ``0 .. context_lens[s] - 1`` (the new
    tokens' included) in slot ``slots[s]``. ``gate`` ([N, Hq, D], optional): the output is multiplied by
    sigmoid(gate). ``max_seqlen`` and ``max_context`` are hints for the kernels (the longest sequence, the
    longest context), ignored here. Returns [N, Hq, D] in q.dtype (see :func:`attention`); the rows of a sequence
    whose slot is outside the cache (padding, -1) are zeros.
    """
    out = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    for s, (slot, end) in enumerate(zip(slots.tolist(), context_lens.tolist())):
        if not 0 <= slot < key_cache.shape[0]:
            continue
        rows = slice(bounds[s], bounds[s + 1])
        out[rows] = attention(q[None, rows], key_cache[slot:slot + 1, :end], value_cache[slot:slot + 1, :end],
                              scale)[0]
    if gate is not None:
        out = (out.float() * torch.sigmoid(gate.float())).to(q.dtype)
    return out


def attention_prepass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      q_norm_weight: torch.Tensor, k_norm_weight: torch.Tensor, eps: float, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slots: torch.Tensor, cu_seqlens: torch.Tensor,
                      context_lens: torch.Tensor) -> torch.Tensor:
    """Before the gated attention: q and k through their zero-centred RMSNorm and partial RoPE, then the new keys
    and values into the cache (see :func:`append_kv`).

    q: [N, Hq, D]; k, v: [N, Hkv, D]; cos, sin: [N, R] at each token's position. Returns q [N, Hq, D] in q.dtype.
    """
    q = apply_partial_rope(rmsnorm(q, q_norm_weight, eps), cos, sin)
    k = apply_partial_rope(rmsnorm(k, k_norm_weight, eps), cos, sin)
    append_kv(key_cache, value_cache, k, v, slots, cu_seqlens, context_lens)
    return q
