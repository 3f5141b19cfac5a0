// Gated GQA attention for prefill (head dim 256): causal flash attention of a varlen batch's new tokens over each
// sequence's slot of the KV cache (a prefix already there is attended too: chunked prefill), the sigmoid output
// gate in the epilogue. A CTA per (128 query tokens, query head, sequence); 8 warps of 16 query rows; keys and
// values through shared memory in 64-key stages, 32 on sm80 (see attention_prefill.cu). Launched chained
// (common/chain.cuh) after the pre-pass: nothing is read before the await.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "attention/attention_args.h"

namespace qwen3next {

// Sequence s's new tokens are rows [cu_seqlens[s], cu_seqlens[s + 1]) of q; token i sits at L - T + i.
struct AttentionPrefillParams : AttentionArgs {
  const int32_t* cu_seqlens;  // [S + 1]
  int seqs;
  int max_seqlen;  // new tokens of the longest sequence, >= 1 (a grid hint: CTAs stride over more)
};

// Both kernels' grid: (query head, tile of rows_per_cta query rows, sequence), heads fastest. Blocks start in linear
// order, so every head's longest (causal: last) tile goes first and the short ones fill the last wave (at 4K tokens
// ~20% less than the head-by-head order on 132 SMs, by a list-scheduling count); a block takes tile
// (tiles - 1 - blockIdx.y) and strides by gridDim.y over a sequence longer than the max_seqlen hint.
inline dim3 attention_prefill_grid(const AttentionPrefillParams& p, int rows_per_cta) {
  return dim3(p.query_heads, std::min((p.max_seqlen + rows_per_cta - 1) / rows_per_cta, 65535), p.seqs);
}

// Dispatches: the wgmma kernel on an sm90 GPU in a build with 90a (attention_prefill_sm90.cu) unless `portable`,
// else the mma.sync one (attention_prefill.cu).
void run_attention_prefill(const AttentionPrefillParams& params, bool portable, cudaStream_t stream);
void run_attention_prefill_sm90(const AttentionPrefillParams& params, cudaStream_t stream);

}  // namespace qwen3next
