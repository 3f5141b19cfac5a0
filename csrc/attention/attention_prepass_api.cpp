#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "attention/attention_prepass.h"
#include "common/checks.h"

namespace qwen3next {

namespace {
constexpr int64_t kHeadDim = 256, kPerLane = 8;  // a warp per head: 8 dims per lane
}  // namespace

void attention_prepass(at::Tensor& q_out, at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& q,
                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& q_norm_weight, const at::Tensor& k_norm_weight, const at::Tensor& slots,
                       const at::Tensor& cu_seqlens, const at::Tensor& context_lens, double eps) {
  QN_CHECK_CUDA(q);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&q_out, &key_cache, &value_cache, &k, &v, &cos,
                                                                       &sin, &q_norm_weight, &k_norm_weight, &slots,
                                                                       &cu_seqlens, &context_lens}) {
    TORCH_CHECK(t->device() == q.device(), "attention_prepass: all tensors must be on ", q.device(), ", got one on ",
                t->device());
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&q_out, &key_cache, &value_cache, &q, &k, &v,
                                                                       &q_norm_weight, &k_norm_weight}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "attention_prepass: q, k, v, the caches and the norm weights must "
                "be bfloat16, got ", t->scalar_type());
  }
  QN_CHECK_DTYPE(cos, at::kFloat);
  QN_CHECK_DTYPE(sin, at::kFloat);
  QN_CHECK_DTYPE(slots, at::kInt);
  QN_CHECK_DTYPE(cu_seqlens, at::kInt);
  QN_CHECK_DTYPE(context_lens, at::kInt);
  TORCH_CHECK(key_cache.dim() == 4 && key_cache.size(3) == kHeadDim, "attention_prepass: key_cache must be [slots, "
              "max_len, kv_heads, ", kHeadDim, "], got ", key_cache.sizes());
  TORCH_CHECK(value_cache.sizes() == key_cache.sizes(), "attention_prepass: value_cache must match key_cache's "
              "shape ", key_cache.sizes(), ", got ", value_cache.sizes());
  const int64_t kv_heads = key_cache.size(2);
  TORCH_CHECK(q.dim() == 3 && q.size(2) == kHeadDim, "attention_prepass: q must be [tokens, heads, ", kHeadDim,
              "], got ", q.sizes());
  const int64_t tokens = q.size(0), query_heads = q.size(1);
  QN_CHECK_SHAPE(k, tokens, kv_heads, kHeadDim);
  QN_CHECK_SHAPE(v, tokens, kv_heads, kHeadDim);
  QN_CHECK_SHAPE(q_out, tokens, query_heads, kHeadDim);
  TORCH_CHECK(cos.dim() == 2 && cos.size(0) == tokens && cos.sizes() == sin.sizes(), "attention_prepass: cos and "
              "sin must be [", tokens, ", rotary_dim], got ", cos.sizes(), " and ", sin.sizes());
  const int64_t rotary_dim = cos.size(1), lanes = rotary_dim / (2 * kPerLane);
  TORCH_CHECK(rotary_dim % (2 * kPerLane) == 0 && rotary_dim <= kHeadDim && (lanes & (lanes - 1)) == 0,
              "attention_prepass: rotary_dim must be 16 x a power of two, at most ", kHeadDim, ", got ", rotary_dim);
  QN_CHECK_SHAPE(q_norm_weight, kHeadDim);
  QN_CHECK_SHAPE(k_norm_weight, kHeadDim);
  TORCH_CHECK(slots.dim() == 1, "attention_prepass: slots must be [seqs], got ", slots.sizes());
  const int64_t seqs = slots.size(0);
  QN_CHECK_SHAPE(cu_seqlens, seqs + 1);
  QN_CHECK_SHAPE(context_lens, seqs);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&q, &k, &v}) {
    TORCH_CHECK(t->stride(2) == 1 && t->stride(1) % kPerLane == 0 && t->stride(0) % kPerLane == 0 &&
                    vector_aligned(*t),
                "attention_prepass: q, k and v must have contiguous heads starting on 16-byte boundaries");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&q_out, &key_cache, &value_cache, &cos, &sin,
                                                                       &q_norm_weight, &k_norm_weight, &slots,
                                                                       &cu_seqlens, &context_lens}) {
    TORCH_CHECK(t->is_contiguous(), "attention_prepass: q_out, the caches, cos, sin, the norm weights, slots, "
                "cu_seqlens and context_lens must be contiguous");
  }
  TORCH_CHECK(vector_aligned(q_out) && vector_aligned(key_cache) && vector_aligned(value_cache) &&
                  vector_aligned(q_norm_weight) && vector_aligned(k_norm_weight),
              "attention_prepass: q_out, the caches and the norm weights must start on 16-byte boundaries");
  TORCH_CHECK(eps > 0, "attention_prepass: eps must be positive, got ", eps);
  TORCH_CHECK(tokens < (int64_t(1) << 31) && key_cache.numel() < (int64_t(1) << 40),
              "attention_prepass: too many tokens");
  if (tokens == 0 || seqs == 0) return;

  AttentionPrepassParams p{};
  p.q = q.data_ptr();
  p.q_row_stride = q.stride(0);
  p.q_head_stride = q.stride(1);
  p.k = k.data_ptr();
  p.k_row_stride = k.stride(0);
  p.k_head_stride = k.stride(1);
  p.v = v.data_ptr();
  p.v_row_stride = v.stride(0);
  p.v_head_stride = v.stride(1);
  p.cos = cos.data_ptr<float>();
  p.sin = sin.data_ptr<float>();
  p.q_norm_weight = q_norm_weight.data_ptr();
  p.k_norm_weight = k_norm_weight.data_ptr();
  p.slots = slots.data_ptr<int32_t>();
  p.cu_seqlens = cu_seqlens.data_ptr<int32_t>();
  p.context_lens = context_lens.data_ptr<int32_t>();
  p.q_out = q_out.data_ptr();
  p.key_cache = key_cache.data_ptr();
  p.value_cache = value_cache.data_ptr();
  p.eps = static_cast<float>(eps);
  p.tokens = static_cast<int>(tokens);
  p.query_heads = static_cast<int>(query_heads);
  p.kv_heads = static_cast<int>(kv_heads);
  p.rotary_dim = static_cast<int>(rotary_dim);
  p.seqs = static_cast<int>(seqs);
  p.num_slots = static_cast<int>(key_cache.size(0));
  p.max_len = static_cast<int>(key_cache.size(1));
  const c10::cuda::OptionalCUDAGuard guard(q.device());
  run_attention_prepass(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
