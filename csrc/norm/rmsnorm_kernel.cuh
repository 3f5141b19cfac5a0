#pragma once

#include "common/chain.cuh"
#include "common/vec.cuh"
#include "norm/rmsnorm.h"

namespace qwen3next {

// One group of kLanes consecutive threads per row (part of a warp for a 128-wide head, several
// warps for a 2048-wide hidden row); each thread keeps kIters vectors of kVec elements in registers,
// so every input element is read once and every output written once. Few vectors per thread keep
// the dependent instruction chain short (a lone row at decode is latency-bound) and the register
// count low (occupancy, hence loads in flight, for long sequences).
template <typename T, NormKind kKind, int kVec_, int kLanes_, int kIters_>
struct RMSNormTraits {
  using Element = T;
  static constexpr NormKind kind = kKind;
  static constexpr int kVec = kVec_;
  static constexpr int kLanes = kLanes_;
  static constexpr int kIters = kIters_;
  static constexpr int kThreads = 256;
  static constexpr int kRowsPerBlock = kThreads / kLanes;
  static_assert(kLanes <= kThreads && (kLanes & (kLanes - 1)) == 0, "a row group is a power of two in a block");
};

// Sum over the kLanes threads of a row: shuffles within a warp, then shared memory across the warps
// of a row. Every thread of the block must call it (it may hold a __syncthreads).
template <int kLanes, int kThreads>
__device__ __forceinline__ float row_sum(float x) {
  x = group_sum<(kLanes < 32 ? kLanes : 32)>(x);
  if constexpr (kLanes > 32) {
    constexpr int kWarpsPerRow = kLanes / 32;
    __shared__ float warp_sums[kThreads / 32];
    const int warp = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) warp_sums[warp] = x;
    __syncthreads();
    const int first = warp - warp % kWarpsPerRow;
    x = 0.f;
#pragma unroll
    for (int i = 0; i < kWarpsPerRow; ++i) x += warp_sums[first + i];
  }
  return x;
}

// The norm of one row, whose head starts head_offset elements into its token's row; every thread of the block calls it
// (the row reduction may hold a barrier), those of no row with valid_row false.
template <typename Traits>
__device__ __forceinline__ void norm_row(const RMSNormParams& p, int64_t token, int64_t head_offset, bool valid_row,
                                         int lane) {
  using T = typename Traits::Element;
  constexpr int kVec = Traits::kVec, kLanes = Traits::kLanes, kIters = Traits::kIters;
  constexpr NormKind kKind = Traits::kind;
  const T* x = static_cast<const T*>(p.x) + token * p.x_stride + head_offset;
  const T* other = static_cast<const T*>(p.other) + token * p.other_stride + head_offset;
  T* out = static_cast<T*>(p.out) + token * p.out_stride + head_offset;
  T* residual_out = static_cast<T*>(p.residual_out) + token * p.residual_out_stride + head_offset;

  // Loads are batched before any store: outputs may alias inputs, so the compiler cannot move a
  // load above an earlier store, and interleaving them would serialise one memory round trip each.
  // The gate too is loaded with x, not after the row's sum: one round trip per row, not two.
  float v[kIters][kVec], gate[kIters][kVec];
  float sum_sq = 0.f;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int col = (it * kLanes + lane) * kVec;
    if (!valid_row || col >= p.dim) continue;
    load_float(v[it], x + col);
    if constexpr (kKind == NormKind::kGated) load_float(gate[it], other + col);
    if constexpr (kKind == NormKind::kAddResidual) {
      float r[kVec];
      load_float(r, other + col);
      // the new residual is rounded to T first, as the unfused model does; the norm sees that value
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[it][i] = round_to<T>(v[it][i] + r[i]);
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) sum_sq += v[it][i] * v[it][i];
  }
  const float inv_rms = rsqrtf(row_sum<kLanes, Traits::kThreads>(sum_sq) / p.dim + p.eps);
  if constexpr (kKind == NormKind::kAddResidual) {
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int col = (it * kLanes + lane) * kVec;
      if (valid_row && col < p.dim) store_float(residual_out + col, v[it]);
    }
  }

#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int col = (it * kLanes + lane) * kVec;
    if (!valid_row || col >= p.dim) continue;
    float w[kVec];
    load_float(w, static_cast<const T*>(p.weight) + col);
    if constexpr (kKind == NormKind::kGated) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[it][i] = round_to<T>(round_to<T>(v[it][i] * inv_rms) * w[i]) * silu(gate[it][i]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[it][i] = v[it][i] * inv_rms * (1.f + w[i]);
    }
  }

#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int col = (it * kLanes + lane) * kVec;
    if (valid_row && col < p.dim) store_float(out + col, v[it]);
  }
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads) rmsnorm_kernel(const RMSNormParams p) {
  await_previous_kernel();  // launched chained: only its launch overlaps the kernel before
  const int64_t row = int64_t(blockIdx.x) * Traits::kRowsPerBlock + threadIdx.x / Traits::kLanes;
  // Threads past the last row stay to the end: the row reduction needs the whole warp (and block).
  const bool valid_row = row < p.tokens * p.heads;
  norm_row<Traits>(p, valid_row ? row / p.heads : 0, valid_row ? int64_t(row % p.heads) * p.dim : 0, valid_row,
                   threadIdx.x % Traits::kLanes);
}

}  // namespace qwen3next
