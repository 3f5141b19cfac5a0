#pragma once

#include <cooperative_groups.h>

#include "common/async_copy.cuh"
#include "common/chain.cuh"
#include "common/vec.cuh"
#include "gdn/gdn_decode.h"

namespace qwen3next {

// A CTA owns one value head's state (128 x 128, fp32 or bf16 in memory, fp32 in registers), kParts threads
// per value row; the kRatio CTAs of one key head form a cluster. Clusters walk lanes of sequences
// (blockIdx.y, + gridDim.y, ...) and keep loads in flight: the state of the next sequence streams
// into shared memory (cp.async) and the next sequence's inputs and conv state into registers while the
// current one is computed. The cluster is needed because the key head's q/k conv channels are shared:
// their conv state may be overwritten only after every CTA of the cluster read it. Launched chained: the
// weights load and the first states are asked of L2 while the kernel before (in_proj) still runs.
template <typename T, typename StateT, int kRatio_, int kTokens_>
struct GdnDecodeTraits {
  using Element = T;
  using State = StateT;  // float, or bfloat16 (fp32 math in registers, rounded when stored)
  static constexpr int kRatio = kRatio_;  // value heads per key head = CTAs per cluster
  static constexpr int kDim = 128;  // dk = dv
  static constexpr int kParts = 4;
  static constexpr int kThreads = kDim * kParts;
  static constexpr int kStateVec = 16 / sizeof(StateT);  // state elements per 16-byte copy
  static constexpr int kStateCopies = kDim / kParts / kStateVec;  // 16-byte copies per thread
  static constexpr int kStages = 2;  // states in flight: this sequence's and the next one's (3: no faster)
  static constexpr int kStateBytes = kStages * kStateCopies * kThreads * 16;  // dynamic shared memory
  static constexpr int kConvWidth = 4;
  static constexpr int kConvJobs = 3 * kDim;  // the key head's q and k channels, this head's v channels
  static constexpr int kMaxTokens = kTokens_;  // 1 (decode) or 8 (verification: T <= 8 at run time)
  static_assert(kRatio <= 8 && kThreads - kConvJobs == kDim, "portable cluster; one conv or z channel per thread");
};

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }  // torch's threshold

// One conv channel: its kWidth taps, the inputs of up to kTokens new tokens and its conv state window.
// Prefetched values stay in T until used: converted where they are loaded, a load would be waited for there.
template <typename T, int kWidth, int kTokens>
struct ConvChannel {
  float w[kWidth], window[kWidth - 1];
  T x[kTokens];

  __device__ __forceinline__ void load_weights(const T* conv_weight, int channel) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) w[j] = to_float(conv_weight[channel * kWidth + j]);
  }
  __device__ __forceinline__ void load_inputs(const T* qkvz, int64_t token_stride, int num_tokens, int channel) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) x[t] = t < num_tokens ? qkvz[t * token_stride + channel] : from_float<T>(0.f);
  }
  // y_t = silu(conv) rounded to T (as the unfused model stores it) into out[t * out_stride]; `window` ends
  // as the last kWidth-1 inputs, the channel's new conv state.
  __device__ __forceinline__ void run(int num_tokens, float* out, int out_stride) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= num_tokens) break;
      float acc = w[kWidth - 1] * to_float(x[t]);
#pragma unroll
      for (int j = 0; j < kWidth - 1; ++j) acc += w[j] * window[j];
#pragma unroll
      for (int j = 0; j < kWidth - 2; ++j) window[j] = window[j + 1];
      window[kWidth - 2] = to_float(x[t]);
      out[t * out_stride] = round_to<T>(silu(acc));
    }
  }
  __device__ __forceinline__ void store_state(T* conv_state, int channels, int channel) const {
#pragma unroll
    for (int j = 0; j < kWidth - 1; ++j) conv_state[j * channels + channel] = from_float<T>(window[j]);
  }
};

// Sequence `seq`'s entry of `slots` (-1 past the batch), and the cache slot it names or -1 for padding.
__device__ __forceinline__ int slot_entry(const GdnDecodeParams& p, int seq) { return seq < p.batch ? p.slots[seq] : -1; }
__device__ __forceinline__ int checked_slot(const GdnDecodeParams& p, int entry) {
  return entry >= 0 && entry < p.num_slots ? entry : -1;
}

// Cluster barrier halves: arrive releases this thread's earlier memory accesses, wait acquires the others'.
// Relaxed: what the arrive publishes is that reads are done, and a read whose value is used is done (a
// release would also wait for every store in flight).
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads) gdn_decode_kernel(const GdnDecodeParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using T = typename Traits::Element;
  using StateT = typename Traits::State;
  constexpr int kDim = Traits::kDim, kParts = Traits::kParts, kThreads = Traits::kThreads;
  constexpr int kWidth = Traits::kConvWidth, kTokens = Traits::kMaxTokens;
  static_assert(Traits::kStages == 2, "the loop alternates two state buffers");
  constexpr int kVec = Traits::kStateVec, kCopies = Traits::kStateCopies;
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();

  const int rank = static_cast<int>(cluster.block_rank());
  const int key_head = blockIdx.x / Traits::kRatio, head = key_head * Traits::kRatio + rank;
  const int tid = threadIdx.x, row = tid / kParts, part = tid % kParts, warp = tid / 32, lane = tid % 32;
  const int key_dim = p.key_heads * kDim, channels = 2 * key_dim + p.value_heads * kDim;
  const int num_tokens = p.tokens;

  __shared__ alignas(32) float qk_s[kTokens][2][kDim];  // conv'd q, k of each token, then L2-normalised
  __shared__ float v_s[kTokens][kDim], z_s[kTokens][kDim], o_s[kTokens][kDim];
  __shared__ float g_s[kTokens], beta_s[kTokens], inv_rms_s[kTokens];
  __shared__ float sumsq_s[kDim / 32][kTokens];  // sum(o^2) per warp of 32 rows
  extern __shared__ uint4 state_s[];  // [kStages][kCopies][kThreads]: each thread's own copies

  // Thread tid < 384 owns conv channel tid of [q | k] of the key head | v of the head; the others a z channel.
  // Thread (row, part) holds keys kVec * (part + kParts * i) + 0..kVec-1 of value row `row`, so a row's
  // kParts threads move 64 contiguous bytes per copy.
  const int job = tid;
  const bool conv_job = job < Traits::kConvJobs, qk_job = job < 2 * kDim;
  const int channel = conv_job ? (qk_job ? (job < kDim ? 0 : key_dim - kDim) + key_head * kDim + job
                                         : 2 * key_dim + head * kDim + job - 2 * kDim)
                               : channels + head * kDim + job - Traits::kConvJobs;  // z
  float* const conv_out = qk_job ? &qk_s[0][job / kDim][job % kDim] : &v_s[0][job % kDim];
  const int conv_out_stride = qk_job ? 2 * kDim : kDim;
  ConvChannel<T, kWidth, kTokens> conv;
  T next_window[kWidth - 1];
  if (conv_job) conv.load_weights(static_cast<const T*>(p.conv_weight), channel);
  const float neg_A = -expf(p.A_log[head]), dt_bias = p.dt_bias[head];
  T b_raw, a_raw;
  auto load_inputs = [&](int seq) {  // conv inputs or z into conv.x, b and a of token tid
    conv.load_inputs(static_cast<const T*>(p.qkvz) + seq * p.qkvz_batch_stride, p.qkvz_token_stride, num_tokens, channel);
    if (tid < num_tokens) {
      const T* ba = static_cast<const T*>(p.ba) + seq * p.ba_batch_stride + tid * p.ba_token_stride;
      b_raw = ba[head];
      a_raw = ba[p.value_heads + head];
    }
  };
  auto conv_state_of = [&](int slot) { return static_cast<T*>(p.conv_state) + int64_t(slot) * (kWidth - 1) * channels; };
  auto load_window = [&](int slot) {
    if (conv_job) {
#pragma unroll
      for (int w = 0; w < kWidth - 1; ++w) next_window[w] = conv_state_of(slot)[w * channels + channel];
    }
  };
  auto state_of = [&](int slot) {  // this head's state in slot `slot`
    return static_cast<StateT*>(p.recurrent_state) + (int64_t(slot) * p.value_heads + head) * kDim * kDim;
  };
  auto state_row = [&](int slot) { return state_of(slot) + row * kDim; };
  auto stage_copy = [&](int stage, int i) -> uint4* { return &state_s[(stage * kCopies + i) * kThreads + tid]; };
  auto fetch_state = [&](int stage, int slot) {  // one commit group per sequence, empty for padding
    if (slot >= 0) {
#pragma unroll
      for (int i = 0; i < kCopies; ++i) cp_async_16(stage_copy(stage, i), state_row(slot) + kVec * (part + kParts * i));
    }
    cp_async_commit();
  };

  // Before the await only hints: the slots as they stand now name the lane's first state to ask of L2. The slots and
  // states may be what the kernel before writes (a previous call on the same slots), so they are read for real
  // after it (common/chain.cuh).
  const int step = gridDim.y;
  int seq = blockIdx.y;
  if (tid == 0 && seq < p.batch) {
    const int hinted = checked_slot(p, __ldcg(p.slots + seq));  // through L2: no stale copy left in L1
    if (hinted >= 0) prefetch_l2(state_of(hinted), kDim * kDim * sizeof(StateT));
  }
  await_previous_kernel();
  // The first inputs are asked for before the slots come back (the loads that need a slot wait for it). The lane's
  // slots: this sequence's, the next one's (its state in flight) and the one after (fetched in this iteration), each
  // entry loaded an iteration before it is checked so that no thread waits on it.
  load_inputs(seq);
  int slot = checked_slot(p, slot_entry(p, seq)), next_slot = checked_slot(p, slot_entry(p, seq + step));
  int far_entry = slot_entry(p, seq + 2 * step);
  if (slot >= 0) load_window(slot);
  fetch_state(0, slot);
  fetch_state(1, next_slot);
  for (int stage = 0; seq < p.batch; stage ^= 1) {
    const int next_seq = seq + step, far_slot = checked_slot(p, far_entry);
    far_entry = slot_entry(p, seq + 3 * step);
    if (slot >= 0) {
      // 1. Causal conv + SiLU; gating. The previous sequence's shared values are no longer read.
      __syncthreads();
      if (conv_job) {
#pragma unroll
        for (int w = 0; w < kWidth - 1; ++w) conv.window[w] = to_float(next_window[w]);
        conv.run(num_tokens, conv_out, conv_out_stride);
        if (p.update_state && !qk_job) conv.store_state(conv_state_of(slot), channels, channel);  // v: ours alone
      } else {
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t < num_tokens) z_s[t][job - Traits::kConvJobs] = to_float(conv.x[t]);
        }
      }
      if (tid < num_tokens) {
        g_s[tid] = neg_A * softplus_f(to_float(a_raw) + dt_bias);
        beta_s[tid] = round_to<T>(1.f / (1.f + __expf(-to_float(b_raw))));
      }
      cluster_arrive();  // this CTA has read the shared q/k conv state
    }
    // The next sequence's inputs and conv state are loaded while this one is computed.
    if (next_seq < p.batch) load_inputs(next_seq);
    if (next_slot >= 0) load_window(next_slot);
    float S[kCopies][kVec];
    if (slot >= 0) {
      cp_async_wait<1>();  // this sequence's state; the next one's may still be in flight
#pragma unroll
      for (int i = 0; i < kCopies; ++i) load_float(S[i], reinterpret_cast<const StateT*>(stage_copy(stage, i)));
    }
    fetch_state(stage, far_slot);  // into the copies this thread has just read
    if (slot >= 0) {
      __syncthreads();
      // 2. L2-normalise q (then scale by dk^-0.5) and k per token: warp w takes items w, w + 16, ...
      for (int item = warp; item < 2 * num_tokens; item += kThreads / 32) {
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
      __syncthreads();

      // 3. The delta rule, token by token, on the registers; kParts lanes reduce each row's dot products.
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
#pragma unroll
        for (int i = 0; i < kCopies; ++i) store_float(state_row(slot) + kVec * (part + kParts * i), S[i]);
      }
      __syncthreads();

      // 4. Gated RMSNorm over the head's 128 rows: the first four warps sum 32 rows' o^2 each.
      if (warp < kDim / 32) {
        for (int t = 0; t < num_tokens; ++t) {
          const float o = o_s[t][warp * 32 + lane];
          const float sum = group_sum<32>(o * o);
          if (lane == 0) sumsq_s[warp][t] = sum;
        }
      }
      cluster_wait();  // every CTA of the cluster has read the shared q/k conv state
      if (p.update_state && rank == 0 && qk_job) conv.store_state(conv_state_of(slot), channels, channel);
      __syncthreads();
      if (tid < num_tokens) {
        float sumsq = 0.f;
#pragma unroll
        for (int w = 0; w < kDim / 32; ++w) sumsq += sumsq_s[w][tid];
        inv_rms_s[tid] = rsqrtf(sumsq / kDim + p.eps);
      }
      __syncthreads();
      const T* norm_w = static_cast<const T*>(p.norm_weight);
      T* out = static_cast<T*>(p.out) + seq * p.out_batch_stride + head * kDim;
      for (int idx = tid; idx < num_tokens * kDim; idx += kThreads) {
        const int t = idx / kDim, col = idx % kDim;
        const float y = o_s[t][col] * inv_rms_s[t] * to_float(norm_w[col]) * silu(z_s[t][col]);
        out[t * p.out_token_stride + col] = from_float<T>(y);
      }
    } else if (p.zero_padding) {
      T* out = static_cast<T*>(p.out) + seq * p.out_batch_stride + head * kDim;
      for (int idx = tid; idx < num_tokens * kDim; idx += kThreads) {
        out[idx / kDim * p.out_token_stride + idx % kDim] = from_float<T>(0.f);
      }
    }
    seq = next_seq;
    slot = next_slot;
    next_slot = far_slot;
  }
#endif
}

}  // namespace qwen3next
