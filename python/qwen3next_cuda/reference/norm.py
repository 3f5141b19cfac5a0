"""RMSNorm variants: zero-centred (input, post-attention, final, q/k norms) and gated (DeltaNet output)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """fp32 ``x * rsqrt(mean(x^2) + eps)`` over the last dim."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero-centred RMSNorm ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` over the last dim.

    x: [..., D]; weight: [D] (stored around 0). Computed in fp32, returned in x.dtype.
    """
    return (_normalize(x, eps) * (1.0 + weight.float())).to(x.dtype)


def rmsnorm_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then zero-centred RMSNorm.

    x, residual: [..., D]; weight: [D]. Returns ``(new_residual, normed)``, both [..., D] in x.dtype:
    ``new_residual = x + residual`` rounded to x.dtype (transformers' residual add),
    ``normed = rmsnorm(new_residual, weight, eps)`` computed from that rounded value.
    """
    new_residual = (x.float() + residual.float()).to(x.dtype)
    return new_residual, rmsnorm(new_residual, weight, eps)


def rmsnorm_gated(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gated RMSNorm of the DeltaNet output: ``rmsnorm(x) * w * silu(z)`` over the last dim (plain weight).

    x, z: [..., D] (one head per row); weight: [D]. Computed in fp32 with roundings to x.dtype after the
    normalisation and after the weight (transformers' Qwen3NextRMSNormGated order; no-ops in fp32).
    """
    normed = _normalize(x, eps).to(x.dtype).float() * weight.float()
    return (normed.to(x.dtype).float() * F.silu(z.float())).to(x.dtype)
