#pragma once

#include <cooperative_groups.h>

#include "common/vec.cuh"
#include "gdn/gdn_decode.h"

namespace qwen3next {

// One cluster per (sequence, key head): kRatio value heads x kSplits CTAs, each CTA owning kCols value
// rows of one head's state (kCols x 128 fp32, 16 KiB) in registers, kParts threads per row. Splitting a
// head over CTAs puts 128 CTAs on the GPU even for one sequence. The cluster is needed twice: the q/k conv
// channels are shared by all its CTAs (their conv state may be overwritten only after every CTA read it),
// and the gated RMSNorm runs over a whole head (partial sums meet in distributed shared memory).
template <typename T, int kRatio_, int kTokens_>
struct GdnDecodeTraits {
  using Element = T;
  static constexpr int kRatio = kRatio_;  // value heads per key head
  static constexpr int kDim = 128;  // dk = dv
  static constexpr int kSplits = 4;
  static constexpr int kCols = kDim / kSplits;
  static constexpr int kParts = 4;
  static constexpr int kThreads = kCols * kParts;
  static constexpr int kKeyVecs = kDim / kParts / 4;  // float4 of keys per thread
  static constexpr int kClusterSize = kRatio * kSplits;
  static constexpr int kConvWidth = 4;
  static constexpr int kMaxTokens = kTokens_;  // 1 (decode) or 8 (verification: T <= 8 at run time)
  static_assert(kThreads == kDim && kClusterSize <= 8, "one q and one k channel per thread; portable cluster");
};

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }  // torch's threshold

__device__ __forceinline__ float4 load_float4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// One conv channel: its kWidth taps and the inputs of up to kTokens new tokens, loaded together.
template <typename T, int kWidth, int kTokens>
struct ConvChannel {
  float w[kWidth], x[kTokens], window[kWidth - 1];

  __device__ __forceinline__ void load_inputs(const T* qkvz, int64_t token_stride, int num_tokens,
                                              const T* conv_weight, int channel) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) w[j] = to_float(conv_weight[channel * kWidth + j]);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) x[t] = t < num_tokens ? to_float(qkvz[t * token_stride + channel]) : 0.f;
  }
  __device__ __forceinline__ void load_state(const T* conv_state, int channels, int channel) {
#pragma unroll
    for (int j = 0; j < kWidth - 1; ++j) window[j] = to_float(conv_state[j * channels + channel]);
  }
  // y_t = silu(conv) rounded to T (as the unfused model stores it) into out[t * out_stride]; `window` ends
  // as the last kWidth-1 inputs, the channel's new conv state.
  __device__ __forceinline__ void run(int num_tokens, float* out, int out_stride) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= num_tokens) break;
      float acc = w[kWidth - 1] * x[t];
#pragma unroll
      for (int j = 0; j < kWidth - 1; ++j) acc += w[j] * window[j];
#pragma unroll
      for (int j = 0; j < kWidth - 2; ++j) window[j] = window[j + 1];
      window[kWidth - 2] = x[t];
      out[t * out_stride] = round_to<T>(silu(acc));
    }
  }
  __device__ __forceinline__ void store_state(T* conv_state, int channels, int channel) const {
#pragma unroll
    for (int j = 0; j < kWidth - 1; ++j) conv_state[j * channels + channel] = from_float<T>(window[j]);
  }
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads) gdn_decode_kernel(const GdnDecodeParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using T = typename Traits::Element;
  constexpr int kDim = Traits::kDim, kCols = Traits::kCols, kParts = Traits::kParts, kSplits = Traits::kSplits;
  constexpr int kWidth = Traits::kConvWidth, kTokens = Traits::kMaxTokens;
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();

  const int rank = static_cast<int>(cluster.block_rank());
  const int cluster_id = blockIdx.x / Traits::kClusterSize;
  const int seq = cluster_id / p.key_heads, key_head = cluster_id % p.key_heads;
  const int head = key_head * Traits::kRatio + rank / kSplits;
  const int split = rank % kSplits;
  const int tid = threadIdx.x, row = tid / kParts, part = tid % kParts;
  const int value_row = split * kCols + row;  // within the head
  const int key_dim = p.key_heads * kDim, channels = 2 * key_dim + p.value_heads * kDim;
  const int num_tokens = p.tokens;

  // 1. Every load is issued before anything waits on one: first what does not depend on the slot (the
  // projections, the weights), then the slot, then the states it addresses. Thread tid owns q channel tid
  // and k channel tid of this key head; threads below kCols also own one of this CTA's v and z channels.
  const T* qkvz = static_cast<const T*>(p.qkvz) + seq * p.qkvz_batch_stride;
  const T* conv_w = static_cast<const T*>(p.conv_weight);
  const int q_channel = key_head * kDim + tid, k_channel = key_dim + key_head * kDim + tid;
  const int v_channel = 2 * key_dim + head * kDim + split * kCols + tid;
  const int z_channel = channels + head * kDim + split * kCols + tid;
  const bool owns_v = tid < kCols;
  ConvChannel<T, kWidth, kTokens> q_conv, k_conv, v_conv;
  q_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, conv_w, q_channel);
  k_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, conv_w, k_channel);
  float z[kTokens];
  if (owns_v) {
    v_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, conv_w, v_channel);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) z[t] = t < num_tokens ? to_float(qkvz[t * p.qkvz_token_stride + z_channel]) : 0.f;
  }
  float b_raw = 0.f, a_raw = 0.f;
  if (tid < num_tokens) {
    const T* ba = static_cast<const T*>(p.ba) + seq * p.ba_batch_stride + tid * p.ba_token_stride;
    b_raw = to_float(ba[head]);
    a_raw = to_float(ba[p.value_heads + head]);
  }
  const float A_log = p.A_log[head], dt_bias = p.dt_bias[head];

  const int slot = p.slots[seq];
  if (slot < 0 || slot >= p.num_slots) return;  // the whole cluster leaves together
  // Thread (row, part) holds keys 4 * (part + kParts * i) + 0..3 of its value row, so a row's kParts
  // threads read 64 contiguous bytes per load.
  float* state_row = p.recurrent_state + ((int64_t(slot) * p.value_heads + head) * kDim + value_row) * kDim;
  float4 S[Traits::kKeyVecs];
#pragma unroll
  for (int i = 0; i < Traits::kKeyVecs; ++i) S[i] = load_float4(state_row + 4 * (part + kParts * i));
  T* conv_state = static_cast<T*>(p.conv_state) + int64_t(slot) * (kWidth - 1) * channels;
  q_conv.load_state(conv_state, channels, q_channel);
  k_conv.load_state(conv_state, channels, k_channel);
  if (owns_v) v_conv.load_state(conv_state, channels, v_channel);

  __shared__ float qk_s[kTokens][2][kDim];  // conv'd q, k of each token, then L2-normalised
  __shared__ float v_s[kTokens][kCols], z_s[kTokens][kCols], o_s[kTokens][kCols];
  __shared__ float g_s[kTokens], beta_s[kTokens];
  __shared__ float sumsq_s[kTokens];  // this CTA's part of sum(o^2) per token, read by the cluster

  // 2. Causal conv + SiLU; gating.
  q_conv.run(num_tokens, &qk_s[0][0][tid], 2 * kDim);
  k_conv.run(num_tokens, &qk_s[0][1][tid], 2 * kDim);
  if (owns_v) {
    v_conv.run(num_tokens, &v_s[0][tid], kCols);
    if (p.update_state) v_conv.store_state(conv_state, channels, v_channel);  // read by this CTA alone
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < num_tokens) z_s[t][tid] = z[t];
    }
  }
  if (tid < num_tokens) {
    g_s[tid] = -expf(A_log) * softplus_f(a_raw + dt_bias);
    beta_s[tid] = round_to<T>(1.f / (1.f + __expf(-b_raw)));
  }
  __syncthreads();

  // 3. L2-normalise q (then scale by dk^-0.5) and k per token: warp w takes tokens w, w + 4, ...
  {
    const int warp = tid / 32, lane = tid % 32;
    for (int item = warp; item < 2 * num_tokens; item += Traits::kThreads / 32) {
      float* x = qk_s[item / 2][item % 2];
      float v[kDim / 32], sum = 0.f;
#pragma unroll
      for (int i = 0; i < kDim / 32; ++i) {
        v[i] = x[lane + 32 * i];
        sum += v[i] * v[i];
      }
      sum = group_sum<32>(sum);
      const float scale = rsqrtf(sum + 1e-6f) * (item % 2 == 0 ? rsqrtf(float(kDim)) : 1.f);
#pragma unroll
      for (int i = 0; i < kDim / 32; ++i) x[lane + 32 * i] = v[i] * scale;
    }
  }
  __syncthreads();

  // 4. The delta rule, token by token, on the registers; kParts lanes reduce each row's dot products.
  for (int t = 0; t < num_tokens; ++t) {
    const float decay = expf(g_s[t]);
    const float* k = qk_s[t][1];
    const float* q = qk_s[t][0];
    float kv = 0.f;
#pragma unroll
    for (int i = 0; i < Traits::kKeyVecs; ++i) {
      const float4 kk = load_float4(k + 4 * (part + kParts * i));
      S[i].x *= decay, S[i].y *= decay, S[i].z *= decay, S[i].w *= decay;
      kv += S[i].x * kk.x + S[i].y * kk.y + S[i].z * kk.z + S[i].w * kk.w;
    }
    kv = group_sum<kParts>(kv);
    const float delta = beta_s[t] * (v_s[t][row] - kv);
    float o = 0.f;
#pragma unroll
    for (int i = 0; i < Traits::kKeyVecs; ++i) {
      const float4 kk = load_float4(k + 4 * (part + kParts * i));
      const float4 qq = load_float4(q + 4 * (part + kParts * i));
      S[i].x += kk.x * delta, S[i].y += kk.y * delta, S[i].z += kk.z * delta, S[i].w += kk.w * delta;
      o += S[i].x * qq.x + S[i].y * qq.y + S[i].z * qq.z + S[i].w * qq.w;
    }
    o = group_sum<kParts>(o);
    if (part == 0) o_s[t][row] = round_to<T>(o);  // the unfused model hands o to the norm in T
  }
  if (p.update_state) {
#pragma unroll
    for (int i = 0; i < Traits::kKeyVecs; ++i) *reinterpret_cast<float4*>(state_row + 4 * (part + kParts * i)) = S[i];
  }
  __syncthreads();

  // 5. Gated RMSNorm over the head's 128 rows, spread over kSplits CTAs of the cluster.
  if (tid < 32) {
    for (int t = 0; t < num_tokens; ++t) {
      const float o = o_s[t][tid];
      const float sum = group_sum<32>(o * o);
      if (tid == 0) sumsq_s[t] = sum;
    }
  }
  cluster.sync();  // partial sums are visible; every CTA has read the shared q/k conv state
  if (p.update_state && rank == 0) {
    q_conv.store_state(conv_state, channels, q_channel);
    k_conv.store_state(conv_state, channels, k_channel);
  }
  float sumsq = 0.f;
  if (tid < num_tokens) {
    for (int s = 0; s < kSplits; ++s) sumsq += cluster.map_shared_rank(sumsq_s, (rank / kSplits) * kSplits + s)[tid];
  }
  // Our shared memory may still be read by the cluster: arrive now, wait before leaving.
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
  if (tid < num_tokens) g_s[tid] = rsqrtf(sumsq / kDim + p.eps);  // g_s is free again: inverse rms
  __syncthreads();
  const T* norm_w = static_cast<const T*>(p.norm_weight);
  T* out = static_cast<T*>(p.out) + seq * p.out_batch_stride + head * kDim + split * kCols;
  for (int idx = tid; idx < num_tokens * kCols; idx += Traits::kThreads) {
    const int t = idx / kCols, col = idx % kCols;
    const float y = o_s[t][col] * g_s[t] * to_float(norm_w[split * kCols + col]) * silu(z_s[t][col]);
    out[t * p.out_token_stride + col] = from_float<T>(y);
  }
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

}  // namespace qwen3next
