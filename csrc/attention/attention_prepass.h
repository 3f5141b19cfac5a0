// Pre-pass of the gated attention, one launch over a varlen batch: q/k zero-centred RMSNorm, partial RoPE (rotate
// half on the first R dims, at each token's position) and the new keys and values written into each sequence's
// cache slot; q goes to a contiguous buffer for the attention kernels. Head dim 256, a warp per (token, head).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct AttentionPrepassParams {
  const void* q;  // [N, Hq, 256] bf16 (strided rows and heads: a view of q_proj's [q | gate] heads)
  int64_t q_row_stride, q_head_stride;
  const void* k;  // [N, Hkv, 256] bf16 (strided)
  int64_t k_row_stride, k_head_stride;
  const void* v;  // [N, Hkv, 256] bf16 (strided)
  int64_t v_row_stride, v_head_stride;
  const float* cos;  // [N, R]: cos and sin at each token's position (rotate-half layout)
  const float* sin;
  const void* q_norm_weight;  // [256] bf16, zero-centred (the norm multiplies by 1 + w)
  const void* k_norm_weight;
  const int32_t* slots;  // [S]; outside [0, num_slots): padding (its keys and values are not written)
  const int32_t* cu_seqlens;  // [S + 1]
  const int32_t* context_lens;  // [S]: each sequence's length with its new tokens
  void* q_out;  // [N, Hq, 256] bf16, contiguous
  void* key_cache;  // [slots, max_len, Hkv, 256] bf16
  void* value_cache;
  float eps;
  int tokens, query_heads, kv_heads, rotary_dim, seqs, num_slots, max_len;
};

void run_attention_prepass(const AttentionPrepassParams& params, cudaStream_t stream);

}  // namespace qwen3next
