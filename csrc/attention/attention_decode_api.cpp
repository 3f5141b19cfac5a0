#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "attention/attention_checks.h"
#include "attention/attention_decode.h"
#include "common/device.h"
#include "common/workspace.h"

namespace qwen3next {

namespace {
constexpr int64_t kHeadDim = 256, kMaxRows = 64, kMaxSplits = 256;

}  // namespace

bool attention_decode_fits(int64_t device, int64_t rows) {
  TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(), "attention_decode_fits: no CUDA device ", device);
  return rows >= 1 && rows <= kMaxRows &&
         attention_decode_shared_bytes(static_cast<int>(rows)) <=
             device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(static_cast<int>(device));
}

void attention_decode(at::Tensor& out, const at::Tensor& q, const at::Tensor& gate, const at::Tensor& key_cache,
                      const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& context_lens,
                      double scale, int64_t max_context) {
  const AttentionLayout l = check_attention_args("attention_decode", out, q, gate, key_cache, value_cache, slots,
                                                 context_lens, scale);
  const int64_t batch = l.seqs, kv_heads = l.kv_heads, query_heads = l.query_heads;
  TORCH_CHECK(l.tokens % batch == 0, "attention_decode: q's ", l.tokens, " tokens are not the same number for each "
              "of the ", batch, " sequences");
  const int64_t tokens = l.tokens / batch, rows = query_heads / kv_heads * tokens;
  TORCH_CHECK(rows <= kMaxRows, "attention_decode: at most ", kMaxRows, " query rows per KV head (query heads per KV "
              "head x tokens per sequence), got ", rows);
  TORCH_CHECK(max_context >= 1, "attention_decode: max_context must be >= 1, got ", max_context);
  if (l.tokens == 0) return;

  const c10::cuda::OptionalCUDAGuard guard(q.device());
  // Splits: one wave (a split CTA fills an SM's shared memory) over the batch and KV heads, each split with at
  // least a stage of keys; at most kMaxSplits, one per thread of the reduce. A split's keys are whole stages (the
  // kernel rounds them up), so as many splits as have keys at that length: 32768 keys over 66 splits are 64 of 512
  // (two would be empty), and 64 splits are one round of the reduce's loads.
  const int64_t context = std::min(max_context, l.max_len);
  const int64_t wanted = device_attribute<cudaDevAttrMultiProcessorCount>(q.get_device()) / (batch * kv_heads);
  const int64_t stages = (context + kAttentionDecodeStageKeys - 1) / kAttentionDecodeStageKeys;
  const int64_t most = std::clamp(std::min(wanted, stages), int64_t(1), kMaxSplits);
  const int64_t split_keys = attention_decode_split_keys(static_cast<int>(context), static_cast<int>(most));
  const int64_t splits = (context + split_keys - 1) / split_keys;
  // The splits' partial results: one buffer (stream-ordered, so the op stays capturable) carved into three.
  const int64_t partial_rows = batch * kv_heads * splits * rows;
  const int64_t bytes = carved_bytes<float>(partial_rows * kHeadDim) + 2 * carved_bytes<float>(partial_rows);
  const at::Tensor workspace = at::empty({bytes}, q.options().dtype(at::kByte));
  uint8_t* cursor = workspace.data_ptr<uint8_t>();

  AttentionDecodeParams p{};
  static_cast<AttentionArgs&>(p) = attention_args(l, out, q, gate, key_cache, value_cache, slots, context_lens, scale);
  p.partial_out = carve<float>(cursor, partial_rows * kHeadDim);
  p.partial_max = carve<float>(cursor, partial_rows);
  p.partial_sum = carve<float>(cursor, partial_rows);
  p.batch = static_cast<int>(batch);
  p.tokens = static_cast<int>(tokens);
  p.splits = static_cast<int>(splits);
  run_attention_decode(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
