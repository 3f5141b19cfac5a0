// The arguments every attention kernel over the KV cache takes (the decode and prefill params extend them).
#pragma once

#include <cstdint>

namespace qwen3next {

struct AttentionArgs {
  const void* q;  // [N, Hq, 256] bf16, contiguous
  const void* gate;  // [N, Hq, 256] bf16 (strided rows and heads): out is multiplied by sigmoid(gate)
  int64_t gate_row_stride, gate_head_stride;
  const void* key_cache;  // [slots, max_len, Hkv, 256] bf16, the new tokens' keys and values already written
  const void* value_cache;
  const int32_t* slots;  // [S]; outside [0, num_slots): padding, skipped (its rows of out untouched)
  const int32_t* context_lens;  // [S]: each sequence's tokens, the new ones included
  void* out;  // [N, Hq * 256] bf16
  float scale_log2;  // softmax scale * log2(e)
  int query_heads, kv_heads, num_slots, max_len;
};

}  // namespace qwen3next
