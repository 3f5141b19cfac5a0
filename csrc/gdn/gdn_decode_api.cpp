#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>

#include "common/checks.h"
#include "common/device.h"
#include "gdn/gdn_decode.h"

namespace qwen3next {

namespace {
constexpr int64_t kHeadDim = 128, kConvWidth = 4, kMaxTokens = 8;
}

void gdn_decode(at::Tensor& out, at::Tensor& conv_state, at::Tensor& recurrent_state, const at::Tensor& qkvz,
                const at::Tensor& ba, const at::Tensor& slots, const at::Tensor& conv_weight, const at::Tensor& A_log,
                const at::Tensor& dt_bias, const at::Tensor& norm_weight, double eps, bool update_state,
                bool zero_padding) {
  QN_CHECK_CUDA(qkvz);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &out, &conv_state, &recurrent_state, &ba, &slots, &conv_weight, &A_log, &dt_bias, &norm_weight}) {
    TORCH_CHECK(t->device() == qkvz.device(), "gdn_decode: all tensors must be on ", qkvz.device(), ", got one on ",
                t->device());
  }
  const auto dtype = qkvz.scalar_type();
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "gdn_decode: qkvz must be bfloat16 or float16, got ",
              dtype);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &conv_state, &ba, &conv_weight,
                                                                       &norm_weight}) {
    TORCH_CHECK(t->scalar_type() == dtype, "gdn_decode: out, conv_state, ba, conv_weight and norm_weight must have "
                "qkvz's dtype ", dtype, ", got ", t->scalar_type());
  }
  TORCH_CHECK(recurrent_state.scalar_type() == at::kFloat || recurrent_state.scalar_type() == at::kBFloat16,
              "gdn_decode: recurrent_state must be float32 or bfloat16, got ", recurrent_state.scalar_type());
  QN_CHECK_DTYPE(A_log, at::kFloat);
  QN_CHECK_DTYPE(dt_bias, at::kFloat);
  QN_CHECK_DTYPE(slots, at::kInt);

  TORCH_CHECK(recurrent_state.dim() == 4 && recurrent_state.size(2) == kHeadDim && recurrent_state.size(3) == kHeadDim,
              "gdn_decode: recurrent_state must be [slots, Hv, 128, 128], got ", recurrent_state.sizes());
  const int64_t num_slots = recurrent_state.size(0), value_heads = recurrent_state.size(1);
  TORCH_CHECK(conv_weight.dim() == 2 && conv_weight.size(1) == kConvWidth,
              "gdn_decode: conv_weight must be [C, 4], got ", conv_weight.sizes());
  const int64_t channels = conv_weight.size(0), key_dim = (channels - value_heads * kHeadDim) / 2;
  const int64_t key_heads = key_dim / kHeadDim;
  TORCH_CHECK(key_heads > 0 && channels == 2 * key_heads * kHeadDim + value_heads * kHeadDim &&
                  (value_heads == key_heads || value_heads == 2 * key_heads),
              "gdn_decode: conv_weight's ", channels, " channels and ", value_heads, " value heads of 128 do not make "
              "[q | k | v] with 128-wide key heads and 1 or 2 value heads per key head");
  TORCH_CHECK(qkvz.dim() == 3 && qkvz.size(2) == channels + value_heads * kHeadDim,
              "gdn_decode: qkvz must be [B, T, ", channels + value_heads * kHeadDim, "], got ", qkvz.sizes());
  const int64_t batch = qkvz.size(0), tokens = qkvz.size(1);
  TORCH_CHECK(tokens >= 1 && tokens <= kMaxTokens, "gdn_decode: 1 to ", kMaxTokens, " tokens per sequence, got ",
              tokens);
  QN_CHECK_SHAPE(ba, batch, tokens, 2 * value_heads);
  QN_CHECK_SHAPE(out, batch, tokens, value_heads * kHeadDim);
  QN_CHECK_SHAPE(slots, batch);
  QN_CHECK_SHAPE(conv_state, num_slots, kConvWidth - 1, channels);
  QN_CHECK_SHAPE(A_log, value_heads);
  QN_CHECK_SHAPE(dt_bias, value_heads);
  QN_CHECK_SHAPE(norm_weight, kHeadDim);
  QN_CHECK_LAST_DIM_CONTIGUOUS(qkvz);
  QN_CHECK_LAST_DIM_CONTIGUOUS(ba);
  QN_CHECK_LAST_DIM_CONTIGUOUS(out);
  QN_CHECK_CONTIGUOUS(conv_state);
  QN_CHECK_CONTIGUOUS(recurrent_state);
  QN_CHECK_CONTIGUOUS(slots);
  QN_CHECK_CONTIGUOUS(conv_weight);
  QN_CHECK_CONTIGUOUS(A_log);
  QN_CHECK_CONTIGUOUS(dt_bias);
  QN_CHECK_CONTIGUOUS(norm_weight);
  TORCH_CHECK(eps > 0, "gdn_decode: eps must be positive, got ", eps);
  const c10::cuda::OptionalCUDAGuard guard(qkvz.device());
  TORCH_CHECK(device_attribute<cudaDevAttrComputeCapabilityMajor>(qkvz.get_device()) >= 9, "gdn_decode: needs thread-block clusters (sm90 or newer)");

  GdnDecodeParams p{};
  p.qkvz = qkvz.data_ptr();
  p.qkvz_batch_stride = qkvz.stride(0);
  p.qkvz_token_stride = qkvz.stride(1);
  p.ba = ba.data_ptr();
  p.ba_batch_stride = ba.stride(0);
  p.ba_token_stride = ba.stride(1);
  p.conv_state = conv_state.data_ptr();
  p.recurrent_state = recurrent_state.data_ptr();
  p.bf16_state = recurrent_state.scalar_type() == at::kBFloat16;
  p.slots = slots.data_ptr<int32_t>();
  p.conv_weight = conv_weight.data_ptr();
  p.A_log = A_log.data_ptr<float>();
  p.dt_bias = dt_bias.data_ptr<float>();
  p.norm_weight = norm_weight.data_ptr();
  p.out = out.data_ptr();
  p.out_batch_stride = out.stride(0);
  p.out_token_stride = out.stride(1);
  p.batch = static_cast<int>(batch);
  p.tokens = static_cast<int>(tokens);
  p.key_heads = static_cast<int>(key_heads);
  p.value_heads = static_cast<int>(value_heads);
  p.num_slots = static_cast<int>(num_slots);
  p.eps = static_cast<float>(eps);
  p.update_state = update_state;
  p.zero_padding = zero_padding;

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (dtype == at::kBFloat16) {
    run_gdn_decode<__nv_bfloat16>(p, stream);
  } else {
    run_gdn_decode<__half>(p, stream);
  }
}

}  // namespace qwen3next
