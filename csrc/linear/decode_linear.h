// Dense projection of one or two tokens (decode): out[N, M] = x[N, K] weight[M, K]^T in bf16, summed in fp32.
// A warp per weight row, the row's K spread over the lanes in 16-byte loads, every load of a row (up to K = 4096)
// in flight at once. Launched chained (common/chain.cuh): the weights do not depend on the kernel before, so each
// warp issues its row's loads before it awaits that kernel, and a projection's weights stream from memory while the
// norm or mixer before it still runs. (cuBLAS's GEMV, split-K plus a reduce kernel and not chained, reached 62% of
// copy bandwidth on these shapes at batch 1.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct DecodeLinearParams {
  const void* x;  // [N, K] bf16, rows x_stride elements apart (16-byte aligned)
  const void* weight;  // [M, K] bf16, contiguous
  void* out;  // [N, M] bf16, rows out_stride elements apart
  int64_t x_stride, out_stride;
  int tokens, rows, k;  // N, M, K
};

// The kernel's limits (checked by the API): N tokens, K a whole number of 16-byte loads, x's rows in shared memory.
constexpr int kDecodeLinearMaxTokens = 2;  // at 4 the sums' FMAs, not the loads, set the time
constexpr int kDecodeLinearVec = 8;  // bf16 per 16-byte load
constexpr int kDecodeLinearMaxSharedBytes = 64 * 1024;  // x's rows in fp32: N x K <= 16384

void run_decode_linear(const DecodeLinearParams& p, cudaStream_t stream);

}  // namespace qwen3next
