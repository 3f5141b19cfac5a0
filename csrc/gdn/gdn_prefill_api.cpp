#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "common/checks.h"
#include "common/device.h"
#include "gdn/gdn_prefill.h"

namespace qwen3next {

namespace {
constexpr int64_t kHeadDim = 128, kChunk = 64, kConvWidth = 4;
constexpr int64_t kVecElements = 8;  // rows are read as 16-byte vectors
}  // namespace

void gdn_prefill(at::Tensor& out, at::Tensor& conv_state, at::Tensor& recurrent_state, const at::Tensor& qkvz,
                 const at::Tensor& ba, const at::Tensor& cu_seqlens, const at::Tensor& slots,
                 const at::Tensor& conv_weight, const at::Tensor& A_log, const at::Tensor& dt_bias,
                 const at::Tensor& norm_weight, double eps, int64_t max_seqlen, bool portable) {
  QN_CHECK_CUDA(qkvz);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &out, &conv_state, &recurrent_state, &ba, &cu_seqlens, &slots, &conv_weight, &A_log, &dt_bias,
           &norm_weight}) {
    TORCH_CHECK(t->device() == qkvz.device(), "gdn_prefill: all tensors must be on ", qkvz.device(), ", got one on ",
                t->device());
  }
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&qkvz, &out, &conv_state, &ba, &conv_weight, &norm_weight}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "gdn_prefill: qkvz, ba, out, conv_state, conv_weight and "
                "norm_weight must be bfloat16, got ", t->scalar_type());
  }
  QN_CHECK_DTYPE(recurrent_state, at::kFloat);
  QN_CHECK_DTYPE(A_log, at::kFloat);
  QN_CHECK_DTYPE(dt_bias, at::kFloat);
  QN_CHECK_DTYPE(cu_seqlens, at::kInt);
  QN_CHECK_DTYPE(slots, at::kInt);

  TORCH_CHECK(recurrent_state.dim() == 4 && recurrent_state.size(2) == kHeadDim && recurrent_state.size(3) == kHeadDim,
              "gdn_prefill: recurrent_state must be [slots, Hv, 128, 128], got ", recurrent_state.sizes());
  const int64_t num_slots = recurrent_state.size(0), value_heads = recurrent_state.size(1);
  const int64_t key_heads = value_heads / 2;
  TORCH_CHECK(value_heads % 2 == 0 && value_heads > 0, "gdn_prefill: needs 2 value heads per key head, got ",
              value_heads, " value heads");
  const int64_t channels = 2 * key_heads * kHeadDim + value_heads * kHeadDim, value_dim = value_heads * kHeadDim;
  TORCH_CHECK(qkvz.dim() == 2 && qkvz.size(1) >= channels + value_dim, "gdn_prefill: qkvz must be [tokens, >= ",
              channels + value_dim, "] ([q | k | v | z] for ", value_heads, " value heads), got ", qkvz.sizes());
  const int64_t tokens = qkvz.size(0);
  QN_CHECK_SHAPE(conv_weight, channels, kConvWidth);
  QN_CHECK_SHAPE(conv_state, num_slots, kConvWidth - 1, channels);
  QN_CHECK_SHAPE(ba, tokens, 2 * value_heads);
  QN_CHECK_SHAPE(out, tokens, value_dim);
  TORCH_CHECK(slots.dim() == 1, "gdn_prefill: slots must be [seqs], got ", slots.sizes());
  const int64_t seqs = slots.size(0);
  QN_CHECK_SHAPE(cu_seqlens, seqs + 1);
  QN_CHECK_SHAPE(A_log, value_heads);
  QN_CHECK_SHAPE(dt_bias, value_heads);
  QN_CHECK_SHAPE(norm_weight, kHeadDim);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&qkvz, &ba, &out}) {
    QN_CHECK_LAST_DIM_CONTIGUOUS(*t);
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&qkvz, &out}) {
    TORCH_CHECK(rows_vector_aligned(*t, kVecElements), "gdn_prefill: qkvz and out rows must start on 16-byte "
                "boundaries (row stride a multiple of ", kVecElements, " elements)");
  }
  QN_CHECK_CONTIGUOUS(conv_state);
  QN_CHECK_CONTIGUOUS(recurrent_state);
  QN_CHECK_CONTIGUOUS(cu_seqlens);
  QN_CHECK_CONTIGUOUS(slots);
  QN_CHECK_CONTIGUOUS(conv_weight);
  QN_CHECK_CONTIGUOUS(A_log);
  QN_CHECK_CONTIGUOUS(dt_bias);
  QN_CHECK_CONTIGUOUS(norm_weight);
  TORCH_CHECK(vector_aligned(conv_weight) && vector_aligned(conv_state) && vector_aligned(norm_weight),
              "gdn_prefill: conv_weight, conv_state and norm_weight must start on 16-byte boundaries");  // vector loads
  TORCH_CHECK(eps > 0, "gdn_prefill: eps must be positive, got ", eps);
  TORCH_CHECK(max_seqlen >= 0, "gdn_prefill: max_seqlen must be >= 0, got ", max_seqlen);
  TORCH_CHECK(tokens * channels < (int64_t(1) << 31) && seqs < 65536,
              "gdn_prefill: at most 2^31 workspace elements and 65535 sequences per call");
  if (seqs == 0 || tokens == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(qkvz.device());
  TORCH_CHECK(device_attribute<cudaDevAttrComputeCapabilityMajor>(qkvz.get_device()) >= 8,
              "gdn_prefill: needs sm80 or newer");

  // Workspace from `prepare` to `state`, the conv output first (stream-ordered through the caching allocator).
  const auto bf16 = qkvz.options().dtype(at::kBFloat16);
  const at::Tensor qkv = at::empty({tokens, channels}, bf16);
  const at::Tensor t = at::empty({tokens, value_heads, kChunk}, bf16);
  const at::Tensor p_intra = at::empty({tokens, value_heads, kChunk}, bf16);
  const at::Tensor scales = at::empty({tokens, value_heads, 4}, qkvz.options().dtype(at::kFloat));

  GdnPrefillParams p{};
  p.x = qkvz.data_ptr();
  p.x_row_stride = qkvz.stride(0);
  p.conv_weight = conv_weight.data_ptr();
  p.conv_state = conv_state.data_ptr();
  p.qkv = qkv.data_ptr();
  p.qkv_row_stride = qkv.stride(0);
  p.z = static_cast<const at::BFloat16*>(qkvz.data_ptr()) + channels;
  p.z_row_stride = qkvz.stride(0);
  p.ba = ba.data_ptr();
  p.ba_row_stride = ba.stride(0);
  p.A_log = A_log.data_ptr<float>();
  p.dt_bias = dt_bias.data_ptr<float>();
  p.norm_weight = norm_weight.data_ptr();
  p.out = out.data_ptr();
  p.out_row_stride = out.stride(0);
  p.state = recurrent_state.data_ptr<float>();
  p.cu_seqlens = cu_seqlens.data_ptr<int32_t>();
  p.slots = slots.data_ptr<int32_t>();
  p.t = t.data_ptr();
  p.p = p_intra.data_ptr();
  p.scales = scales.data_ptr<float>();
  p.eps = static_cast<float>(eps);
  p.tokens = static_cast<int>(tokens);
  p.channels = static_cast<int>(channels);
  p.key_heads = static_cast<int>(key_heads);
  p.value_heads = static_cast<int>(value_heads);
  p.seqs = static_cast<int>(seqs);
  p.num_slots = static_cast<int>(num_slots);
  p.max_chunks = static_cast<int>(std::min<int64_t>((max_seqlen + kChunk - 1) / kChunk, 65535));
  run_gdn_prefill(p, portable, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
