#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "common/chain.cuh"
#include "common/launch.h"
#include "common/vec.cuh"
#include "conv/causal_conv1d.h"

namespace qwen3next {
namespace {

constexpr int kWidth = 4;  // taps
constexpr int kVec = 8;  // channels per thread: one 16-byte vector of a 16-bit dtype
constexpr int kTokens = 8;  // tokens per thread: its rows and the window before them load at once (the
                            // window's rows are a neighbour's too: L2 hits)
constexpr int kThreads = 128;
constexpr int kMinBlocks = 4;  // per SM: caps registers at 128 (no spills) for 11 rows in flight per thread

constexpr float kLog2e = 1.4426950408889634f;

// The kernel is bound by its instructions (H100: 66 µs at 4096 tokens with a fast SiLU, 87 with the exact one), so
// the weights carry SiLU's factor -log2(e): z = -log2(e) acc, and
//   silu(acc) = acc / (1 + 2^z) = z / (-log2(e) (1 + 2^z))
// in 5 instructions by approximate ex2 and reciprocal, ftz for no denormal fix-ups: a denormal 2^z (acc > 87) is 0
// and the quotient acc; an infinite one (acc < -88) makes the quotient 0, silu's value to fp32.
__device__ __forceinline__ float silu_of_scaled(float z) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(fmaf(e, -kLog2e, -kLog2e)));
  return z * r;
}

// Element v of a row's kVec held as raw words, as a float: a bf16 is the top half of its float, one shift or mask
// (vec.cuh's element_of + to_float take two instructions for an upper half).
template <typename T>
__device__ __forceinline__ float element_float(const unsigned (&words)[kVec / 2], int v) {
  const unsigned w = words[v / 2];
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float(v % 2 ? w & 0xffff0000u : w << 16);
  } else {
    return to_float(element_of<T>(w, v % 2));
  }
}

// Input row pos of sequence [start, ...) at channels c..c+7: x itself, or the slot's conv state before start (one
// load from either address).
template <typename T>
__device__ __forceinline__ void load_history(float (&v)[kVec], const CausalConv1dParams& p, int pos, int start,
                                             int slot, int c) {
  const T* const src =
      pos >= start ? static_cast<const T*>(p.x) + pos * p.x_row_stride + c
                   : static_cast<const T*>(p.conv_state) +
                         (int64_t(slot) * (kWidth - 1) + pos - start + kWidth - 1) * p.channels + c;
  unsigned words[kVec / 2];
  load_words(words, src);
#pragma unroll
  for (int i = 0; i < kVec; ++i) v[i] = element_float<T>(words, i);
}

__device__ __forceinline__ int valid_slot(const CausalConv1dParams& p, int seq) {
  const int slot = p.slots[seq];
  return slot >= 0 && slot < p.num_slots ? slot : -1;
}

// The outputs of a thread's tokens [t_begin, t_end) from its rows (raw words) and the weights (times -log2(e)), the
// sequence of t_begin given. kOneSequence: the tokens are known to be one sequence's with a valid slot, the common
// case, so the checks for sequence boundaries and the window reloads at them drop out (and with them a copy of
// the window per token, which the reloads' control flow costs).
template <typename T, bool kOneSequence>
__device__ __forceinline__ void convolve(const CausalConv1dParams& p, const unsigned (&rows)[kTokens][kVec / 2],
                                         const float (&w)[kWidth][kVec], int c, int t_begin, int t_end, int seq,
                                         int start, int end, int slot) {
  float window[kWidth - 1][kVec];
  bool fresh = true;  // the window must be (re)loaded for the current token
  if (kOneSequence || (t_begin >= start && t_begin < end && slot >= 0)) {
#pragma unroll
    for (int j = 0; j < kWidth - 1; ++j) load_history<T>(window[j], p, t_begin - (kWidth - 1) + j, start, slot, c);
    fresh = false;
  }
  T* const out = static_cast<T*>(p.out) + t_begin * p.out_row_stride + c;
#pragma unroll
  for (int i = 0; i < kTokens; ++i) {
    const int t = t_begin + i;
    if (t >= t_end) break;
    if constexpr (!kOneSequence) {
      while (t >= end && seq + 1 < p.seqs) {  // empty sequences are passed over
        ++seq;
        start = end;
        end = p.cu_seqlens[seq + 1];
        slot = valid_slot(p, seq);
        fresh = true;
      }
      if (t < start || t >= end || slot < 0) continue;  // padding, or cu_seqlens not covering t
      if (fresh) {
#pragma unroll
        for (int j = 0; j < kWidth - 1; ++j) load_history<T>(window[j], p, t - (kWidth - 1) + j, start, slot, c);
        fresh = false;
      }
    }
    float x[kVec], y[kVec];
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      x[v] = element_float<T>(rows[i], v);
      float z = w[kWidth - 1][v] * x[v];
#pragma unroll
      for (int j = 0; j < kWidth - 1; ++j) z += w[j][v] * window[j][v];
      y[v] = silu_of_scaled(z);
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

// Thread: kVec channels x kTokens tokens of the flattened batch, crossing sequence boundaries as it goes.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks) causal_conv1d_varlen_kernel(const CausalConv1dParams p) {
  const int c = (blockIdx.x * kThreads + threadIdx.x) * kVec;
  if (c >= p.channels) return;
  const int t_begin = blockIdx.y * kTokens, t_end = min(t_begin + kTokens, p.tokens);

  // The taps are weights: loaded while the kernel before still runs (common/chain.cuh), raw, channel-major
  // ([c][j]); turned into floats once the rows are in flight.
  unsigned taps[kWidth][kVec / 2];
#pragma unroll
  for (int k = 0; k < kWidth; ++k) load_words(taps[k], static_cast<const T*>(p.weight) + int64_t(c) * kWidth + k * kVec);
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
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) {
      const int e = i * kWidth + j;
      w[j][i] = element_float<T>(taps[e / kVec], e % kVec) * -kLog2e;
    }
  }

  if (t_begin >= start && t_end <= end && slot >= 0) {  // the same for the whole block
    convolve<T, true>(p, rows, w, c, t_begin, t_end, lo, start, end, slot);
  } else {
    convolve<T, false>(p, rows, w, c, t_begin, t_end, lo, start, end, slot);
  }
}

// Thread: kVec channels of one sequence's new conv state, the last kWidth - 1 inputs (old state rows too
// when the sequence is shorter). Runs after the outputs, which read the old state.
template <typename T>
__global__ void __launch_bounds__(kThreads) conv_state_update_kernel(const CausalConv1dParams p) {
  await_previous_kernel();  // the outputs' reads of the old state
  const int c = (blockIdx.x * kThreads + threadIdx.x) * kVec, seq = blockIdx.y;
  if (c >= p.channels) return;
  const int slot = valid_slot(p, seq);
  if (slot < 0) return;
  const int start = p.cu_seqlens[seq], end = max(p.cu_seqlens[seq + 1], start);
  float last[kWidth - 1][kVec];
#pragma unroll
  for (int j = 0; j < kWidth - 1; ++j) load_history<T>(last[j], p, end - (kWidth - 1) + j, start, slot, c);
  T* state = static_cast<T*>(p.conv_state) + int64_t(slot) * (kWidth - 1) * p.channels + c;
#pragma unroll
  for (int j = 0; j < kWidth - 1; ++j) store_float(state + j * p.channels, last[j]);
}

}  // namespace

template <typename T>
void run_causal_conv1d_varlen(const CausalConv1dParams& p, cudaStream_t stream) {
  const int channel_blocks = (p.channels / kVec + kThreads - 1) / kThreads;
  constexpr int kMaxGridY = 65535;  // token blocks and sequences go on grid.y
  TORCH_CHECK(p.tokens <= int64_t(kMaxGridY) * kTokens, "causal_conv1d_varlen: at most ", kMaxGridY * kTokens,
              " tokens per call, got ", p.tokens);
  TORCH_CHECK(p.seqs <= kMaxGridY, "causal_conv1d_varlen: at most ", kMaxGridY, " sequences per call, got ", p.seqs);
  if (p.tokens > 0) {
    launch_chained(causal_conv1d_varlen_kernel<T>, dim3(channel_blocks, (p.tokens + kTokens - 1) / kTokens), kThreads,
                   0, stream, p);
  }
  launch_chained(conv_state_update_kernel<T>, dim3(channel_blocks, p.seqs), kThreads, 0, stream, p);
}

template void run_causal_conv1d_varlen<__half>(const CausalConv1dParams&, cudaStream_t);
template void run_causal_conv1d_varlen<__nv_bfloat16>(const CausalConv1dParams&, cudaStream_t);

}  // namespace qwen3next
