// Row-wise RMSNorm family: zero-centred (optionally with a fused residual add) and gated.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace qwen3next {

enum class NormKind {
  kPlain,        // out = x * rsqrt(mean(x^2) + eps) * (1 + w)
  kAddResidual,  // s = x + residual (rounded to T) -> residual_out; out = s * rsqrt(mean(s^2) + eps) * (1 + w)
  kGated,        // out = x * rsqrt(mean(x^2) + eps) * w * silu(z), rounded to T after the norm and after w (the model)
};

// Rows are (token, head) pairs: row (t, h) of a tensor starts at ptr + t * token_stride + h * dim,
// so [tokens, heads * dim] slices of a wider projection output are read in place. Strides in elements.
struct RMSNormParams {
  void* out;
  void* residual_out;  // kAddResidual only
  const void* x;
  const void* other;   // residual (kAddResidual) or gate z (kGated)
  const void* weight;  // [dim]
  int64_t tokens;
  int heads;
  int dim;
  int64_t out_stride, residual_out_stride, x_stride, other_stride;
  float eps;
};

// Launches on `stream`; false (nothing launched) when rows are longer than the kernel holds in
// registers: 2048 vectors of 16 bytes when rows are 16-byte aligned, else 2048 elements.
template <typename T, NormKind kKind>
bool run_rmsnorm(const RMSNormParams& params, cudaStream_t stream);

}  // namespace qwen3next
