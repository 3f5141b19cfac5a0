#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/launch.h"
#include "common/vec.cuh"
#include "conv/causal_conv1d.h"

namespace qwen3next {
namespace {

constexpr int kWidth = 4;  // taps
constexpr int kVec = 8;  // channels per thread: one 16-byte vector of a 16-bit dtype
constexpr int kChunk = 32;  // tokens per thread: the window's 3 extra rows per chunk come from L2
constexpr int kBatch = 8;  // rows loaded before the first is used
constexpr int kThreads = 128;

// Input row p of sequence [start, end) at channels c..c+7: x itself, or the slot's conv state before start.
template <typename T>
__device__ __forceinline__ void load_history(float (&v)[kVec], const CausalConv1dParams& p, int pos, int start,
                                             int slot, int c) {
  if (pos >= start) {
    load_float(v, static_cast<const T*>(p.x) + pos * p.x_row_stride + c);
  } else {
    load_float(v, static_cast<const T*>(p.conv_state) + (int64_t(slot) * (kWidth - 1) + pos - start + kWidth - 1) *
                                                            p.channels + c);
  }
}

__device__ __forceinline__ int valid_slot(const CausalConv1dParams& p, int seq) {
  const int slot = p.slots[seq];
  return slot >= 0 && slot < p.num_slots ? slot : -1;
}

// Thread: kVec channels x kChunk tokens of the flattened batch, crossing sequence boundaries as it goes.
template <typename T>
__global__ void __launch_bounds__(kThreads) causal_conv1d_varlen_kernel(const CausalConv1dParams p) {
  const int c = (blockIdx.x * kThreads + threadIdx.x) * kVec;
  if (c >= p.channels) return;
  const int t_begin = blockIdx.y * kChunk, t_end = min(t_begin + kChunk, p.tokens);

  float w[kWidth][kVec];
  {
    float taps[kWidth * kVec];  // channel-major: [c][j]
    load_float(taps, static_cast<const T*>(p.weight) + int64_t(c) * kWidth);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
#pragma unroll
      for (int j = 0; j < kWidth; ++j) w[j][i] = taps[i * kWidth + j];
    }
  }
  // The sequence holding t_begin: the last s with cu_seqlens[s] <= t_begin.
  int lo = 0, hi = p.seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= t_begin) lo = mid; else hi = mid - 1;
  }
  int seq = lo, start = p.cu_seqlens[seq], end = p.cu_seqlens[seq + 1], slot = valid_slot(p, seq);
  bool fresh = true;  // the window must be (re)loaded for the current token
  float window[kWidth - 1][kVec];

  for (int base = t_begin; base < t_end; base += kBatch) {
    float rows[kBatch][kVec];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      if (base + i < t_end) load_float(rows[i], static_cast<const T*>(p.x) + (base + i) * p.x_row_stride + c);
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int t = base + i;
      if (t >= t_end) break;
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
      float y[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        float acc = w[kWidth - 1][v] * rows[i][v];
#pragma unroll
        for (int j = 0; j < kWidth - 1; ++j) acc += w[j][v] * window[j][v];
        y[v] = silu(acc);
      }
      store_float(static_cast<T*>(p.out) + t * p.out_row_stride + c, y);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
#pragma unroll
        for (int j = 0; j < kWidth - 2; ++j) window[j][v] = window[j + 1][v];
        window[kWidth - 2][v] = rows[i][v];
      }
    }
  }
}

// Thread: kVec channels of one sequence's new conv state, the last kWidth - 1 inputs (old state rows too
// when the sequence is shorter). Runs after the outputs, which read the old state.
template <typename T>
__global__ void __launch_bounds__(kThreads) conv_state_update_kernel(const CausalConv1dParams p) {
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
  if (p.tokens > 0) {
    causal_conv1d_varlen_kernel<T><<<dim3(channel_blocks, (p.tokens + kChunk - 1) / kChunk), kThreads, 0, stream>>>(p);
    QN_CHECK_LAUNCH();
  }
  conv_state_update_kernel<T><<<dim3(channel_blocks, p.seqs), kThreads, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
}

template void run_causal_conv1d_varlen<__half>(const CausalConv1dParams&, cudaStream_t);
template void run_causal_conv1d_varlen<__nv_bfloat16>(const CausalConv1dParams&, cudaStream_t);

}  // namespace qwen3next
