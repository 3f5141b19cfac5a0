// One warp's step of flash attention on tensor cores (mma.sync), shared by the decode and prefill kernels: 16 query
// rows (the warp's tile, rows g and g + 8 per thread) against a block of keys held in shared memory, S = Q K^T, the
// online softmax update in log2 units, O += P V with P kept in registers (the accumulator layout of S is the A
// operand layout of P V). Tiles are row-major bf16 with row stride kLd (odd multiple of 16 bytes).
#pragma once

#include <cuda_bf16.h>

#include "common/mma.cuh"

namespace qwen3next {
namespace flash {

// The running softmax state of the thread's two rows and their unnormalised output (kDim columns).
template <int kDim>
struct RowState {
  float max[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};  // sum: this thread's columns until reduce_sums()
  float o[kDim / 8][4] = {};

  // Row sums over the quad of threads that share each row.
  __device__ __forceinline__ void reduce_sums() {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      sum[half] += __shfl_xor_sync(0xffffffffu, sum[half], 1);
      sum[half] += __shfl_xor_sync(0xffffffffu, sum[half], 2);
    }
  }
};

// Keys key0 + k_row .. + kKeys - 1 (rows k_row.. of k_tile and v_tile) against the query rows q_row0.. of q_tile,
// kKeys a multiple of 16: each Q fragment serves kKeys / 8 MMAs and O is rescaled once per step. Keys past
// last_key[half] (the last key row g + 8 half may see; -1: none) are masked.
template <int kDim, int kLd, int kKeys>
__device__ __forceinline__ void attend_keys(RowState<kDim>& st, const __nv_bfloat16* q_tile, int q_row0,
                                            const __nv_bfloat16* k_tile, const __nv_bfloat16* v_tile, int k_row,
                                            int key0, const int (&last_key)[2], float scale_log2, int lane) {
  static_assert(kKeys % 16 == 0, "whole 16-key blocks");
  constexpr int kBlocks = kKeys / 16;
  const int t = lane % 4;
  float s[2 * kBlocks][4] = {};
#pragma unroll
  for (int k0 = 0; k0 < kDim; k0 += 16) {
    FragA a;
    load_a(a, q_tile, kLd, q_row0, k0, lane);
#pragma unroll
    for (int kb = 0; kb < kBlocks; ++kb) {
      FragB2 kf;
      load_b_nk(kf, k_tile, kLd, k0, k_row + 16 * kb, lane);
      mma(s[2 * kb], a, kf, 0);
      mma(s[2 * kb + 1], a, kf, 1);
    }
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float block_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2 * kBlocks; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = key0 + k_row + 8 * nt + 2 * t + e;
        float& x = s[nt][2 * half + e];
        x = key <= last_key[half] ? x * scale_log2 : -INFINITY;
        block_max = fmaxf(block_max, x);
      }
    }
    block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, 1));
    block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, 2));
    const float new_max = fmaxf(st.max[half], block_max);
    const float base = new_max == -INFINITY ? 0.f : new_max;  // nothing visible yet: every p is 0
    const float correction = exp2f(st.max[half] - base);
    st.max[half] = new_max;
    st.sum[half] *= correction;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt) {
      st.o[nt][2 * half] *= correction;
      st.o[nt][2 * half + 1] *= correction;
    }
#pragma unroll
    for (int nt = 0; nt < 2 * kBlocks; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[nt][2 * half + e];  // from here on: p
        x = exp2f(x - base);
        st.sum[half] += x;
      }
    }
  }
#pragma unroll
  for (int kb = 0; kb < kBlocks; ++kb) {
    const FragA pa = {pack_bf16(s[2 * kb][0], s[2 * kb][1]), pack_bf16(s[2 * kb][2], s[2 * kb][3]),
                      pack_bf16(s[2 * kb + 1][0], s[2 * kb + 1][1]), pack_bf16(s[2 * kb + 1][2], s[2 * kb + 1][3])};
#pragma unroll
    for (int np = 0; np < kDim / 16; ++np) {
      FragB2 vb;
      load_b_kn(vb, v_tile, kLd, k_row + 16 * kb, 16 * np, lane);
      mma(st.o[2 * np], pa, vb, 0);
      mma(st.o[2 * np + 1], pa, vb, 1);
    }
  }
}

}  // namespace flash
}  // namespace qwen3next
