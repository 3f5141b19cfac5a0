"""Depthwise causal conv1d + SiLU over the DeltaNet ``[q | k | v]`` channels, full sequence and one decode step.

The conv state holds the last ``K - 1`` inputs of each channel, oldest first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor,
                  initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv over time, then SiLU.

    x: [B, T, C]; weight: [C, K]; initial_state: [B, C, K-1], the inputs before ``x`` (zeros if None).
    Returns ``y`` [B, T, C] in x.dtype and ``final_state`` [B, C, K-1] (the last K-1 inputs, taken from
    ``initial_state`` too when T < K-1) in the state's dtype (x.dtype when no state is given).
    """
    channels, width = weight.shape
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], channels, width - 1)
    history = torch.cat([initial_state.float(), x.transpose(1, 2).float()], dim=-1)  # [B, C, K-1+T]
    y = F.silu(F.conv1d(history, weight.float().unsqueeze(1), groups=channels))  # [B, C, T]
    final_state = history[..., history.shape[-1] - (width - 1):].to(initial_state.dtype)
    return y.transpose(1, 2).to(x.dtype), final_state


def causal_conv1d_update(x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor) -> torch.Tensor:
    """One decode step of the causal conv + SiLU; shifts ``x`` into ``conv_state`` in place.

    x: [B, C]; weight: [C, K]; conv_state: [B, C, K-1] (modified). Returns y: [B, C] in x.dtype.
    """
    window = torch.cat([conv_state.float(), x.float().unsqueeze(-1)], dim=-1)  # [B, C, K]
    y = F.silu((window * weight.float()).sum(-1))
    conv_state.copy_(window[..., 1:])
    return y.to(x.dtype)


def causal_conv1d_varlen(x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, slots: torch.Tensor,
                         cu_seqlens: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal conv + SiLU over a varlen batch of prompts (prefill) on the cache layout.

    x: [N, C], sequence s being rows ``cu_seqlens[s]:cu_seqlens[s + 1]``; weight: [C, K]; conv_state:
    [slots, K-1, C], each sequence's history (oldest first), updated in place to its last K-1 inputs;
    slots: [S] int, outside [0, slots) for padding (skipped: output rows and state left as they are).
    Writes and returns ``out`` [N, C] in x.dtype.
    """
    if out is None:
        out = x.new_zeros(x.shape[0], weight.shape[0])
    bounds = cu_seqlens.tolist()
    for seq, slot in enumerate(slots.tolist()):
        start, end = bounds[seq], bounds[seq + 1]
        if not 0 <= slot < conv_state.shape[0] or end <= start:
            continue
        y, final = causal_conv1d(x[start:end].unsqueeze(0), weight, conv_state[slot].t().unsqueeze(0))
        out[start:end] = y[0]
        conv_state[slot] = final[0].t()
    return out

