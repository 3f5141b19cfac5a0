#pragma once

#include <cooperative_groups.h>

#include "common/async_copy.cuh"
#include "common/vec.cuh"
#include "gdn/gdn_decode.h"

namespace qwen3next {

// One cluster per key head and lane of sequences: kRatio value heads x kSplits CTAs, each CTA owning kCols
// value rows of one head's state (kCols x 128, 16 KiB in fp32) in registers, kParts threads per row.
// Splitting a head over CTAs puts 128 CTAs on the GPU even for one sequence. A cluster walks its lane's
// sequences (blockIdx.y, + gridDim.y, ...) and fetches the next one's state into shared memory while it
// works on the current one, so every CTA always has a state load in flight.
// The cluster is needed twice per sequence: the q/k conv channels are shared by all its CTAs (their conv
// state may be overwritten only after every CTA read it), and the gated RMSNorm runs over a whole head
// (partial sums are pushed into the head's CTAs through distributed shared memory before one barrier).
template <typename T, typename StateT, int kRatio_, int kTokens_>
struct GdnDecodeTraits {
  using Element = T;
  using State = StateT;  // float, or bfloat16 (fp32 math in registers, rounded when stored)
  static constexpr int kRatio = kRatio_;  // value heads per key head
  static constexpr int kDim = 128;  // dk = dv
  static constexpr int kSplits = 4;
  static constexpr int kCols = kDim / kSplits;
  static constexpr int kParts = 4;
  static constexpr int kThreads = kCols * kParts;
  static constexpr int kStateVec = 16 / sizeof(StateT);  // state elements per 16-byte copy
  static constexpr int kStateCopies = kDim / kParts / kStateVec;  // 16-byte copies per thread
  static constexpr int kClusterSize = kRatio * kSplits;
  static constexpr int kConvWidth = 4;
  static constexpr int kMaxTokens = kTokens_;  // 1 (decode) or 8 (verification: T <= 8 at run time)
  static_assert(kThreads == kDim && kClusterSize <= 8, "one q and one k channel per thread; portable cluster");
};

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }  // torch's threshold

// One conv channel: its kWidth taps and the inputs of up to kTokens new tokens, loaded together.
template <typename T, int kWidth, int kTokens>
struct ConvChannel {
  float w[kWidth], x[kTokens], window[kWidth - 1];

  __device__ __forceinline__ void load_weights(const T* conv_weight, int channel) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) w[j] = to_float(conv_weight[channel * kWidth + j]);
  }
  __device__ __forceinline__ void load_inputs(const T* qkvz, int64_t token_stride, int num_tokens, int channel) {
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

// The cache slot of sequence `seq`, or -1 when there is no such sequence or it is padding.
__device__ __forceinline__ int slot_of(const GdnDecodeParams& p, int seq) {
  if (seq >= p.batch) return -1;
  const int slot = p.slots[seq];
  return slot >= 0 && slot < p.num_slots ? slot : -1;
}

__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads) gdn_decode_kernel(const GdnDecodeParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using T = typename Traits::Element;
  using StateT = typename Traits::State;
  constexpr int kDim = Traits::kDim, kCols = Traits::kCols, kParts = Traits::kParts, kSplits = Traits::kSplits;
  constexpr int kWidth = Traits::kConvWidth, kTokens = Traits::kMaxTokens;
  constexpr int kVec = Traits::kStateVec, kCopies = Traits::kStateCopies;
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();

  const int rank = static_cast<int>(cluster.block_rank());
  const int key_head = blockIdx.x / Traits::kClusterSize;
  const int head = key_head * Traits::kRatio + rank / kSplits;
  const int split = rank % kSplits, first_rank_of_head = rank - split;
  const int tid = threadIdx.x, row = tid / kParts, part = tid % kParts;
  const int value_row = split * kCols + row;  // within the head
  const int key_dim = p.key_heads * kDim, channels = 2 * key_dim + p.value_heads * kDim;
  const int num_tokens = p.tokens;

  // Thread tid owns q channel tid and k channel tid of this key head; threads below kCols also own one of
  // this CTA's v and z channels. Thread (row, part) holds keys kVec * (part + kParts * i) + 0..kVec-1 of its
  // value row, so a row's kParts threads move 64 contiguous bytes per copy.
  const int q_channel = key_head * kDim + tid, k_channel = key_dim + key_head * kDim + tid;
  const int v_channel = 2 * key_dim + head * kDim + split * kCols + tid;
  const int z_channel = channels + head * kDim + split * kCols + tid;
  const bool owns_v = tid < kCols;
  const T* conv_w = static_cast<const T*>(p.conv_weight);
  ConvChannel<T, kWidth, kTokens> q_conv, k_conv, v_conv;
  q_conv.load_weights(conv_w, q_channel);
  k_conv.load_weights(conv_w, k_channel);
  if (owns_v) v_conv.load_weights(conv_w, v_channel);
  const float neg_A = -expf(p.A_log[head]), dt_bias = p.dt_bias[head];
  float z[kTokens], b_raw = 0.f, a_raw = 0.f;
  auto load_inputs = [&](int seq) {
    const T* qkvz = static_cast<const T*>(p.qkvz) + seq * p.qkvz_batch_stride;
    q_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, q_channel);
    k_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, k_channel);
    if (owns_v) {
      v_conv.load_inputs(qkvz, p.qkvz_token_stride, num_tokens, v_channel);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) z[t] = t < num_tokens ? to_float(qkvz[t * p.qkvz_token_stride + z_channel]) : 0.f;
    }
    if (tid < num_tokens) {
      const T* ba = static_cast<const T*>(p.ba) + seq * p.ba_batch_stride + tid * p.ba_token_stride;
      b_raw = to_float(ba[head]);
      a_raw = to_float(ba[p.value_heads + head]);
    }
  };
  auto state_row = [&](int slot) {
    return static_cast<StateT*>(p.recurrent_state) + ((int64_t(slot) * p.value_heads + head) * kDim + value_row) * kDim;
  };

  __shared__ alignas(16) uint4 state_s[2][kCopies][Traits::kThreads];  // this thread's next states, in flight
  __shared__ alignas(32) float qk_s[kTokens][2][kDim];  // conv'd q, k of each token, then L2-normalised
  __shared__ float v_s[kTokens][kCols], z_s[kTokens][kCols], o_s[kTokens][kCols];
  __shared__ float g_s[kTokens], beta_s[kTokens], inv_rms_s[kTokens];
  __shared__ float sumsq_s[2][kSplits][kTokens];  // sum(o^2) of each CTA of the head, double-buffered
  auto fetch_state = [&](int stage, int slot) {
    if (slot >= 0) {
      const StateT* src = state_row(slot);
#pragma unroll
      for (int i = 0; i < kCopies; ++i) cp_async_16(&state_s[stage][i][tid], src + kVec * (part + kParts * i));
    }
    cp_async_commit();
  };

  int seq = blockIdx.y, slot = slot_of(p, seq);
  load_inputs(seq);
  fetch_state(0, slot);
  // Another CTA's shared memory may be written only once that CTA runs: arrive now, wait before the writes.
  cluster_arrive_relaxed();
  bool cluster_pending = true;
  int done = 0;  // sequences computed; every CTA of the cluster sees the same ones
  for (int stage = 0; seq < p.batch; stage ^= 1) {
    const int next_seq = seq + gridDim.y, next_slot = slot_of(p, next_seq);
    T* conv_state = static_cast<T*>(p.conv_state) + int64_t(max(slot, 0)) * (kWidth - 1) * channels;
    if (slot >= 0) {
      // 1. Causal conv + SiLU; gating. The previous sequence's shared values are no longer read.
      q_conv.load_state(conv_state, channels, q_channel);
      k_conv.load_state(conv_state, channels, k_channel);
      if (owns_v) v_conv.load_state(conv_state, channels, v_channel);
      __syncthreads();
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
        g_s[tid] = neg_A * softplus_f(a_raw + dt_bias);
        beta_s[tid] = round_to<T>(1.f / (1.f + __expf(-b_raw)));
      }
    }
    // The next sequence's inputs and state are fetched while this one is computed.
    if (next_seq < p.batch) load_inputs(next_seq);
    fetch_state(stage ^ 1, next_slot);
    if (slot >= 0) {
      __syncthreads();
      // 2. L2-normalise q (then scale by dk^-0.5) and k per token: warp w takes tokens w, w + 4, ...
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

      // 3. The delta rule, token by token, on the registers; kParts lanes reduce each row's dot products.
      cp_async_wait<1>();  // this sequence's state; the next one's may still be in flight
      float S[kCopies][kVec];
#pragma unroll
      for (int i = 0; i < kCopies; ++i) load_float(S[i], reinterpret_cast<const StateT*>(&state_s[stage][i][tid]));
      for (int t = 0; t < num_tokens; ++t) {
        const float decay = expf(g_s[t]);
        const float* k = qk_s[t][1];
        const float* q = qk_s[t][0];
        float kv = 0.f;
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
          float kk[kVec];
          load_float(kk, k + kVec * (part + kParts * i));
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            S[i][j] *= decay;
            kv += S[i][j] * kk[j];
          }
        }
        kv = group_sum<kParts>(kv);
        const float delta = beta_s[t] * (v_s[t][row] - kv);
        float o = 0.f;
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
          float kk[kVec], qq[kVec];
          load_float(kk, k + kVec * (part + kParts * i));
          load_float(qq, q + kVec * (part + kParts * i));
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            S[i][j] += kk[j] * delta;
            o += S[i][j] * qq[j];
          }
        }
        o = group_sum<kParts>(o);
        if (part == 0) o_s[t][row] = round_to<T>(o);  // the unfused model hands o to the norm in T
      }
      if (p.update_state) {
        StateT* dst = state_row(slot);
#pragma unroll
        for (int i = 0; i < kCopies; ++i) store_float(dst + kVec * (part + kParts * i), S[i]);
      }
      __syncthreads();

      // 4. Gated RMSNorm over the head's 128 rows, spread over kSplits CTAs: each CTA pushes its partial
      // sums of o^2 into every CTA of its head, then one cluster barrier; after it every read is local.
      // Buffer done % 2 is pushed into again only after the next barrier, which its reader passes last.
      if (cluster_pending) {
        cluster_wait();
        cluster_pending = false;
      }
      if (tid < 32) {
        for (int t = 0; t < num_tokens; ++t) {
          const float o = o_s[t][tid];
          const float sum = group_sum<32>(o * o);
          if (tid < kSplits) cluster.map_shared_rank(&sumsq_s[done % 2][split][t], first_rank_of_head + tid)[0] = sum;
        }
      }
      cluster.sync();  // partial sums have arrived; every CTA has read the shared q/k conv state
      if (p.update_state && rank == 0) {
        q_conv.store_state(conv_state, channels, q_channel);
        k_conv.store_state(conv_state, channels, k_channel);
      }
      if (tid < num_tokens) {
        float sumsq = 0.f;
#pragma unroll
        for (int s = 0; s < kSplits; ++s) sumsq += sumsq_s[done % 2][s][tid];
        inv_rms_s[tid] = rsqrtf(sumsq / kDim + p.eps);
      }
      __syncthreads();
      const T* norm_w = static_cast<const T*>(p.norm_weight);
      T* out = static_cast<T*>(p.out) + seq * p.out_batch_stride + head * kDim + split * kCols;
      for (int idx = tid; idx < num_tokens * kCols; idx += Traits::kThreads) {
        const int t = idx / kCols, col = idx % kCols;
        const float y = o_s[t][col] * inv_rms_s[t] * to_float(norm_w[split * kCols + col]) * silu(z_s[t][col]);
        out[t * p.out_token_stride + col] = from_float<T>(y);
      }
      ++done;
    }
    seq = next_seq;
    slot = next_slot;
  }
  if (cluster_pending) cluster_wait();  // no sequence computed: close the barrier phase opened above
#endif
}

}  // namespace qwen3next
