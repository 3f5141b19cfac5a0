#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>
#include <limits>

#include "common/checks.h"
#include "linear/decode_linear.h"

namespace qwen3next {

void decode_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight) {
  QN_CHECK_CUDA(x);
  QN_CHECK_SAME_DEVICE(x, weight);
  QN_CHECK_SAME_DEVICE(x, out);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &x, &weight}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "decode_linear: out, x and weight must be bfloat16, got ",
                t->scalar_type());
  }
  TORCH_CHECK(x.dim() == 2, "decode_linear: x must be [tokens, in_features], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1), "decode_linear: weight must be [out_features, ",
              x.size(1), "], got ", weight.sizes());
  const int64_t tokens = x.size(0), in_features = x.size(1), out_features = weight.size(0);
  QN_CHECK_SHAPE(out, tokens, out_features);
  QN_CHECK_CONTIGUOUS(weight);
  QN_CHECK_LAST_DIM_CONTIGUOUS(x);
  QN_CHECK_LAST_DIM_CONTIGUOUS(out);
  TORCH_CHECK(tokens <= kDecodeLinearMaxTokens, "decode_linear: at most ", kDecodeLinearMaxTokens,
              " tokens, got ", tokens);
  TORCH_CHECK(in_features > 0 && in_features % kDecodeLinearVec == 0,
              "decode_linear: in_features must be a positive multiple of ", kDecodeLinearVec, ", got ", in_features);
  TORCH_CHECK(tokens * in_features * 4 <= kDecodeLinearMaxSharedBytes, "decode_linear: tokens x in_features must be ",
              "at most ", kDecodeLinearMaxSharedBytes / 4, " (x is staged in shared memory), got ", tokens, " x ",
              in_features);
  TORCH_CHECK(out_features <= std::numeric_limits<int>::max(), "decode_linear: too many out_features: ",
              out_features);
  TORCH_CHECK(rows_vector_aligned(x, kDecodeLinearVec) && vector_aligned(weight),
              "decode_linear: x's rows and weight must start on 16-byte boundaries");
  if (tokens == 0 || out_features == 0) return;

  const c10::cuda::OptionalCUDAGuard guard(x.device());
  DecodeLinearParams p{};
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.out = out.data_ptr();
  p.x_stride = x.stride(0);
  p.out_stride = out.stride(0);
  p.tokens = static_cast<int>(tokens);
  p.rows = static_cast<int>(out_features);
  p.k = static_cast<int>(in_features);
  run_decode_linear(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
