"""Partial rotary position embedding (rotate-half on the first ``rotary_dim`` dims), default or YaRN frequencies."""

from __future__ import annotations

import math

import torch

from ..config import Qwen3NextConfig


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_inv_freq(config: Qwen3NextConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [rotary_dim / 2] fp32 and the factor that scales cos and sin (1.0 unless YaRN).

    YaRN (arXiv 2309.00071) blends per dimension pair between the original frequency (fast-rotating pairs,
    more than ``beta_fast`` turns over the original context) and the frequency divided by ``factor`` (slow
    pairs, fewer than ``beta_slow`` turns), with a linear ramp between; cos and sin are scaled by
    ``attention_factor`` (default ``0.1 ln(factor) + 1``, or the DeepSeek ``mscale`` ratio).
    """
    rope, dim = config.rope, config.rotary_dim
    wavelength = rope.theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # 1 / inv_freq, wavelength / 2 pi
    if rope.type == "default":
        return 1.0 / wavelength, 1.0

    attention_factor = rope.attention_factor
    if attention_factor is None:
        if rope.mscale and rope.mscale_all_dim:
            attention_factor = _yarn_mscale(rope.factor, rope.mscale) / _yarn_mscale(rope.factor, rope.mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(rope.factor)
    original_context = rope.original_max_position_embeddings or config.max_position_embeddings

    def pair_index_of(turns: float) -> float:
        """The (fractional) dimension pair that turns ``turns`` times over the original context."""
        return dim * math.log(original_context / (turns * 2 * math.pi)) / (2 * math.log(rope.theta))

    low, high = pair_index_of(rope.beta_fast), pair_index_of(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    keep = 1 - ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    inv_freq = 1.0 / (rope.factor * wavelength) * (1 - keep) + 1.0 / wavelength * keep
    return inv_freq, float(attention_factor)


def rope_cos_sin(positions: torch.Tensor, config: Qwen3NextConfig,
                 frequencies: tuple[torch.Tensor, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer ``positions`` [...]: each [..., rotary_dim] fp32 (two copies of the
    half-size table, rotate-half layout), scaled by the YaRN attention factor when the config uses YaRN.
    ``frequencies``: :func:`rope_inv_freq`'s result with the table on the positions' device, computed once by the
    caller (no host work or copy per call, as a CUDA graph needs)."""
    inv_freq, scale = rope_inv_freq(config) if frequencies is None else frequencies
    angles = positions.float().unsqueeze(-1) * inv_freq.to(positions.device)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos() * scale, angles.sin() * scale


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the first R dims of each head; the remaining dims pass through.

    x: [B, T, heads, D]; cos, sin: [T, R] or [B, T, R] with R <= D even. Computed in fp32, returns x.dtype.
    """
    rotary_dim = cos.shape[-1]
    rot, rest = x.float().split([rotary_dim, x.shape[-1] - rotary_dim], dim=-1)
    first, second = rot.chunk(2, dim=-1)
    cos, sin = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)
    rotated = rot * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([rotated, rest], dim=-1).to(x.dtype)
