"""moe_decode, moe_prefill: the sparse MoE block (router, top-10 of 512 experts, SwiGLU experts, gated shared
expert) at the published model's sizes, one layer's weights; moe_decode for a few tokens, moe_prefill for many.

ours: ops.moe. For moe_decode its few-token path (our router GEMM, routing, grouping, expert and combine kernels);
for moe_prefill its many-token path (pairs sorted by expert with torch ops, our grouped GEMMs, swiglu and combine
kernels). torch_grouped_mm: the same block in torch with the expert GEMMs by torch._grouped_mm over tokens sorted by
expert (the path transformers' grouped_mm experts take, combined by index_add), graph-capturable.
transformers_grouped_mm: transformers' own Qwen3NextSparseMoeBlock with its grouped_mm experts, holding the same
weights. All graph-replayed over input sets whose routings differ, so the selected experts are not in L2.

Bytes (moe_decode): the distinct experts the sets actually select (mean over the sets) x 3 x H x I x 2, the shared
expert, the router, the activations. FLOPs (moe_prefill): the routed experts' GEMMs, 2 x tokens x top-k x 3 x H x I
(so TFLOP/s is the expert GEMMs' rate as if the rest of the block took no time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.bench_e2e import transformers_model
from benchmarks.timing import set_count, time_graph
from qwen3next_cuda import ops, reference
from qwen3next_cuda.tools.make_checkpoint import preset_config

HIDDEN, EXPERTS, TOP_K, WIDTH, SHARED_WIDTH = 2048, 512, 10, 512, 512  # the published Qwen3NextConfig()
TOKENS = (1, 8, 32, 128)
PREFILL_TOKENS = (4096, 16384, 32768)


def random_weights(gen: torch.Generator) -> reference.MoEWeights:
    def randn(*shape, scale):
        return torch.empty(*shape, dtype=torch.bfloat16, device="cuda").normal_(std=scale, generator=gen)

    h, i, s = HIDDEN ** -0.5, WIDTH ** -0.5, SHARED_WIDTH ** -0.5
    return reference.MoEWeights(
        router=randn(EXPERTS, HIDDEN, scale=h), gate_up=randn(EXPERTS, 2 * WIDTH, HIDDEN, scale=h),
        down=randn(EXPERTS, HIDDEN, WIDTH, scale=i), shared_gate=randn(SHARED_WIDTH, HIDDEN, scale=h),
        shared_up=randn(SHARED_WIDTH, HIDDEN, scale=h), shared_down=randn(HIDDEN, SHARED_WIDTH, scale=s),
        shared_expert_gate=randn(1, HIDDEN, scale=h))


def torch_grouped_mm_moe(x: torch.Tensor, w: reference.MoEWeights) -> torch.Tensor:
    """The block with torch ops only, no host sync: pairs sorted by expert, group offsets from a scatter-add."""
    tokens = x.shape[0]
    weights, ids = reference.router_topk(F.linear(x, w.router), TOP_K, True)
    order = ids.flatten().argsort()
    pair_token = order // TOP_K
    counts = torch.zeros(EXPERTS, dtype=torch.int32, device=x.device).scatter_add_(
        0, ids.flatten(), torch.ones(tokens * TOP_K, dtype=torch.int32, device=x.device))
    offsets = counts.cumsum(0, dtype=torch.int32)
    gate_up = torch._grouped_mm(x[pair_token], w.gate_up.transpose(1, 2), offs=offsets)
    gate, up = reference.split_gate_up(gate_up, dim=-1)
    expert_out = torch._grouped_mm(F.silu(gate) * up, w.down.transpose(1, 2), offs=offsets)
    routed = torch.zeros(tokens, HIDDEN, dtype=torch.float32, device=x.device).index_add_(
        0, pair_token, expert_out.float() * weights.flatten()[order, None])
    shared = F.linear(F.silu(F.linear(x, w.shared_gate)) * F.linear(x, w.shared_up), w.shared_down)
    return (routed + torch.sigmoid(F.linear(x, w.shared_expert_gate)).float() * shared.float()).to(x.dtype)


def transformers_block(w: reference.MoEWeights):
    """transformers' Qwen3NextSparseMoeBlock (grouped_mm experts) holding ``w``: layer 0's block of a one-layer model
    at the published sizes (the same config object path as the e2e bench); None without transformers."""
    model = transformers_model(preset_config("slice", layers=1, mtp=False))
    if model is None:
        return None
    block = model.model.layers[0].mlp.requires_grad_(False)  # no autograd state in the captured graphs
    with torch.no_grad():
        gate_first = torch.cat(reference.split_gate_up(w.gate_up), dim=1)  # transformers' rows: gate, then up
        for param, value in ((block.gate.weight, w.router), (block.experts.gate_up_proj, gate_first),
                             (block.experts.down_proj, w.down), (block.shared_expert.gate_proj.weight, w.shared_gate),
                             (block.shared_expert.up_proj.weight, w.shared_up),
                             (block.shared_expert.down_proj.weight, w.shared_down),
                             (block.shared_expert_gate.weight, w.shared_expert_gate)):
            param.copy_(value)
    return block


def run(record) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    weights = random_weights(gen)
    hf_block = transformers_block(weights)
    expert_bytes = 3 * HIDDEN * WIDTH * 2
    fixed_bytes = 3 * HIDDEN * SHARED_WIDTH * 2 + EXPERTS * HIDDEN * 2 + HIDDEN * 2
    for tokens in TOKENS:
        count = set_count(tokens * TOP_K * expert_bytes)
        sets = [torch.empty(tokens, HIDDEN, dtype=torch.bfloat16, device="cuda").normal_(generator=gen)
                for _ in range(count)]
        selected = [reference.router_topk(F.linear(x, weights.router), TOP_K, True)[1].unique().numel()
                    for x in sets]
        nbytes = sum(selected) / count * expert_bytes + fixed_bytes + 2 * tokens * HIDDEN * 2
        params = {"tokens": tokens}
        record("moe_decode", "ours", params, time_graph(lambda x: ops.moe(x, weights, TOP_K, True), sets),
               nbytes=nbytes)
        if hasattr(torch, "_grouped_mm"):
            record("moe_decode", "torch_grouped_mm", params,
                   time_graph(lambda x: torch_grouped_mm_moe(x, weights), sets), nbytes=nbytes)
        if hf_block is not None:
            record("moe_decode", "transformers_grouped_mm", params, time_graph(lambda x: hf_block(x[None]), sets),
                   nbytes=nbytes)

    for tokens in PREFILL_TOKENS:
        probe = torch.empty(tokens, HIDDEN, dtype=torch.bfloat16, device="cuda")
        if not ops._moe_grouped_fits(probe, weights):  # else ops.moe would run the reference's loop over experts
            break
        sets = [torch.empty(tokens, HIDDEN, dtype=torch.bfloat16, device="cuda").normal_(generator=gen)
                for _ in range(2)]
        flops = 2 * tokens * TOP_K * 3 * HIDDEN * WIDTH
        params = {"tokens": tokens}
        record("moe_prefill", "ours", params, time_graph(lambda x: ops.moe(x, weights, TOP_K, True), sets,
                                                         replays=10), flops=flops)
        record("moe_prefill", "torch_grouped_mm", params,
               time_graph(lambda x: torch_grouped_mm_moe(x, weights), sets, replays=10), flops=flops)
        if hf_block is not None:
            record("moe_prefill", "transformers_grouped_mm", params,
                   time_graph(lambda x: hf_block(x[None]), sets, replays=10), flops=flops)
