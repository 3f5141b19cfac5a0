// Gated DeltaNet decode mixer: everything between in_proj and out_proj for T (1..8) new tokens per
// sequence, in one kernel. Layouts: python/qwen3next_cuda/cache.py.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct GdnDecodeParams {
  const void* qkvz;  // [B, T, 2*Hk*128 + 2*Hv*128], rows [q | k | v | z]
  int64_t qkvz_batch_stride, qkvz_token_stride;
  const void* ba;  // [B, T, 2*Hv], rows [b | a]
  int64_t ba_batch_stride, ba_token_stride;
  void* conv_state;  // [num_slots, K-1, C], C = 2*Hk*128 + Hv*128
  void* recurrent_state;  // [num_slots, Hv, dv, dk] fp32 (or bf16: bf16_state), value-major
  const int32_t* slots;  // [B]; outside [0, num_slots): padding, skipped
  const void* conv_weight;  // [C, K]
  const float* A_log;  // [Hv]
  const float* dt_bias;  // [Hv]
  const void* norm_weight;  // [dv]
  void* out;  // [B, T, Hv*dv]
  int64_t out_batch_stride, out_token_stride;
  int batch, tokens, key_heads, value_heads, num_slots;
  float eps;
  bool update_state;
  bool zero_padding;  // padding sequences' output rows: zeros, else left as they are
  bool bf16_state;
};

// Launches on `stream`; the device must have thread-block clusters (sm90 and newer). Launched chained
// (common/chain.cuh): before the kernel before it in the stream has finished it only loads weights and asks L2
// for the states its slots name at that moment, so that kernel may write anything.
template <typename T>
void run_gdn_decode(const GdnDecodeParams& params, cudaStream_t stream);

}  // namespace qwen3next
