"""The model's projections (no bias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x[..., K] weight[M, K]^T -> [..., M] in x's dtype."""
    return F.linear(x, weight)
