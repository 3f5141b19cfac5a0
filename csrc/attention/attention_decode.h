// Gated GQA attention for decode: T = 1..8 new query tokens per sequence over its slot of the KV cache, split
// over the context (flash-decoding), the splits' reduction fused with the sigmoid output gate. Two launches, no
// host sync (each sequence's length is read on the device):
//   split   (split, KV head, sequence)   the head group's 8 x T query rows against the split's keys, on tensor
//                                         cores with an online softmax -> unnormalised O, row max and row sum
//   reduce  (token, query head)          out = sum_s O_s e^(m_s - m) / sum_s l_s e^(m_s - m) * sigmoid(gate)
// Query token t of a sequence with context length L sits at position L - T + t and sees keys 0 .. L - T + t.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_args.h"

namespace qwen3next {

constexpr int kAttentionDecodeStageKeys = 64;  // keys per stage of the split kernel

// The keys of each split when `context` keys go over `splits`: whole stages (a split's last may be short, and
// splits past the context get none). The kernel's rule, which the host sizes the split count by.
__host__ __device__ inline int attention_decode_split_keys(int context, int splits) {
  constexpr int kStage = kAttentionDecodeStageKeys;
  return ((context + splits - 1) / splits + kStage - 1) / kStage * kStage;
}

// Sequence b's T = N / B new tokens are rows b * T .. b * T + T - 1 of q.
struct AttentionDecodeParams : AttentionArgs {
  float* partial_out;  // [B, Hkv, splits, rows, 256] fp32, rows = 8 * T
  float* partial_max;  // [B, Hkv, splits, rows]: row max of the scores (log2 units, scaled)
  float* partial_sum;  // [B, Hkv, splits, rows]
  int batch, tokens, splits;
};

void run_attention_decode(const AttentionDecodeParams& params, cudaStream_t stream);

// The shared memory the split kernel needs at least (two stages) for `rows` query rows per KV head.
int attention_decode_shared_bytes(int rows);

}  // namespace qwen3next
