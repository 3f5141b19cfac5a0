// What both `state` kernels (gdn_prefill_kernel.cuh's mma.sync one, gdn_prefill_state_sm90.cu's wgmma one) and
// `prepare` share: the sizes, a sequence's bounds, the row copies into shared memory and the output rows' stores.
#pragma once

#include <cuda_bf16.h>

#include "common/async_copy.cuh"
#include "gdn/gdn_prefill.h"

namespace qwen3next {
namespace gdn_prefill {

using bf16 = __nv_bfloat16;

constexpr int kDim = 128;  // key and value head size
constexpr int kChunk = 64;  // tokens per chunk
constexpr int kRatio = 2;  // value heads per key head
constexpr int kCols = 32;  // value columns per `state` CTA
// `state` loads chunks kStages - 1 ahead: 3 stages where shared memory allows (sm90, sm100), else 2 (sm80).
constexpr int kThreads = 256;  // 8 warps: a warp owns 16 chunk rows (row block warp % 4) x a column group (warp / 4)
constexpr int kWarps = kThreads / 32;
constexpr int kRowBlocks = kChunk / 16, kColumnGroups = kWarps / kRowBlocks;
constexpr float kL2NormEps = 1e-6f;
// Padded row strides (elements): rows of an odd number of 16-byte units keep ldmatrix free of bank conflicts.
constexpr int kLdDim = kDim + 8, kLdChunk = kChunk + 8, kLdCols = kCols + 8;
constexpr int kLdSolve = kChunk + 4;  // fp32 rows of the triangular solve
static_assert(kColumnGroups == 2 && kWarps * 16 == kDim, "two column groups; a warp owns 16 state rows");

struct Sequence {
  int start, length, slot;
};
// Sequence s of the batch; padding (a slot outside the cache) and empty sequences have length 0.
__device__ __forceinline__ Sequence sequence(const GdnPrefillParams& p, int s) {
  Sequence seq{p.cu_seqlens[s], p.cu_seqlens[s + 1] - p.cu_seqlens[s], p.slots[s]};
  if (seq.slot < 0 || seq.slot >= p.num_slots || seq.length < 0) seq.length = 0;
  return seq;
}
// Copies kRows rows of kWidth bf16 (row r at src + r * stride) into a shared tile with row stride ld;
// rows from `valid` on are zero-filled. A thread keeps one 16-byte column and steps down the rows, its addresses
// advanced by constants: the copies sit on `state`'s per-chunk path, where a division and 64-bit products per copy
// made them a third of its instructions.
template <int kRows, int kWidth>
__device__ __forceinline__ void copy_rows(bf16* dst, int ld, const bf16* src, int64_t stride, int valid, int tid) {
  constexpr int kVecs = kWidth / 8, kRowStep = kThreads / kVecs;
  static_assert(kThreads % kVecs == 0 && kRows % kRowStep == 0, "every thread copies kRows / kRowStep vectors");
  const int row = tid / kVecs, col = tid % kVecs * 8;
  const bf16* from = src + row * stride + col;
  bf16* to = dst + row * ld + col;
  const int64_t from_step = kRowStep * stride;
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const bool inside = row + i * kRowStep < valid;
    cp_async_16_or_zero(to + i * kRowStep * ld, inside ? from + i * from_step : src, inside);
  }
}

// The staged output rows of a chunk (`rows` from token row0) into this CTA's columns of `out`, 16 bytes per thread.
__device__ __forceinline__ void store_output_rows(const bf16 (&staged)[kChunk][kLdCols], const GdnPrefillParams& p,
                                                  int row0, int rows, int head, int col0, int tid) {
  static_assert(kChunk * kCols / 8 == kThreads, "a thread's vector: row tid / 4, columns 8 (tid % 4) ..");
  const int r = tid / (kCols / 8), c = tid % (kCols / 8) * 8;
  if (r < rows) {
    bf16* out = static_cast<bf16*>(p.out) + int64_t(row0 + r) * p.out_row_stride + head * kDim + col0 + c;
    *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(&staged[r][c]);
  }
}

}  // namespace gdn_prefill
}  // namespace qwen3next
