#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>

#include "common/checks.h"
#include "conv/causal_conv1d.h"

namespace qwen3next {

namespace {
constexpr int64_t kConvWidth = 4, kVecElements = 8;  // the kernel moves 16-byte vectors of 8 channels
}  // namespace

void causal_conv1d_varlen(at::Tensor& out, at::Tensor& conv_state, const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& cu_seqlens, const at::Tensor& slots) {
  QN_CHECK_CUDA(x);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &conv_state, &weight, &cu_seqlens,
                                                                       &slots}) {
    TORCH_CHECK(t->device() == x.device(), "causal_conv1d_varlen: all tensors must be on ", x.device(),
                ", got one on ", t->device());
  }
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf,
              "causal_conv1d_varlen: x must be bfloat16 or float16, got ", dtype);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &conv_state, &weight}) {
    TORCH_CHECK(t->scalar_type() == dtype, "causal_conv1d_varlen: out, conv_state and weight must have x's dtype ",
                dtype, ", got ", t->scalar_type());
  }
  QN_CHECK_DTYPE(cu_seqlens, at::kInt);
  QN_CHECK_DTYPE(slots, at::kInt);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == kConvWidth, "causal_conv1d_varlen: weight must be [C, ",
              kConvWidth, "], got ", weight.sizes());
  const int64_t channels = weight.size(0);
  TORCH_CHECK(channels % kVecElements == 0, "causal_conv1d_varlen: the channel count must be a multiple of ",
              kVecElements, ", got ", channels);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == channels, "causal_conv1d_varlen: x must be [tokens, ", channels,
              "], got ", x.sizes());
  const int64_t tokens = x.size(0);
  QN_CHECK_SHAPE(out, tokens, channels);
  TORCH_CHECK(slots.dim() == 1, "causal_conv1d_varlen: slots must be [seqs], got ", slots.sizes());
  const int64_t seqs = slots.size(0);
  QN_CHECK_SHAPE(cu_seqlens, seqs + 1);
  TORCH_CHECK(conv_state.dim() == 3 && conv_state.size(1) == kConvWidth - 1 && conv_state.size(2) == channels,
              "causal_conv1d_varlen: conv_state must be [slots, ", kConvWidth - 1, ", ", channels, "], got ",
              conv_state.sizes());
  QN_CHECK_LAST_DIM_CONTIGUOUS(x);
  QN_CHECK_LAST_DIM_CONTIGUOUS(out);
  QN_CHECK_CONTIGUOUS(weight);
  QN_CHECK_CONTIGUOUS(conv_state);
  QN_CHECK_CONTIGUOUS(cu_seqlens);
  QN_CHECK_CONTIGUOUS(slots);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&x, &out}) {
    TORCH_CHECK(rows_vector_aligned(*t, kVecElements),
                "causal_conv1d_varlen: x and out rows must start on 16-byte boundaries (row stride a multiple of ",
                kVecElements, " elements)");
  }
  TORCH_CHECK(vector_aligned(weight) && vector_aligned(conv_state),
              "causal_conv1d_varlen: weight and conv_state must start on 16-byte boundaries");
  TORCH_CHECK(tokens < (int64_t(1) << 31), "causal_conv1d_varlen: too many tokens (", tokens, ")");  // int params
  if (seqs == 0) return;

  CausalConv1dParams p{};
  p.x = x.data_ptr();
  p.x_row_stride = x.stride(0);
  p.out = out.data_ptr();
  p.out_row_stride = out.stride(0);
  p.weight = weight.data_ptr();
  p.conv_state = conv_state.data_ptr();
  p.cu_seqlens = cu_seqlens.data_ptr<int32_t>();
  p.slots = slots.data_ptr<int32_t>();
  p.tokens = static_cast<int>(tokens);
  p.channels = static_cast<int>(channels);
  p.seqs = static_cast<int>(seqs);
  p.num_slots = static_cast<int>(conv_state.size(0));

  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (dtype == at::kBFloat16) {
    run_causal_conv1d_varlen<__nv_bfloat16>(p, stream);
  } else {
    run_causal_conv1d_varlen<__half>(p, stream);
  }
}

}  // namespace qwen3next
