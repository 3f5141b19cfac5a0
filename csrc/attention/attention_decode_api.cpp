#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <initializer_list>

#include "attention/attention_decode.h"
#include "common/checks.h"

namespace qwen3next {

namespace {
constexpr int64_t kHeadDim = 256, kMaxRows = 64, kKeysPerStage = 64, kMaxSplits = 128;

int multiprocessors(int device) {
  int count = 0;
  cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  return std::max(count, 1);
}
}  // namespace

void attention_decode(at::Tensor& out, const at::Tensor& q, const at::Tensor& gate, const at::Tensor& key_cache,
                      const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& context_lens,
                      double scale, int64_t max_context) {
  QN_CHECK_CUDA(q);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &gate, &key_cache, &value_cache, &slots,
                                                                       &context_lens}) {
    TORCH_CHECK(t->device() == q.device(), "attention_decode: all tensors must be on ", q.device(), ", got one on ",
                t->device());
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &q, &gate, &key_cache, &value_cache}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "attention_decode: out, q, gate and the caches must be bfloat16, "
                "got ", t->scalar_type());
  }
  QN_CHECK_DTYPE(slots, at::kInt);
  QN_CHECK_DTYPE(context_lens, at::kInt);
  TORCH_CHECK(key_cache.dim() == 4 && key_cache.size(3) == kHeadDim, "attention_decode: key_cache must be [slots, "
              "max_len, kv_heads, ", kHeadDim, "], got ", key_cache.sizes());
  TORCH_CHECK(value_cache.sizes() == key_cache.sizes(), "attention_decode: value_cache must match key_cache's shape ",
              key_cache.sizes(), ", got ", value_cache.sizes());
  const int64_t num_slots = key_cache.size(0), max_len = key_cache.size(1), kv_heads = key_cache.size(2);
  TORCH_CHECK(q.dim() == 3 && q.size(2) == kHeadDim && q.size(1) % kv_heads == 0 && q.size(1) > 0,
              "attention_decode: q must be [tokens, query_heads (a multiple of ", kv_heads, "), ", kHeadDim,
              "], got ", q.sizes());
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) > 0, "attention_decode: slots must be [batch], got ", slots.sizes());
  const int64_t batch = slots.size(0), query_heads = q.size(1);
  TORCH_CHECK(q.size(0) % batch == 0, "attention_decode: q's ", q.size(0), " tokens are not the same number for each "
              "of the ", batch, " sequences");
  const int64_t tokens = q.size(0) / batch, rows = query_heads / kv_heads * tokens;
  TORCH_CHECK(rows <= kMaxRows, "attention_decode: at most ", kMaxRows, " query rows per KV head (query heads per KV "
              "head x tokens per sequence), got ", rows);
  QN_CHECK_SHAPE(context_lens, batch);
  QN_CHECK_SHAPE(out, q.size(0), query_heads * kHeadDim);
  TORCH_CHECK(gate.sizes() == q.sizes(), "attention_decode: gate must have q's shape ", q.sizes(), ", got ",
              gate.sizes());
  QN_CHECK_CONTIGUOUS(q);
  QN_CHECK_CONTIGUOUS(out);
  QN_CHECK_CONTIGUOUS(key_cache);
  QN_CHECK_CONTIGUOUS(value_cache);
  QN_CHECK_CONTIGUOUS(slots);
  QN_CHECK_CONTIGUOUS(context_lens);
  QN_CHECK_LAST_DIM_CONTIGUOUS(gate);
  TORCH_CHECK(vector_aligned(q) && vector_aligned(key_cache) && vector_aligned(value_cache),
              "attention_decode: q and the caches must start on 16-byte boundaries");
  TORCH_CHECK(scale > 0, "attention_decode: scale must be positive, got ", scale);
  TORCH_CHECK(max_context >= 1, "attention_decode: max_context must be >= 1, got ", max_context);
  TORCH_CHECK(num_slots * max_len * kv_heads < (int64_t(1) << 31), "attention_decode: at most 2^31 cached rows");

  const c10::cuda::OptionalCUDAGuard guard(q.device());
  // Splits: about two CTAs per SM over the batch and KV heads, each with at least a stage of keys.
  const int64_t context = std::min(max_context, max_len);
  const int64_t wanted = (2 * multiprocessors(q.get_device()) + batch * kv_heads - 1) / (batch * kv_heads);
  const int64_t splits = std::clamp(std::min(wanted, (context + kKeysPerStage - 1) / kKeysPerStage), int64_t(1),
                                    kMaxSplits);
  const auto fp32 = q.options().dtype(at::kFloat);
  const at::Tensor partial_out = at::empty({batch, kv_heads, splits, rows, kHeadDim}, fp32);
  const at::Tensor partial_max = at::empty({batch, kv_heads, splits, rows}, fp32);
  const at::Tensor partial_sum = at::empty({batch, kv_heads, splits, rows}, fp32);

  AttentionDecodeParams p{};
  p.q = q.data_ptr();
  p.gate = gate.data_ptr();
  p.gate_row_stride = gate.stride(0);
  p.gate_head_stride = gate.stride(1);
  p.key_cache = key_cache.data_ptr();
  p.value_cache = value_cache.data_ptr();
  p.slots = slots.data_ptr<int32_t>();
  p.context_lens = context_lens.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.partial_out = partial_out.data_ptr<float>();
  p.partial_max = partial_max.data_ptr<float>();
  p.partial_sum = partial_sum.data_ptr<float>();
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.batch = static_cast<int>(batch);
  p.tokens = static_cast<int>(tokens);
  p.query_heads = static_cast<int>(query_heads);
  p.kv_heads = static_cast<int>(kv_heads);
  p.num_slots = static_cast<int>(num_slots);
  p.max_len = static_cast<int>(max_len);
  p.splits = static_cast<int>(splits);
  run_attention_decode(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
