#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/chain.cuh"
#include "common/launch.h"
#include "common/vec.cuh"
#include "conv/causal_conv1d.h"
#include "conv/conv_math.cuh"

namespace qwen3next {
namespace {

using conv::element_float;
using conv::kWidth;
constexpr int kVec = 8;  // channels per thread: one 16-byte vector of a 16-bit dtype
constexpr int kTokens = 8;  // tokens per thread: its rows and the window before them load at once (the
                            // window's rows are a neighbour's too: L2 hits)
constexpr int kThreads = 128;
constexpr int kMinBlocks = 4;  // per SM: caps registers at 128 (no spills) for 11 rows in flight per thread

// Input row pos of sequence [start, ...) at channels c..c+7 (one load from either address: conv::conv_input).
template <typename T>
__device__ __forceinline__ void load_history(float (&v)[kVec], const CausalConv1dParams& p, int pos, int start,
                                             int slot, int c) {
  unsigned words[kVec / 2];
  load_words(words, conv::conv_input(static_cast<const T*>(p.x), p.x_row_stride, static_cast<const T*>(p.conv_state),
                                     p.channels, slot, start, pos, c));
#pragma unroll
  for (int i = 0; i < kVec; ++i) v[i] = element_float<T>(words, i);
}

__device__ __forceinline__ int valid_slot(const CausalConv1dParams& p, int seq) {
  const int slot = p.slots[seq];
  return slot >= 0 && slot < p.num_slots ? slot : -1;
}

// Token t of a sequence [start, end) is computed by the thread of the token block holding t, except the first
// kWidth - 1, whose windows reach into the slot's conv state: those go to the block holding `start`, up to kWidth - 2
// tokens past its own. So one thread per (sequence, channels) reads the old conv state, and it writes the new one
// right after: no other thread reads it, and no second launch has to wait for every output.
__device__ __forceinline__ int owner_block(int t, int start) {
  return (t - start < kWidth - 1 ? start : t) / kTokens;
}

// The sequence's new conv state at channels c..c+7: its last kWidth - 1 inputs (old state rows too when it is
// shorter). By the old state's only reader, after its window load (a thread's loads precede its stores to the same
// address).
template <typename T>
__device__ __forceinline__ void write_conv_state(const CausalConv1dParams& p, int start, int end, int slot, int c) {
  float last[kWidth - 1][kVec];
#pragma unroll
  for (int j = 0; j < kWidth - 1; ++j) load_history<T>(last[j], p, end - (kWidth - 1) + j, start, slot, c);
  T* state = static_cast<T*>(p.conv_state) + int64_t(slot) * (kWidth - 1) * p.channels + c;
#pragma unroll
  for (int j = 0; j < kWidth - 1; ++j) store_float(state + j * p.channels, last[j]);
}

// The outputs of a thread's tokens (above) from its rows (raw words; rows past its block are loaded when needed) and
// the weights (times -log2(e)), the sequence of t_begin given. kOneSequence: the block's tokens are one sequence's,
// all its own, with a valid slot -- the common case, so the checks for sequence boundaries and the window reloads at
// them drop out (and with them a copy of the window per token, which the reloads' control flow costs).
template <typename T, bool kOneSequence>
__device__ __forceinline__ void convolve(const CausalConv1dParams& p, const unsigned (&rows)[kTokens][kVec / 2],
                                         const float (&w)[kWidth][kVec], int c, int t_begin, int t_end, int seq,
                                         int start, int end, int slot) {
  float window[kWidth - 1][kVec];
  const auto load_window = [&](int t) {  // the inputs before t; at a sequence's first token, then its new state
#pragma unroll
    for (int j = 0; j < kWidth - 1; ++j) load_history<T>(window[j], p, t - (kWidth - 1) + j, start, slot, c);
    if (t == start) write_conv_state<T>(p, start, end, slot, c);
  };
  bool fresh = true;  // the window must be (re)loaded for the current token
  if (kOneSequence ||
      (t_begin >= start && t_begin < end && slot >= 0 && owner_block(t_begin, start) == int(blockIdx.y))) {
    load_window(t_begin);
    fresh = false;
  }
  T* const out = static_cast<T*>(p.out) + t_begin * p.out_row_stride + c;
  constexpr int kReach = kOneSequence ? kTokens : kTokens + kWidth - 2;  // its own tokens, then a sequence's first
#pragma unroll
  for (int i = 0; i < kReach; ++i) {
    const int t = t_begin + i;
    if (t >= (i < kTokens ? t_end : p.tokens)) break;
    if constexpr (!kOneSequence) {
      while (t >= end && seq + 1 < p.seqs) {  // empty sequences are passed over
        ++seq;
        start = end;
        end = p.cu_seqlens[seq + 1];
        slot = valid_slot(p, seq);
        fresh = true;
      }
      const bool own = owner_block(t, start) == int(blockIdx.y);
      if (i >= kTokens && !(own && t >= start && t < end)) break;  // past the block: only a sequence's first tokens
      if (t < start || t >= end || slot < 0 || !own) continue;  // padding, cu_seqlens not covering t, or not its own
      if (fresh) {
        load_window(t);
        fresh = false;
      }
    }
    unsigned words[kVec / 2];  // (copies of registers, once unrolled)
    if (i < kTokens) {
#pragma unroll
      for (int v = 0; v < kVec / 2; ++v) words[v] = rows[min(i, kTokens - 1)][v];
    } else {
      load_words(words, static_cast<const T*>(p.x) + t * p.x_row_stride + c);
    }
    float x[kVec], y[kVec];
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      x[v] = element_float<T>(words, v);
      float z = w[kWidth - 1][v] * x[v];
#pragma unroll
      for (int j = 0; j < kWidth - 1; ++j) z += w[j][v] * window[j][v];
      y[v] = conv::silu_of_scaled(z);
    }
    store_float(out + i * p.out_row_stride, y);
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
#pragma unroll
      for (int j = 0; j < kWidth - 2; ++j) window[j][v] = window[j + 1][v];
      window[kWidth - 2][v] = x[v];
    }
  }
}

// Thread: kVec channels x kTokens tokens of the flattened batch (and the first tokens of a sequence starting near
// their end), crossing sequence boundaries as it goes.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks) causal_conv1d_varlen_kernel(const CausalConv1dParams p) {
  const int c = (blockIdx.x * kThreads + threadIdx.x) * kVec;
  if (c >= p.channels) return;
  const int t_begin = blockIdx.y * kTokens, t_end = min(t_begin + kTokens, p.tokens);

  // The taps are weights: loaded while the kernel before still runs (common/chain.cuh), raw, channel-major
  // ([c][j]); turned into floats once the rows are in flight.
  unsigned taps[kWidth][kVec / 2];
  conv::load_taps(taps, static_cast<const T*>(p.weight), c);
  await_previous_kernel();

  // Every load is issued before the first use: the rows as raw words here, the first token's window in convolve.
  unsigned rows[kTokens][kVec / 2];
  const T* x = static_cast<const T*>(p.x) + t_begin * p.x_row_stride + c;
#pragma unroll
  for (int i = 0; i < kTokens; ++i, x += p.x_row_stride) {
    if (t_begin + i < t_end) load_words(rows[i], x);
  }

  // The sequence holding t_begin: the last s with cu_seqlens[s] <= t_begin.
  int lo = 0, hi = p.seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= t_begin) lo = mid; else hi = mid - 1;
  }
  const int start = p.cu_seqlens[lo], end = p.cu_seqlens[lo + 1], slot = valid_slot(p, lo);

  float w[kWidth][kVec];
  conv::scale_taps<T>(w, taps);

  // The same for the whole block: its tokens in one sequence with a slot, none of them the previous block's.
  if (t_begin >= start && t_end <= end && slot >= 0 && (t_begin == start || t_begin - start >= kWidth - 1)) {
    convolve<T, true>(p, rows, w, c, t_begin, t_end, lo, start, end, slot);
  } else {
    convolve<T, false>(p, rows, w, c, t_begin, t_end, lo, start, end, slot);
  }
}

}  // namespace

template <typename T>
void run_causal_conv1d_varlen(const CausalConv1dParams& p, cudaStream_t stream) {
  const int channel_blocks = (p.channels / kVec + kThreads - 1) / kThreads;
  constexpr int kMaxGridY = 65535;  // token blocks go on grid.y
  TORCH_CHECK(p.tokens <= int64_t(kMaxGridY) * kTokens, "causal_conv1d_varlen: at most ", kMaxGridY * kTokens,
              " tokens per call, got ", p.tokens);
  if (p.tokens == 0) return;  // every sequence empty: no state changes
  launch_chained(causal_conv1d_varlen_kernel<T>, dim3(channel_blocks, (p.tokens + kTokens - 1) / kTokens), kThreads, 0,
                 stream, p);
}

template void run_causal_conv1d_varlen<__half>(const CausalConv1dParams&, cudaStream_t);
template void run_causal_conv1d_varlen<__nv_bfloat16>(const CausalConv1dParams&, cudaStream_t);

}  // namespace qwen3next
