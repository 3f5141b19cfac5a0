"""Checkpoint tensors -> the in-memory layout our ops use.

In-memory layout (the keys of the dict every model consumes): the transformers-5 state-dict names
with two changes made once at load time:
  * ``model.layers.{i}.linear_attn.in_proj_qkvz.weight`` rows reordered from the published per-key-head
    groups ``[q_g | k_g | v_2g v_2g+1 | z_2g z_2g+1]`` into contiguous ``[q | k | v | z]``;
    ``in_proj_ba.weight`` from groups ``[b_2g b_2g+1 | a_2g a_2g+1]`` into ``[b | a]``.
  * experts stacked: ``model.layers.{i}.mlp.experts.gate_up_proj`` [E, 2I, H] (gate rows first) and
    ``model.layers.{i}.mlp.experts.down_proj`` [E, H, I].
Everything else (``mtp.*`` included) keeps its published name and shape.
"""

from __future__ import annotations

import torch

from .config import Qwen3NextConfig


def _split_grouped_rows(weight: torch.Tensor, groups: int, sizes: list[int]) -> list[torch.Tensor]:
    """View ``weight`` [groups * sum(sizes), ...] as per-group blocks and gather each block kind."""
    per_group = weight.reshape(groups, sum(sizes), *weight.shape[1:])
    parts = torch.split(per_group, sizes, dim=1)
    return [p.reshape(-1, *weight.shape[1:]) for p in parts]


def reorder_in_proj_qkvz(weight: torch.Tensor, config: Qwen3NextConfig) -> torch.Tensor:
    """Published grouped rows -> contiguous ``[q | k | v | z]`` rows."""
    hk, dk, dv = config.linear_num_key_heads, config.linear_key_head_dim, config.linear_value_head_dim
    ratio = config.linear_num_value_heads // hk
    expected = 2 * config.linear_key_dim + 2 * config.linear_value_dim
    if weight.shape[0] != expected:
        raise ValueError(f"in_proj_qkvz has {weight.shape[0]} rows, expected {expected}")
    return torch.cat(_split_grouped_rows(weight, hk, [dk, dk, ratio * dv, ratio * dv]), dim=0)


def reorder_in_proj_ba(weight: torch.Tensor, config: Qwen3NextConfig) -> torch.Tensor:
    """Published grouped rows -> contiguous ``[b | a]`` rows."""
    hk = config.linear_num_key_heads
    ratio = config.linear_num_value_heads // hk
    if weight.shape[0] != 2 * config.linear_num_value_heads:
        raise ValueError(f"in_proj_ba has {weight.shape[0]} rows, expected {2 * config.linear_num_value_heads}")
    return torch.cat(_split_grouped_rows(weight, hk, [ratio, ratio]), dim=0)
