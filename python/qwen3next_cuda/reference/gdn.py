"""Gated DeltaNet: gating and the gated delta rule (step-by-step ground truth and the chunked WY/UT form).

Per value head, with the fp32 state ``S`` [dk, dv] (key-major) and each token ``t``::

    S = exp(g_t) * S
    S = S + k_t (beta_t (v_t - S^T k_t))^T
    o_t = S^T q_t

q and k arrive raw: they are L2-normalised here (eps 1e-6) and q is scaled by dk^-0.5. Value head ``h``
reads key head ``h // (Hv // Hk)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .conv import causal_conv1d, causal_conv1d_varlen
from .norm import rmsnorm_gated

L2NORM_EPS = 1e-6


def gdn_gating(a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor,
               dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decay and write strength per value head.

    a, b: [..., Hv]; A_log, dt_bias: [Hv]. Returns fp32 ``g = -exp(A_log) * softplus(a + dt_bias)`` and
    ``beta = sigmoid(b)`` (beta rounded to b.dtype first, as transformers does), both [..., Hv].
    """
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias.float())
    beta = torch.sigmoid(b.float()).to(b.dtype).float()
    return g, beta


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    """fp32 ``x * rsqrt(sum(x^2) + eps)`` over the last dim (the FLA / transformers form)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + L2NORM_EPS)


def _prepare(q, k, v, g, beta, initial_state):
    """Shared setup of both forms: fp32, L2-normalised q and k (q scaled by dk^-0.5), key heads repeated to
    value heads, heads before time.

    Returns q, k [B, Hv, T, dk]; v [B, Hv, T, dv]; g, beta [B, Hv, T]; state [B, Hv, dk, dv], all fp32.
    """
    batch, _, num_k_heads, dk = k.shape
    num_v_heads, dv = v.shape[-2:]
    group = num_v_heads // num_k_heads
    q = _l2norm(q) * dk**-0.5
    k = _l2norm(k)
    q, k = (x.repeat_interleave(group, dim=2).transpose(1, 2) for x in (q, k))
    v = v.float().transpose(1, 2)
    g, beta = (x.float().transpose(1, 2) for x in (g, beta))
    if initial_state is None:
        state = v.new_zeros(batch, num_v_heads, dk, dv)
    else:
        state = initial_state.float()
    return q, k, v, g, beta, state


def gated_delta_rule_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                               beta: torch.Tensor, initial_state: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule, one token at a time (the ground truth; also the decode step).

    q, k: [B, T, Hk, dk] raw; v: [B, T, Hv, dv]; g, beta: [B, T, Hv] fp32; initial_state: [B, Hv, dk, dv]
    (zeros if None; not modified). Returns o [B, T, Hv, dv] in v.dtype and final_state [B, Hv, dk, dv] fp32.
    """
    out_dtype = v.dtype
    q, k, v, g, beta, state = _prepare(q, k, v, g, beta, initial_state)
    out = torch.empty_like(v)
    for t in range(v.shape[2]):
        state = state * g[:, :, t, None, None].exp()
        k_t = k[:, :, t]
        delta = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhkv,bhk->bhv", state, k_t))
        state = state + k_t.unsqueeze(-1) * delta.unsqueeze(-2)
        out[:, :, t] = torch.einsum("bhkv,bhk->bhv", state, q[:, :, t])
    return out.transpose(1, 2).to(out_dtype), state


def gated_delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                             beta: torch.Tensor, initial_state: torch.Tensor | None = None,
                             chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule, ``chunk_size`` tokens at a time in the WY/UT form (the prefill algorithm).

    Same arguments and results as :func:`gated_delta_rule_recurrent` (equal to fp32 rounding).
    Within a chunk starting from state S0, with ``c`` the cumulative sum of g inside the chunk and
    ``D[i, j] = exp(c_i - c_j)`` for j <= i (0 above the diagonal), the written values
    ``u_i = beta_i (v_i - (exp(g_i) S_{i-1})^T k_i)`` solve the unit lower-triangular system
    ``(I + tril(diag(beta) (K K^T * D), -1)) U = diag(beta) (V - diag(exp(c)) K S0)``; then
    ``O = diag(exp(c)) Q S0 + (Q K^T * D) U`` and ``S_end = exp(c_end) S0 + (K * exp(c_end - c))^T U``.
    """
    out_dtype = v.dtype
    q, k, v, g, beta, state = _prepare(q, k, v, g, beta, initial_state)
    out = torch.empty_like(v)
    for start in range(0, v.shape[2], chunk_size):
        span = slice(start, start + chunk_size)
        q_c, k_c, v_c, beta_c = q[:, :, span], k[:, :, span], v[:, :, span], beta[:, :, span, None]
        cum = g[:, :, span].cumsum(-1)  # [B, H, L]
        size = cum.shape[-1]
        above = torch.ones(size, size, dtype=torch.bool, device=cum.device).triu(1)
        decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(above, float("-inf")).exp()  # D [B, H, L, L]
        system = ((beta_c * k_c) @ k_c.transpose(-1, -2) * decay).tril(-1)
        system = system + torch.eye(size, dtype=system.dtype, device=system.device)
        decay_from_start = cum.exp().unsqueeze(-1)  # exp(c) [B, H, L, 1]
        rhs = beta_c * (v_c - (decay_from_start * k_c) @ state)
        written = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)  # U [B, H, L, dv]
        out[:, :, span] = (decay_from_start * q_c) @ state + (q_c @ k_c.transpose(-1, -2) * decay) @ written
        end = cum[..., -1:]
        state = end.exp().unsqueeze(-1) * state + ((end - cum).exp().unsqueeze(-1) * k_c).transpose(-1, -2) @ written
    return out.transpose(1, 2).to(out_dtype), state


def _mixer_after_conv(qkv: torch.Tensor, z: torch.Tensor, ba: torch.Tensor, state: torch.Tensor,
                      A_log: torch.Tensor, dt_bias: torch.Tensor, norm_weight: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gating, the delta rule from ``state`` and the gated norm of B sequences of T tokens after the conv.

    qkv: [B, T, C] conv outputs ``[q | k | v]``; z: [B, T, Hv*dv]; ba: [B, T, 2*Hv]; state: [B, Hv, dv, dk]
    (value-major, the cache layout). Returns the normed output [B, T, Hv*dv] (fp32 math, roundings of the
    unfused model) and the final state [B, Hv, dv, dk] fp32.
    """
    num_v_heads, dv, dk = state.shape[1:]
    key_dim = (qkv.shape[-1] - num_v_heads * dv) // 2
    q, k, v = qkv.split([key_dim, key_dim, num_v_heads * dv], dim=-1)
    q, k = (t.unflatten(-1, (-1, dk)) for t in (q, k))
    v, z = (t.unflatten(-1, (num_v_heads, dv)) for t in (v, z))
    b, a = ba.chunk(2, dim=-1)
    g, beta = gdn_gating(a, b, A_log, dt_bias)
    o, final = gated_delta_rule_recurrent(q, k, v, g, beta, state.transpose(-1, -2))
    return rmsnorm_gated(o, z, norm_weight, eps).flatten(-2), final.transpose(-1, -2)


def gdn_decode(qkvz: torch.Tensor, ba: torch.Tensor, conv_state: torch.Tensor, recurrent_state: torch.Tensor,
               slots: torch.Tensor, conv_weight: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
               norm_weight: torch.Tensor, eps: float, out: torch.Tensor | None = None,
               update_state: bool = True) -> torch.Tensor:
    """The Gated DeltaNet mixer between in_proj and out_proj for T (1..8) new tokens per sequence, on
    the cache layouts of ``qwen3next_cuda.cache`` (updated in place when ``update_state``).

    qkvz: [B, T, 2*Hk*dk + 2*Hv*dv] in_proj output, rows in ``[q | k | v | z]`` order; ba: [B, T, 2*Hv]
    ``[b | a]``; conv_state: [slots, K-1, C] (C = 2*Hk*dk + Hv*dv channels contiguous, oldest input first);
    recurrent_state: [slots, Hv, dv, dk] fp32 or bf16 (value-major: S^T; fp32 math, a bf16 state rounded
    once per call when stored); slots: [B] cache slot of each sequence, -1 for padding rows (skipped: their output rows and states are left as they are); conv_weight: [C, K];
    A_log, dt_bias: [Hv]; norm_weight: [dv]. Writes and returns ``out`` [B, T, Hv*dv] (qkvz.dtype).
    """
    batch, num_tokens, _ = qkvz.shape
    channels = conv_weight.shape[0]
    if out is None:
        out = qkvz.new_zeros(batch, num_tokens, qkvz.shape[-1] - channels)
    rows = (slots >= 0).nonzero().flatten()
    if rows.numel() == 0:
        return out
    index = slots[rows].long()
    qkv, z = qkvz[rows].split([channels, qkvz.shape[-1] - channels], dim=-1)
    qkv, conv_final = causal_conv1d(qkv, conv_weight, conv_state[index].transpose(1, 2))
    normed, final = _mixer_after_conv(qkv, z, ba[rows], recurrent_state[index], A_log, dt_bias, norm_weight, eps)
    out[rows] = normed.to(out.dtype)
    if update_state:
        conv_state[index] = conv_final.transpose(1, 2).to(conv_state.dtype)
        recurrent_state[index] = final.to(recurrent_state.dtype)
    return out


def gdn_prefill(qkvz: torch.Tensor, ba: torch.Tensor, conv_state: torch.Tensor, recurrent_state: torch.Tensor,
                slots: torch.Tensor, cu_seqlens: torch.Tensor, conv_weight: torch.Tensor, A_log: torch.Tensor,
                dt_bias: torch.Tensor, norm_weight: torch.Tensor, eps: float, out: torch.Tensor | None = None,
                max_seqlen: int | None = None) -> torch.Tensor:
    """The Gated DeltaNet mixer between in_proj and out_proj for a varlen batch of prompts (prefill), on the
    cache layouts of ``qwen3next_cuda.cache``; both states of each sequence's slot are read and updated.

    qkvz: [N, 2*Hk*dk + 2*Hv*dv] in_proj output rows in ``[q | k | v | z]`` order, sequence s being rows
    ``cu_seqlens[s]:cu_seqlens[s + 1]``; ba: [N, 2*Hv] ``[b | a]``; conv_state: [slots, K-1, C];
    recurrent_state: [slots, Hv, dv, dk] fp32 (value-major); slots: [S], outside [0, slots) for padding
    (skipped: output rows and states left as they are); cu_seqlens: [S + 1] int; conv_weight: [C, K];
    A_log, dt_bias: [Hv]; norm_weight: [dv]; max_seqlen: unused here (the kernel's grid hint).
    Writes and returns ``out`` [N, Hv*dv] (qkvz.dtype). The delta rule runs token by token in fp32.
    """
    channels = conv_weight.shape[0]
    if out is None:
        out = qkvz.new_zeros(qkvz.shape[0], qkvz.shape[-1] - channels)
    qkv = causal_conv1d_varlen(qkvz[:, :channels], conv_weight, conv_state, slots, cu_seqlens)
    bounds = cu_seqlens.tolist()
    for seq, slot in enumerate(slots.tolist()):
        start, end = bounds[seq], bounds[seq + 1]
        if not 0 <= slot < recurrent_state.shape[0] or end <= start:
            continue
        normed, final = _mixer_after_conv(qkv[None, start:end], qkvz[None, start:end, channels:], ba[None, start:end],
                                          recurrent_state[slot, None], A_log, dt_bias, norm_weight, eps)
        out[start:end] = normed[0].to(out.dtype)
        recurrent_state[slot] = final[0].to(recurrent_state.dtype)
    return out
