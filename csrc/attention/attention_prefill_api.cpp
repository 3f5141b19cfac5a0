#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "attention/attention_checks.h"
#include "attention/attention_prefill.h"

namespace qwen3next {

void attention_prefill(at::Tensor& out, const at::Tensor& q, const at::Tensor& gate, const at::Tensor& key_cache,
                       const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& cu_seqlens,
                       const at::Tensor& context_lens, double scale, int64_t max_seqlen, bool portable) {
  const AttentionLayout l = check_attention_args("attention_prefill", out, q, gate, key_cache, value_cache, slots,
                                                 context_lens, scale);
  TORCH_CHECK(cu_seqlens.device() == q.device() && cu_seqlens.scalar_type() == at::kInt && cu_seqlens.dim() == 1 &&
                  cu_seqlens.size(0) == l.seqs + 1 && cu_seqlens.is_contiguous(),
              "attention_prefill: cu_seqlens must be a contiguous int32 [", l.seqs + 1, "] on ", q.device());
  TORCH_CHECK(max_seqlen >= 0, "attention_prefill: max_seqlen must be >= 0, got ", max_seqlen);
  TORCH_CHECK(l.tokens < (int64_t(1) << 31) / l.query_heads, "attention_prefill: too many tokens");
  if (l.tokens == 0) return;

  AttentionPrefillParams p{};
  static_cast<AttentionArgs&>(p) = attention_args(l, out, q, gate, key_cache, value_cache, slots, context_lens, scale);
  p.cu_seqlens = cu_seqlens.data_ptr<int32_t>();
  p.seqs = static_cast<int>(l.seqs);
  p.max_seqlen = static_cast<int>(std::clamp<int64_t>(max_seqlen, 1, l.tokens));
  const c10::cuda::OptionalCUDAGuard guard(q.device());
  run_attention_prefill(p, portable, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
