#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "attention/rope.h"
#include "common/checks.h"

namespace qwen3next {

void rope_cos_sin(at::Tensor& cos, at::Tensor& sin, const at::Tensor& positions, const at::Tensor& inv_freq,
                  double scale) {
  QN_CHECK_CUDA(positions);
  QN_CHECK_SAME_DEVICE(positions, inv_freq);
  QN_CHECK_SAME_DEVICE(positions, cos);
  QN_CHECK_SAME_DEVICE(positions, sin);
  TORCH_CHECK(positions.scalar_type() == at::kInt || positions.scalar_type() == at::kLong,
              "rope_cos_sin: positions must be int32 or int64, got ", positions.scalar_type());
  QN_CHECK_DTYPE(inv_freq, at::kFloat);
  QN_CHECK_DTYPE(cos, at::kFloat);
  QN_CHECK_DTYPE(sin, at::kFloat);
  TORCH_CHECK(inv_freq.dim() == 1 && inv_freq.size(0) > 0, "rope_cos_sin: inv_freq must be [rotary_dim / 2], got ",
              inv_freq.sizes());
  const int64_t tokens = positions.numel(), rotary_dim = 2 * inv_freq.size(0);
  QN_CHECK_SHAPE(cos, tokens, rotary_dim);
  QN_CHECK_SHAPE(sin, tokens, rotary_dim);
  QN_CHECK_CONTIGUOUS(positions);
  QN_CHECK_CONTIGUOUS(inv_freq);
  QN_CHECK_CONTIGUOUS(cos);
  QN_CHECK_CONTIGUOUS(sin);
  TORCH_CHECK(tokens * rotary_dim <= std::numeric_limits<int>::max(), "rope_cos_sin: too many positions: ", tokens);

  const c10::cuda::OptionalCUDAGuard guard(positions.device());
  RopeParams p{};
  p.positions = positions.data_ptr();
  p.inv_freq = inv_freq.data_ptr<float>();
  p.cos = cos.data_ptr<float>();
  p.sin = sin.data_ptr<float>();
  p.scale = static_cast<float>(scale);
  p.tokens = static_cast<int>(tokens);
  p.rotary_dim = static_cast<int>(rotary_dim);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (positions.scalar_type() == at::kInt) {
    run_rope_cos_sin<int32_t>(p, stream);
  } else {
    run_rope_cos_sin<int64_t>(p, stream);
  }
}

}  // namespace qwen3next
