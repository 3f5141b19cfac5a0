// Device code of the few-token dense projection (see decode_linear.h).
#pragma once

#include <cuda_bf16.h>

#include "common/chain.cuh"
#include "common/mma.cuh"
#include "common/vec.cuh"
#include "linear/decode_linear.h"

namespace qwen3next {
namespace decode_linear {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256, kWarps = kThreads / 32;  // a weight row per warp
constexpr int kVec = kDecodeLinearVec;
constexpr int kLaneLoads = 16;  // a lane's loads per pass over a row: K = 32 x 16 x 8 = 4096 per pass

// acc[t] += the 8 weights of w times token t's 8 inputs: x_lo[t * token_stride] (inputs 0-3) and x_hi[...] (4-7).
template <int kTokens>
__device__ __forceinline__ void dot_vec(float (&acc)[kTokens], const uint4& w, const float4* x_lo, const float4* x_hi,
                                        int token_stride, int tokens) {
  const float2 w01 = unpack_bf16(w.x), w23 = unpack_bf16(w.y), w45 = unpack_bf16(w.z), w67 = unpack_bf16(w.w);
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    if (t >= tokens) break;
    const float4 lo = x_lo[t * token_stride], hi = x_hi[t * token_stride];
    acc[t] += w01.x * lo.x + w01.y * lo.y + w23.x * lo.z + w23.y * lo.w + w45.x * hi.x + w45.y * hi.y +
              w67.x * hi.z + w67.y * hi.w;
  }
}

// kTokens: the largest token count the instance serves (registers for its sums); p.tokens may be fewer.
template <int kTokens>
__global__ void __launch_bounds__(kThreads, 2) decode_linear_kernel(const DecodeLinearParams p) {
  // The tokens' rows in fp32, each 8-input vector split in halves: x_lo[t][v] holds inputs 8v..8v+3, x_hi[t][v] the
  // next 4, so that the lanes' reads of consecutive vectors are consecutive 16 bytes (no bank conflicts) and no lane
  // converts an input more than once.
  extern __shared__ float4 x_s[];  // [tokens][2][K / 8]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = blockIdx.x * kWarps + warp;
  const int vecs = p.k / kVec, tokens = p.tokens;
  const bool has_row = row < p.rows;
  const uint4* w_row = reinterpret_cast<const uint4*>(p.weight) + int64_t(has_row ? row : 0) * vecs;
  uint4 w[kLaneLoads];
  auto load_pass = [&](int v0) {  // vectors v0 + lane + 32 i of the row; weights are read once: streamed
#pragma unroll
    for (int i = 0; i < kLaneLoads; ++i) {
      const int v = v0 + lane + 32 * i;
      w[i] = has_row && v < vecs ? __ldcs(w_row + v) : make_uint4(0, 0, 0, 0);
    }
  };
  load_pass(0);  // the weights first: they do not depend on the kernel before
  await_previous_kernel();  // x
  for (int i = threadIdx.x; i < tokens * vecs; i += kThreads) {
    const int t = i / vecs, v = i % vecs;
    const uint4 x = reinterpret_cast<const uint4*>(static_cast<const bf16*>(p.x) + t * p.x_stride)[v];
    const float2 x01 = unpack_bf16(x.x), x23 = unpack_bf16(x.y), x45 = unpack_bf16(x.z), x67 = unpack_bf16(x.w);
    x_s[2 * t * vecs + v] = make_float4(x01.x, x01.y, x23.x, x23.y);
    x_s[(2 * t + 1) * vecs + v] = make_float4(x45.x, x45.y, x67.x, x67.y);
  }
  __syncthreads();

  float acc[kTokens] = {};
  for (int v0 = 0; v0 < vecs; v0 += 32 * kLaneLoads) {
    if (v0 > 0) load_pass(v0);
#pragma unroll
    for (int i = 0; i < kLaneLoads; ++i) {
      const int v = v0 + lane + 32 * i;
      if (v < vecs) dot_vec(acc, w[i], x_s + v, x_s + vecs + v, 2 * vecs, tokens);
    }
  }
  float mine = 0.f;  // lane t stores token t's sum
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float sum = group_sum<32>(acc[t]);
    if (lane == t) mine = sum;
  }
  if (has_row && lane < tokens) static_cast<bf16*>(p.out)[lane * p.out_stride + row] = __float2bfloat16_rn(mine);
}

}  // namespace decode_linear
}  // namespace qwen3next
