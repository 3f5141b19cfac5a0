"""Sparse MoE block: softmax top-k router, SwiGLU experts, sigmoid-gated shared expert."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class MoEWeights(NamedTuple):
    """The weights of one MoE block (E experts, hidden H, expert width I, shared expert width Is)."""

    router: torch.Tensor  # [E, H]
    gate_up: torch.Tensor  # [E, 2I, H], gate and up rows interleaved (interleave_gate_up)
    down: torch.Tensor  # [E, H, I]
    shared_gate: torch.Tensor  # [Is, H]
    shared_up: torch.Tensor  # [Is, H]
    shared_down: torch.Tensor  # [H, Is]
    shared_expert_gate: torch.Tensor  # [1, H]

    @classmethod
    def from_state_dict(cls, weights: dict[str, torch.Tensor], prefix: str) -> "MoEWeights":
        """Gather the tensors under ``prefix`` (e.g. ``"model.layers.3.mlp."``) of the in-memory weight dict."""
        return cls(
            router=weights[prefix + "gate.weight"],
            gate_up=weights[prefix + "experts.gate_up_proj"],
            down=weights[prefix + "experts.down_proj"],
            shared_gate=weights[prefix + "shared_expert.gate_proj.weight"],
            shared_up=weights[prefix + "shared_expert.up_proj.weight"],
            shared_down=weights[prefix + "shared_expert.down_proj.weight"],
            shared_expert_gate=weights[prefix + "shared_expert_gate.weight"],
        )


GATE_UP_BLOCK = 32  # the in-memory gate_up's rows: gate and up interleaved in blocks of this many


def gate_up_block(width: int) -> int:
    """Rows per block of the in-memory gate_up of experts ``width`` wide: GATE_UP_BLOCK where it divides the width
    (every width the kernels take), else the whole width (the gate rows first, as published)."""
    return GATE_UP_BLOCK if width % GATE_UP_BLOCK == 0 else width


def gate_up_halves(gate_up: torch.Tensor, dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the gate and the up blocks of an in-memory ``gate_up`` along ``dim`` (rows, or a product's columns),
    ``dim`` split into (blocks, rows per block): the one place that spells the layout out."""
    dim %= gate_up.dim()
    if gate_up.shape[dim] % 2:
        raise ValueError(f"gate_up: {gate_up.shape[dim]} rows, expected an even number (gate | up)")
    width = gate_up.shape[dim] // 2
    block = gate_up_block(width)
    gate, up = gate_up.unflatten(dim, (width // block, 2, block)).unbind(dim + 1)
    return gate, up


def interleave_gate_up(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2I, K] with the gate rows first (as published) -> the in-memory rows: gate and up interleaved in blocks
    of gate_up_block(I) ([g 0-31 | u 0-31 | g 32-63 | u 32-63 | ...]), so that a GEMM tile of the expert's output
    holds matching gate and up columns (the grouped GEMM's SiLU·up epilogue, the decode kernels' row tiles). A new
    tensor."""
    out = torch.empty_like(gate_up, memory_format=torch.contiguous_format)
    for half, published in zip(gate_up_halves(out), gate_up.chunk(2, dim=-2)):
        half.copy_(published.reshape(half.shape))
    return out


def split_gate_up(gate_up: torch.Tensor, dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate and up parts of an in-memory ``gate_up`` (or of a product's columns, ``dim=-1``), the size of ``dim``
    halved (copies where the blocks interleave)."""
    dim %= gate_up.dim()
    gate, up = gate_up_halves(gate_up, dim)
    return gate.flatten(dim, dim + 1), up.flatten(dim, dim + 1)


def router_topk(logits: torch.Tensor, top_k: int, norm_topk_prob: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (fp32) over experts, keep the ``top_k`` largest, renormalise them to sum 1 if ``norm_topk_prob``.

    logits: [N, E]. Returns weights [N, top_k] fp32 and expert ids [N, top_k] int64, largest weight first.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, ids


def _swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate x) * up x)`` in fp32. x: [N, H]; gate, up: [I, H]; down: [H, I]. Returns [N, H]."""
    return F.linear(F.silu(F.linear(x, gate.float())) * F.linear(x, up.float()), down.float())


def moe(x: torch.Tensor, weights: MoEWeights, top_k: int, norm_topk_prob: bool) -> torch.Tensor:
    """Sparse MoE block: ``sum_k w_k expert_{id_k}(x) + sigmoid(shared_expert_gate x) * shared_expert(x)``.

    x: [N, H]; weights: :class:`MoEWeights`. The router logits are computed in x.dtype (as transformers
    does, so low-precision runs pick the same experts), everything else in fp32. Returns [N, H] in x.dtype.
    """
    return mix_experts(x, weights, *router_topk(F.linear(x, weights.router), top_k, norm_topk_prob))


def mix_experts(x: torch.Tensor, weights: MoEWeights, route_weights: torch.Tensor,
                expert_ids: torch.Tensor) -> torch.Tensor:
    """:func:`moe` for a given routing: ``sum_k route_weights[:, k] expert_{expert_ids[:, k]}(x)`` plus the gated
    shared expert, in fp32. route_weights, expert_ids: [N, top_k]. Returns [N, H] in x.dtype."""
    x32 = x.float()
    out = torch.sigmoid(F.linear(x32, weights.shared_expert_gate.float())) * _swiglu(
        x32, weights.shared_gate, weights.shared_up, weights.shared_down)
    for expert in expert_ids.unique().tolist():
        token, slot = torch.nonzero(expert_ids == expert, as_tuple=True)
        gate, up = split_gate_up(weights.gate_up[expert])
        expert_out = _swiglu(x32[token], gate, up, weights.down[expert])
        out.index_add_(0, token, expert_out * route_weights[token, slot, None])
    return out.to(x.dtype)
