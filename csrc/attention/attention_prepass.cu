#include <cuda_bf16.h>

#include <algorithm>

#include "attention/attention_prepass.h"
#include "common/chain.cuh"
#include "common/launch.h"
#include "common/vec.cuh"

namespace qwen3next {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kDim = 256, kPerLane = kDim / 32;

// zero-centred RMSNorm of the warp's row (8 elements per lane), rounded to bf16 as the unfused model stores it
__device__ __forceinline__ void rmsnorm_row(float (&x)[kPerLane], const float (&weight)[kPerLane], float eps) {
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) sum += x[i] * x[i];
  const float inv_rms = rsqrtf(group_sum<32>(sum) * (1.f / kDim) + eps);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) x[i] = round_to<bf16>(x[i] * inv_rms * (1.f + weight[i]));
}

// Rotate-half RoPE on dims < rotary_dim: dim d pairs with d +- rotary_dim / 2, which lane ^ (rotary_dim / 16) holds;
// cos and sin of the lane's dims (unused past rotary_dim).
__device__ __forceinline__ void rope_row(float (&x)[kPerLane], const float (&cos)[kPerLane],
                                         const float (&sin)[kPerLane], int rotary_dim, int lane) {
  const int partner = rotary_dim / (2 * kPerLane);
  const bool rotated = kPerLane * lane < rotary_dim, first_half = kPerLane * lane < rotary_dim / 2;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const float other = __shfl_xor_sync(0xffffffffu, x[i], partner);
    if (rotated) x[i] = x[i] * cos[i] + (first_half ? -other : other) * sin[i];
  }
}

// A warp per (token, head): q heads, then k heads, then v heads. What depends on the token and head alone (the row,
// the norm weights, cos and sin) is loaded first, in one round trip; only keys and values need the token's sequence.
__global__ void __launch_bounds__(1024) attention_prepass_kernel(const AttentionPrepassParams p) {
  await_previous_kernel();  // the projections
  const int token = blockIdx.x, warp = blockIdx.y * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp >= p.query_heads + 2 * p.kv_heads) return;
  const bool query = warp < p.query_heads, key = !query && warp < p.query_heads + p.kv_heads;
  const int head = query ? warp : (warp - p.query_heads) % p.kv_heads;
  const bf16* row = query ? static_cast<const bf16*>(p.q) + token * p.q_row_stride + head * p.q_head_stride
                    : key ? static_cast<const bf16*>(p.k) + token * p.k_row_stride + head * p.k_head_stride
                          : static_cast<const bf16*>(p.v) + token * p.v_row_stride + head * p.v_head_stride;
  float x[kPerLane], weight[kPerLane], cos[kPerLane], sin[kPerLane];
  load_float<bf16, kPerLane>(x, row + kPerLane * lane);
  if (query || key) {  // normalised and rotated; values go as they are
    load_float<bf16, kPerLane>(weight, static_cast<const bf16*>(query ? p.q_norm_weight : p.k_norm_weight) +
                                           kPerLane * lane);
    if (kPerLane * lane < p.rotary_dim) {
      load_float<float, kPerLane>(cos, p.cos + int64_t(token) * p.rotary_dim + kPerLane * lane);
      load_float<float, kPerLane>(sin, p.sin + int64_t(token) * p.rotary_dim + kPerLane * lane);
    }
    rmsnorm_row(x, weight, p.eps);
    rope_row(x, cos, sin, p.rotary_dim, lane);
  }
  if (query) {
    store_float(static_cast<bf16*>(p.q_out) + (int64_t(token) * p.query_heads + head) * kDim + kPerLane * lane, x);
    return;
  }
  // The sequence holding the token (the last s with cu_seqlens[s] <= token) and the token's position.
  int lo = 0, hi = p.seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= token) lo = mid; else hi = mid - 1;
  }
  const int slot = p.slots[lo], length = p.cu_seqlens[lo + 1] - p.cu_seqlens[lo];
  const int position = p.context_lens[lo] - length + token - p.cu_seqlens[lo];
  if (slot < 0 || slot >= p.num_slots || position < 0 || position >= p.max_len) return;
  const int64_t cache_row = ((int64_t(slot) * p.max_len + position) * p.kv_heads + head) * kDim + kPerLane * lane;
  store_float(static_cast<bf16*>(key ? p.key_cache : p.value_cache) + cache_row, x);
}

}  // namespace

void run_attention_prepass(const AttentionPrepassParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.seqs == 0) return;
  // A CTA per token, every head of it (the model's 20 warps), up to 32 heads per CTA.
  const int heads = p.query_heads + 2 * p.kv_heads, warps_per_block = std::min(heads, 32);
  const dim3 grid(p.tokens, (heads + warps_per_block - 1) / warps_per_block);
  launch_chained(attention_prepass_kernel, grid, 32 * warps_per_block, 0, stream, p);
}

}  // namespace qwen3next
