#include <cuda_bf16.h>

#include "attention/attention_prepass.h"
#include "common/chain.cuh"
#include "common/launch.h"
#include "common/vec.cuh"

namespace qwen3next {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kDim = 256, kPerLane = kDim / 32;

// zero-centred RMSNorm of the warp's row (8 elements per lane), rounded to bf16 as the unfused model stores it
__device__ __forceinline__ void rmsnorm_row(float (&x)[kPerLane], const bf16* weight, float eps, int lane) {
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) sum += x[i] * x[i];
  const float inv_rms = rsqrtf(group_sum<32>(sum) * (1.f / kDim) + eps);
  float w[kPerLane];
  load_float<bf16, kPerLane>(w, weight + kPerLane * lane);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) x[i] = round_to<bf16>(x[i] * inv_rms * (1.f + w[i]));
}

// Rotate-half RoPE on dims < rotary_dim: dim d pairs with d +- rotary_dim / 2, which lane ^ (rotary_dim / 16) holds.
__device__ __forceinline__ void rope_row(float (&x)[kPerLane], const float* cos, const float* sin, int rotary_dim,
                                         int lane) {
  const int partner = rotary_dim / (2 * kPerLane);
  const bool rotated = kPerLane * lane < rotary_dim, first_half = kPerLane * lane < rotary_dim / 2;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const float other = __shfl_xor_sync(0xffffffffu, x[i], partner);
    if (rotated) {
      const int d = kPerLane * lane + i;
      x[i] = x[i] * cos[d] + (first_half ? -other : other) * sin[d];
    }
  }
}

__global__ void __launch_bounds__(512) attention_prepass_kernel(const AttentionPrepassParams p) {
  await_previous_kernel();  // the projections
  const int token = blockIdx.x, warp = blockIdx.y * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  const int heads = p.query_heads + 2 * p.kv_heads;  // q heads, then k heads, then v heads
  if (warp >= heads) return;
  // The sequence holding the token (the last s with cu_seqlens[s] <= token) and the token's position.
  int lo = 0, hi = p.seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= token) lo = mid; else hi = mid - 1;
  }
  const int slot = p.slots[lo], length = p.cu_seqlens[lo + 1] - p.cu_seqlens[lo];
  const int position = p.context_lens[lo] - length + token - p.cu_seqlens[lo];
  const bool cached = slot >= 0 && slot < p.num_slots && position >= 0 && position < p.max_len;
  const float* cos = p.cos + int64_t(token) * p.rotary_dim;
  const float* sin = p.sin + int64_t(token) * p.rotary_dim;

  float x[kPerLane];
  if (warp < p.query_heads) {
    load_float<bf16, kPerLane>(x, static_cast<const bf16*>(p.q) + token * p.q_row_stride + warp * p.q_head_stride +
                                      kPerLane * lane);
    rmsnorm_row(x, static_cast<const bf16*>(p.q_norm_weight), p.eps, lane);
    rope_row(x, cos, sin, p.rotary_dim, lane);
    store_float(static_cast<bf16*>(p.q_out) + (int64_t(token) * p.query_heads + warp) * kDim + kPerLane * lane, x);
    return;
  }
  if (!cached) return;
  const int head = (warp - p.query_heads) % p.kv_heads;
  const int64_t cache_row = ((int64_t(slot) * p.max_len + position) * p.kv_heads + head) * kDim + kPerLane * lane;
  if (warp < p.query_heads + p.kv_heads) {
    load_float<bf16, kPerLane>(x, static_cast<const bf16*>(p.k) + token * p.k_row_stride + head * p.k_head_stride +
                                      kPerLane * lane);
    rmsnorm_row(x, static_cast<const bf16*>(p.k_norm_weight), p.eps, lane);
    rope_row(x, cos, sin, p.rotary_dim, lane);
    store_float(static_cast<bf16*>(p.key_cache) + cache_row, x);
  } else {
    load_float<bf16, kPerLane>(x, static_cast<const bf16*>(p.v) + token * p.v_row_stride + head * p.v_head_stride +
                                      kPerLane * lane);
    store_float(static_cast<bf16*>(p.value_cache) + cache_row, x);
  }
}

}  // namespace

void run_attention_prepass(const AttentionPrepassParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.seqs == 0) return;
  const int heads = p.query_heads + 2 * p.kv_heads, warps_per_block = 16;
  const dim3 grid(p.tokens, (heads + warps_per_block - 1) / warps_per_block);
  launch_chained(attention_prepass_kernel, grid, 32 * warps_per_block, 0, stream, p);
}

}  // namespace qwen3next
