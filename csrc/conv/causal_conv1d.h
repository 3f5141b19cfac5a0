// Causal depthwise conv1d + SiLU over a varlen batch of prompts (prefill), with the conv state of each
// sequence's cache slot as its history. Layouts: python/qwen3next_cuda/cache.py.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct CausalConv1dParams {
  const void* x;  // [tokens, >= channels] rows (a slice of the in_proj output), channels contiguous
  int64_t x_row_stride;
  void* out;  // [tokens, channels] rows
  int64_t out_row_stride;
  const void* weight;  // [channels, kWidth]
  void* conv_state;  // [num_slots, kWidth - 1, channels]: the inputs before each sequence, oldest first
  const int32_t* cu_seqlens;  // [seqs + 1]: sequence s is tokens [cu_seqlens[s], cu_seqlens[s + 1])
  const int32_t* slots;  // [seqs]; outside [0, num_slots): padding, skipped
  int tokens, channels, seqs, num_slots;
};

// One launch on `stream`: the outputs, and each sequence's new conv state written by the thread that read its old one.
template <typename T>
void run_causal_conv1d_varlen(const CausalConv1dParams& params, cudaStream_t stream);

}  // namespace qwen3next
