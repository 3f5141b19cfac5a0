// Element math of the causal conv1d + SiLU, shared by its kernel and by the GDN prefill's `prepare`, which
// convolves the channels it owns: one function, computed the same way in both.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

#include "common/vec.cuh"

namespace qwen3next {
namespace conv {

constexpr int kWidth = 4;  // taps
constexpr float kLog2e = 1.4426950408889634f;

// The kernel is bound by its instructions (H100: 66 µs at 4096 tokens with a fast SiLU, 87 with the exact one), so
// the weights carry SiLU's factor -log2(e): z = -log2(e) acc, and
//   silu(acc) = acc / (1 + 2^z) = z / (-log2(e) (1 + 2^z))
// in 5 instructions by approximate ex2 and reciprocal, ftz for no denormal fix-ups: a denormal 2^z (acc > 87) is 0
// and the quotient acc; an infinite one (acc < -88) makes the quotient 0, silu's value to fp32.
__device__ __forceinline__ float silu_of_scaled(float z) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(fmaf(e, -kLog2e, -kLog2e)));
  return z * r;
}

// Where conv input `pos` (a token row) of the sequence starting at `start` lives, at channels c..: its row of x, or
// before the sequence the slot's conv state, which holds the kWidth - 1 inputs before it, oldest first.
template <typename T>
__device__ __forceinline__ const T* conv_input(const T* x, int64_t x_row_stride, const T* conv_state, int channels,
                                               int slot, int start, int pos, int c) {
  return pos >= start ? x + pos * x_row_stride + c
                      : conv_state + (int64_t(slot) * (kWidth - 1) + pos - start + kWidth - 1) * channels + c;
}

// Element v of 16-bit values held as raw words, as a float: a bf16 is the top half of its float, one shift or mask
// (vec.cuh's element_of + to_float take two instructions for an upper half).
template <typename T, int kWords>
__device__ __forceinline__ float element_float(const unsigned (&words)[kWords], int v) {
  const unsigned w = words[v / 2];
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float(v % 2 ? w & 0xffff0000u : w << 16);
  } else {
    return to_float(element_of<T>(w, v % 2));
  }
}

// The raw taps of 8 channels c..c+7 of a [channels, kWidth] weight (channel-major: [c][j]), 16 bytes per load.
template <typename T>
__device__ __forceinline__ void load_taps(unsigned (&taps)[kWidth][4], const T* weight, int64_t c) {
#pragma unroll
  for (int k = 0; k < kWidth; ++k) load_words(taps[k], weight + c * kWidth + k * 8);
}

// The taps as floats times -log2(e) (see silu_of_scaled): w[j][i] is tap j of channel c + i.
template <typename T>
__device__ __forceinline__ void scale_taps(float (&w)[kWidth][8], const unsigned (&taps)[kWidth][4]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) {
      const int e = i * kWidth + j;
      w[j][i] = element_float<T>(taps[e / 8], e % 8) * -kLog2e;
    }
  }
}

}  // namespace conv
}  // namespace qwen3next
