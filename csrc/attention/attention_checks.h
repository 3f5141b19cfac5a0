// Argument checks the attention ops share (each message names the op and the argument).
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>

#include "attention/attention_args.h"
#include "common/checks.h"

namespace qwen3next {

struct AttentionLayout {
  int64_t num_slots, max_len, kv_heads, tokens, query_heads, seqs;
};

// out [N, Hq * 256], q [N, Hq, 256] contiguous, gate of q's shape (strided rows and heads), key/value_cache
// [S, max_len, Hkv, 256] contiguous, all bf16 on q's device; slots and context_lens [seqs] int32; scale > 0.
inline AttentionLayout check_attention_args(const char* op, const at::Tensor& out, const at::Tensor& q,
                                            const at::Tensor& gate, const at::Tensor& key_cache,
                                            const at::Tensor& value_cache, const at::Tensor& slots,
                                            const at::Tensor& context_lens, double scale) {
  constexpr int64_t kHeadDim = 256;
  TORCH_CHECK(q.is_cuda(), op, ": q must be a CUDA tensor, got ", q.device());
  for (const at::Tensor* t : {&out, &gate, &key_cache, &value_cache, &slots, &context_lens}) {
    TORCH_CHECK(t->device() == q.device(), op, ": all tensors must be on ", q.device(), ", got one on ", t->device());
  }
  for (const at::Tensor* t : {&out, &q, &gate, &key_cache, &value_cache}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, op, ": out, q, gate and the caches must be bfloat16, got ",
                t->scalar_type());
  }
  TORCH_CHECK(slots.scalar_type() == at::kInt && context_lens.scalar_type() == at::kInt, op,
              ": slots and context_lens must be int32");
  TORCH_CHECK(key_cache.dim() == 4 && key_cache.size(3) == kHeadDim, op, ": key_cache must be [slots, max_len, "
              "kv_heads, ", kHeadDim, "], got ", key_cache.sizes());
  TORCH_CHECK(value_cache.sizes() == key_cache.sizes(), op, ": value_cache must match key_cache's shape ",
              key_cache.sizes(), ", got ", value_cache.sizes());
  AttentionLayout l{key_cache.size(0), key_cache.size(1), key_cache.size(2), 0, 0, 0};
  TORCH_CHECK(l.kv_heads > 0, op, ": key_cache must have at least one KV head, got ", key_cache.sizes());
  TORCH_CHECK(q.dim() == 3 && q.size(2) == kHeadDim && q.size(1) % l.kv_heads == 0 && q.size(1) > 0, op,
              ": q must be [tokens, query_heads (a multiple of ", l.kv_heads, "), ", kHeadDim, "], got ", q.sizes());
  l.tokens = q.size(0);
  l.query_heads = q.size(1);
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) > 0, op, ": slots must be [seqs], got ", slots.sizes());
  l.seqs = slots.size(0);
  TORCH_CHECK(context_lens.dim() == 1 && context_lens.size(0) == l.seqs, op, ": context_lens must be [", l.seqs,
              "], got ", context_lens.sizes());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == l.tokens && out.size(1) == l.query_heads * kHeadDim, op,
              ": out must be [", l.tokens, ", ", l.query_heads * kHeadDim, "], got ", out.sizes());
  TORCH_CHECK(gate.sizes() == q.sizes() && gate.stride(2) == 1, op, ": gate must have q's shape ", q.sizes(),
              " with contiguous rows of a head, got ", gate.sizes());
  // The kernels move the gate two elements (4 bytes) at a time.
  TORCH_CHECK(reinterpret_cast<uintptr_t>(gate.data_ptr()) % 4 == 0 && gate.stride(0) % 2 == 0 &&
                  gate.stride(1) % 2 == 0,
              op, ": gate must start on a 4-byte boundary with even row and head strides");
  for (const at::Tensor* t : {&q, &out, &key_cache, &value_cache, &slots, &context_lens}) {
    TORCH_CHECK(t->is_contiguous(), op, ": q, out, the caches, slots and context_lens must be contiguous");
  }
  TORCH_CHECK(vector_aligned(q) && vector_aligned(out) && vector_aligned(key_cache) && vector_aligned(value_cache), op,
              ": q, out and the caches must start on 16-byte boundaries");
  TORCH_CHECK(scale > 0, op, ": scale must be positive, got ", scale);
  TORCH_CHECK(l.num_slots * l.max_len * l.kv_heads < (int64_t(1) << 31), op, ": at most 2^31 cached rows");
  return l;
}

// The shared arguments of checked tensors (see check_attention_args).
inline AttentionArgs attention_args(const AttentionLayout& l, at::Tensor& out, const at::Tensor& q,
                                    const at::Tensor& gate, const at::Tensor& key_cache, const at::Tensor& value_cache,
                                    const at::Tensor& slots, const at::Tensor& context_lens, double scale) {
  AttentionArgs a{};
  a.q = q.data_ptr();
  a.gate = gate.data_ptr();
  a.gate_row_stride = gate.stride(0);
  a.gate_head_stride = gate.stride(1);
  a.key_cache = key_cache.data_ptr();
  a.value_cache = value_cache.data_ptr();
  a.slots = slots.data_ptr<int32_t>();
  a.context_lens = context_lens.data_ptr<int32_t>();
  a.out = out.data_ptr();
  a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);  // log2(e)
  a.query_heads = static_cast<int>(l.query_heads);
  a.kv_heads = static_cast<int>(l.kv_heads);
  a.num_slots = static_cast<int>(l.num_slots);
  a.max_len = static_cast<int>(l.max_len);
  return a;
}

}  // namespace qwen3next
