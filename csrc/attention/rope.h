// The RoPE tables of a batch's positions, one launch: cos[n, i] = cos(position[n] * inv_freq[i % (R / 2)]) * scale,
// and sin alike (rotate-half layout, R = rotary_dim), as reference.rope_cos_sin computes them in fp32 (the torch
// expression takes seven kernels, each a step of the decode chain).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct RopeParams {
  const void* positions;  // [N] int32 or int64
  const float* inv_freq;  // [R / 2]
  float* cos;  // [N, R]
  float* sin;  // [N, R]
  float scale;  // the YaRN attention factor (1 without YaRN)
  int tokens, rotary_dim;
};

template <typename Position>
void run_rope_cos_sin(const RopeParams& params, cudaStream_t stream);

}  // namespace qwen3next
