// Sparse MoE block for few tokens (decode): every selected expert's weights are streamed from memory once for
// all the tokens routed to it. Five launches on one stream, no host sync:
//   router   (row tile x K split)  the router logits' partial sums x router^T over a quarter of K each (128 CTAs at
//                                  the model's sizes, where cuBLAS's GEMM for one token ran on 8)
//   route    (a CTA per 16 tokens) softmax (fp32) over the logits (the splits summed, rounded to bf16), top-k,
//                                  renormalise; the shared expert's sigmoid gate; the (token, expert) pairs grouped
//                                  by expert on the device
//   gate_up  (row tile x group)    h = silu(gate x) * up x for the group's tokens       -> hidden [pairs, Imax]
//   down     (row tile x group)    y = down h                                            -> expert_out [pairs, H]
//   combine  (token x 512 columns) out = sum_k w_k y_k + sigmoid(shared gate) y_shared  (fixed order: deterministic)
// The shared expert is the first group (expert id E, pairs [0, N)), holding every token. The five kernels are launched
// chained (common/chain.cuh); at up to 8 tokens the last three start on counters that the route and gate_up publish.
// The GEMMs run on tensor cores with the weights loaded straight from global memory into mma fragments (see
// moe_decode_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct MoeDecodeParams {
  // Inputs
  const void* x;  // [N, H] bf16 rows, contiguous
  const void* router;  // [E, H] bf16
  const void* gate_up;  // [E, 2I, H] bf16: gate and up rows interleaved in blocks of 32 (weights.py)
  const void* down;  // [E, H, I] bf16
  const void* shared_gate;  // [Is, H] bf16
  const void* shared_up;  // [Is, H] bf16
  const void* shared_down;  // [H, Is] bf16
  const void* shared_expert_gate;  // [H] bf16
  void* out;  // [N, H] bf16
  // Workspace (pairs P = N * (top_k + 1), groups G = min(E, N * top_k) + 1)
  float* router_partial;  // [kRouterSplits, N, E]: the router GEMM's K splits
  float* token_weight;  // [N, top_k + 1]: the renormalised route weights, then the shared gate
  int32_t* token_pair;  // [N, top_k + 1]: where each of the token's pairs sits in the grouped order
  int32_t* pair_expert;  // [N * top_k]: the expert of each routed pair, in token order (a route of several CTAs)
  int32_t* route_done;  // [1]: route CTAs finished (zeroed by the router pass)
  int32_t* route_ready;  // [1]: 1 once the route has published the groups, 2 the weights (zeroed by the router pass)
  int32_t* gate_up_done;  // [G]: each group's gate_up CTAs finished (zeroed by the router pass)
  int32_t* pair_token;  // [P]: the token of each grouped pair, written only where gate_up cannot know it (not for
                        // the shared expert's pairs [0, N), nor for one token's)
  int32_t* group_expert;  // [G]: the expert of each group (group 0: E, the shared expert)
  int32_t* group_start;  // [G + 1]: group g's pairs are [group_start[g], group_start[g + 1])
  int32_t* num_groups;  // [1]
  void* hidden;  // [P, Imax] bf16
  float* expert_out;  // [P, H]
  int tokens, hidden_size, experts, expert_width, shared_width, top_k, max_groups;
  bool norm_topk_prob;
};

void run_moe_decode(const MoeDecodeParams& params, cudaStream_t stream);

}  // namespace qwen3next
