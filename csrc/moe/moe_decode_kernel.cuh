// Device code of the few-token MoE block (see moe_decode.h for the launches).
//
// Expert GEMMs (gate_up, down): a CTA owns 16 weight rows of one group's expert (for gate_up: 16 gate rows and
// the same 16 up rows) and all the group's tokens, 64 per pass; its 4 warps split K (32-wide blocks, dealt
// round-robin) and sum their partials through shared memory. The weights go straight from global memory into
// mma.sync fragments: the dot product does not care in which order k is summed, so a thread loads 16 contiguous
// bytes (k = 8t..8t+7 of a 32-wide block, t = lane % 4) of its rows and of its token's row, and the two halves
// serve as the k-pairs (2t, 2t+1) and (2t+8, 2t+9) of two m16n8k16 steps on both operands alike. Every weight
// byte is read once per pass, with kDepth blocks of loads in flight per warp.
#pragma once

#include <cuda_bf16.h>

#include "common/chain.cuh"
#include "common/mma.cuh"
#include "common/vec.cuh"
#include "moe/gate_up_layout.h"
#include "moe/moe_decode.h"

namespace qwen3next {
namespace moe_decode {

using bf16 = __nv_bfloat16;

constexpr int kMaxExperts = 512, kMaxTopK = 16;
constexpr int kRouteThreads = 512, kRouteWarps = kRouteThreads / 32;
constexpr int kThreads = 128, kWarps = kThreads / 32;  // expert GEMMs
constexpr int kTileRows = 16;  // weight rows per CTA (per matrix)
static_assert(kGateUpBlock % kTileRows == 0, "a row tile lies in one block");
constexpr int kBlockK = 32;  // k per fragment load: 4 threads x 8 elements
static_assert(kBlockK % kGateUpBlock == 0, "the API's widths of whole k-blocks are whole gate_up blocks");
constexpr int kMaxTokenTiles = 8;  // 8 tokens each: up to 64 tokens per pass
constexpr int kDepth = 4;  // k-blocks of weights loaded before the first is used
constexpr int kRouterSplits = 4;  // the router GEMM's K splits: 4 x E / 16 CTAs (128 at the model's sizes)
static_assert(kMaxExperts <= kRouteThreads, "the route kernel scans one expert per thread");

// ---- route: one CTA for the whole batch ----------------------------------------------------------------

// Exclusive prefix sum over the CTA (kRouteThreads threads, one value each); `total` gets the sum.
__device__ __forceinline__ int block_exclusive_scan(int value, int* warp_sums, int& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  int before = 0;
  total = 0;
  for (int w = 0; w < kRouteWarps; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  __syncthreads();  // warp_sums may be reused
  return before + inclusive - value;
}

// Lane `lane`'s router logits of `token`, experts [16 lane, 16 lane + 16) (none past the experts: experts % 16 == 0):
// the K splits' partial sums added in a fixed order and rounded to bf16 as a bf16 GEMM's output is (the reference's
// logits), so that both pick the same experts. The splits' 16 vector loads are all issued before the first sum: one
// memory round trip, where strided scalar loads had each expert's four waited on in turn (~9 µs a token).
constexpr int kLaneExperts = kMaxExperts / 32;
static_assert(kLaneExperts % 4 == 0 && kTileRows % kLaneExperts == 0, "a lane's experts: whole float4s, all or none");

__device__ __forceinline__ void lane_router_logits(const MoeDecodeParams& p, int token, int lane,
                                                   float (&logit)[kLaneExperts]) {
  const int first = kLaneExperts * lane;
  if (first >= p.experts) {
#pragma unroll
    for (int i = 0; i < kLaneExperts; ++i) logit[i] = -INFINITY;
    return;
  }
  float4 partial[kRouterSplits][kLaneExperts / 4];
#pragma unroll
  for (int s = 0; s < kRouterSplits; ++s) {
    const float* split_row = p.router_partial + (int64_t(s) * p.tokens + token) * p.experts + first;
    const float4* row = reinterpret_cast<const float4*>(split_row);
#pragma unroll
    for (int v = 0; v < kLaneExperts / 4; ++v) partial[s][v] = row[v];
  }
#pragma unroll
  for (int v = 0; v < kLaneExperts / 4; ++v) {
    float4 sum = partial[0][v];
#pragma unroll
    for (int s = 1; s < kRouterSplits; ++s) {
      sum.x += partial[s][v].x, sum.y += partial[s][v].y, sum.z += partial[s][v].z, sum.w += partial[s][v].w;
    }
    logit[4 * v] = __bfloat162float(__float2bfloat16_rn(sum.x));
    logit[4 * v + 1] = __bfloat162float(__float2bfloat16_rn(sum.y));
    logit[4 * v + 2] = __bfloat162float(__float2bfloat16_rn(sum.z));
    logit[4 * v + 3] = __bfloat162float(__float2bfloat16_rn(sum.w));
  }
}

// A CTA per kRouteWarps tokens (a warp each) picks their experts; the last CTA to finish groups every pair. Its
// dynamic shared memory: counts[E], offsets[E], pair_expert[N * top_k], pair_rank[N * top_k] (ints).
inline int route_ctas(int tokens) { return (tokens + kRouteWarps - 1) / kRouteWarps; }
inline size_t route_shared_bytes(int experts, int tokens, int top_k) {
  return sizeof(int) * (2 * size_t(experts) + 2 * size_t(tokens) * top_k);
}

// A top-k key: the bf16 logit's bits made order-preserving (above; -0 as +0), then 0xFFFF - expert (below), so that the
// largest key is the largest logit, ties to the lower id.
__device__ __forceinline__ unsigned topk_key(float bf16_logit, int expert) {
  const unsigned bits = __float_as_uint(bf16_logit + 0.f) >> 16;  // exact: the logit is bf16-rounded
  const unsigned ordered = bits & 0x8000u ? ~bits & 0xFFFFu : bits | 0x8000u;
  return ordered << 16 | (0xFFFFu - expert);
}
__device__ __forceinline__ float key_logit(unsigned key) {
  const unsigned ordered = key >> 16, bits = ordered & 0x8000u ? ordered & 0x7FFFu : ~ordered & 0xFFFFu;
  return __uint_as_float(bits << 16);
}
__device__ __forceinline__ int key_expert(unsigned key) { return 0xFFFF - int(key & 0xFFFFu); }

// The k-th largest of the warp's keys (k < top_k <= 16) in lane k: each lane sorts its keys (a bitonic network, all
// in registers), then per round the warp's largest head is taken and its lane's list moves up by one, so that a
// round is one warp reduction and a few independent selects (a warp max over all 16 keys a round took ~1.8 µs for 10).
__device__ __forceinline__ unsigned warp_top_keys(unsigned (&key)[kLaneExperts], int top_k, int lane) {
#pragma unroll
  for (int size = 2; size <= kLaneExperts; size *= 2) {
#pragma unroll
    for (int stride = size / 2; stride > 0; stride /= 2) {
#pragma unroll
      for (int i = 0; i < kLaneExperts; ++i) {
        const int j = i ^ stride;
        if (j > i) {  // descending where (i & size) == 0, so that the last merge leaves the list largest first
          const unsigned hi = max(key[i], key[j]), lo = min(key[i], key[j]);
          const bool descending = (i & size) == 0;
          key[i] = descending ? hi : lo, key[j] = descending ? lo : hi;
        }
      }
    }
  }
  unsigned my_key = 0;
  for (int k = 0; k < top_k; ++k) {
    const unsigned best = __reduce_max_sync(0xffffffffu, key[0]);
    const bool taken = key[0] == best;  // one lane: the keys are distinct (the expert id is in the low bits)
#pragma unroll
    for (int i = 0; i < kLaneExperts - 1; ++i) key[i] = taken ? key[i + 1] : key[i];
    key[kLaneExperts - 1] = taken ? 0u : key[kLaneExperts - 1];
    if (lane == k) my_key = best;
  }
  return my_key;
}

__global__ void __launch_bounds__(kRouteThreads, 1) moe_route_kernel(const MoeDecodeParams p) {
  extern __shared__ int route_smem[];
  __shared__ int warp_sums[kRouteWarps];
  __shared__ float shared_gate[kRouteWarps];
  __shared__ bool last_cta;
  const int num_experts = p.experts, top_k = p.top_k, tokens = p.tokens, routed_pairs = tokens * top_k;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, warp_token = blockIdx.x * kRouteWarps + warp;
  int* counts = route_smem;
  int* offsets = counts + num_experts;
  int* pair_expert = offsets + num_experts;
  int* pair_rank = pair_expert + routed_pairs;
  for (int e = tid; e < num_experts; e += kRouteThreads) counts[e] = 0;
  const bool one_cta = gridDim.x == 1;  // its pairs stay in shared memory

  // The shared expert's gate sigmoid(shared_expert_gate . x) of the CTA's token t, by warp (t + 8) % 16 while the
  // router pass still runs (x was written two launches back): at up to 8 tokens not by the warp whose top-k waits
  // for the router. A lane's loads all issued at once.
  const int gate_slot = (warp + kRouteWarps / 2) % kRouteWarps, gate_token = blockIdx.x * kRouteWarps + gate_slot;
  if (gate_token < tokens) {
    constexpr int kGateVectors = 8;  // 16-byte vectors per lane in flight: a hidden size of 2048 in one round trip
    const bf16* x = static_cast<const bf16*>(p.x) + int64_t(gate_token) * p.hidden_size;
    const bf16* w = static_cast<const bf16*>(p.shared_expert_gate);
    float gate = 0.f;
    for (int c0 = 8 * lane; c0 < p.hidden_size; c0 += 8 * 32 * kGateVectors) {
      uint4 xs[kGateVectors], ws[kGateVectors];
#pragma unroll
      for (int u = 0; u < kGateVectors; ++u) {
        const int c = c0 + 8 * 32 * u;
        xs[u] = c < p.hidden_size ? __ldg(reinterpret_cast<const uint4*>(x + c)) : make_uint4(0, 0, 0, 0);
        ws[u] = c < p.hidden_size ? __ldg(reinterpret_cast<const uint4*>(w + c)) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kGateVectors; ++u) {
        const unsigned xw[4] = {xs[u].x, xs[u].y, xs[u].z, xs[u].w}, ww[4] = {ws[u].x, ws[u].y, ws[u].z, ws[u].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 a = unpack_bf16(xw[i]), b = unpack_bf16(ww[i]);
          gate += a.x * b.x + a.y * b.y;
        }
      }
    }
    gate = group_sum<32>(gate);
    if (lane == 0) shared_gate[gate_slot] = 1.f / (1.f + expf(-gate));
  }
  await_previous_kernel();  // the router pass's partial logits (and its zeroed route_done)

  // A warp per token: top-k (largest first, ties to the lower id) over packed keys; lane k gets the k-th.
  const int first_expert = kLaneExperts * lane;  // this lane's experts: first_expert + i
  const bool valid = first_expert < num_experts;
  float logit[kLaneExperts];
  unsigned my_key = 0;
  if (warp_token < tokens) {
    lane_router_logits(p, warp_token, lane, logit);
    unsigned key[kLaneExperts];
#pragma unroll
    for (int i = 0; i < kLaneExperts; ++i) key[i] = valid ? topk_key(logit[i], first_expert + i) : 0u;
    my_key = warp_top_keys(key, top_k, lane);
  }
  const int my_expert = min(key_expert(my_key), num_experts - 1);  // NaN logits: garbage, but in bounds

  // The token's weights, once its experts are known: the softmax over all experts (its max: the first key's logit),
  // the chosen ones' renormalised, and the shared expert's gate.
  const auto write_weights = [&] {
    if (warp_token >= tokens) return;
    const float max_logit = key_logit(__shfl_sync(0xffffffffu, my_key, 0));
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kLaneExperts; ++i) sum += valid ? expf(logit[i] - max_logit) : 0.f;
    sum = group_sum<32>(sum);
    const float my_weight = expf(key_logit(my_key) - max_logit) * (1.f / sum);
    float chosen_sum = 0.f;  // in rank order, as the reference adds them
    for (int k = 0; k < top_k; ++k) chosen_sum += __shfl_sync(0xffffffffu, my_weight, k);
    float* weights = p.token_weight + int64_t(warp_token) * (top_k + 1);
    if (lane == top_k) weights[top_k] = shared_gate[warp];
    if (lane < top_k) weights[lane] = p.norm_topk_prob ? my_weight / chosen_sum : my_weight;
  };

  // With several CTAs the last one to get here groups the pairs of every CTA (fences before the count publish this
  // CTA's writes, the one after it makes the others' visible); a lone CTA's barrier is all its pairs need, and it
  // publishes the groups (route_ready 1, what the GEMMs wait for) before the weights (2, the combine's).
  if (tokens > 1 && warp_token < tokens && lane < top_k) {  // (one token: its groups come from the lanes below)
    (one_cta ? pair_expert : p.pair_expert)[warp_token * top_k + lane] = my_expert;
  }
  if (!one_cta) {
    __syncthreads();  // shared_gate
    write_weights();
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      last_cta = atomicAdd(p.route_done, 1) == gridDim.x - 1;
      __threadfence();
    }
    __syncthreads();
    if (!last_cta) return;
    for (int i = tid; i < routed_pairs; i += kRouteThreads) pair_expert[i] = __ldcg(p.pair_expert + i);  // L2
  }
  if (tokens == 1) {
    // One token: its experts are distinct, each its own group, in rank order (no counts, no scans). The shared
    // expert is group 0 with pair 0.
    if (warp == 0 && lane <= top_k) {
      const int group = lane + 1;
      if (lane < top_k) p.group_expert[group] = my_expert;
      p.group_start[group] = group;
      p.token_pair[lane] = lane < top_k ? group : 0;
      if (lane == 0) p.group_expert[0] = num_experts, p.group_start[0] = 0;
      if (lane == 0) *p.num_groups = top_k + 1;
    }
  } else {
    __syncthreads();
    for (int i = tid; i < routed_pairs; i += kRouteThreads) {
      pair_rank[i] = atomicAdd(&counts[pair_expert[i]], 1);  // order within an expert: any
    }
    __syncthreads();

    // Groups: the shared expert first, with every token (pairs [0, N): its GEMM CTAs need nothing of this kernel's
    // to start), then the experts with tokens, in id order.
    const int count = tid < num_experts ? counts[tid] : 0;
    int routed = 0, active = 0;
    const int offset = tokens + block_exclusive_scan(count, warp_sums, routed);
    const int group = 1 + block_exclusive_scan(count > 0, warp_sums, active);
    if (tid < num_experts) {
      offsets[tid] = offset;
      if (count > 0) {
        p.group_expert[group] = tid;
        p.group_start[group] = offset;
      }
    }
    if (tid == 0) {
      p.group_expert[0] = num_experts;
      p.group_start[0] = 0;
      p.group_start[active + 1] = tokens + routed_pairs;
      *p.num_groups = active + 1;
    }
    __syncthreads();
    for (int i = tid; i < routed_pairs; i += kRouteThreads) {
      const int token = i / top_k, k = i % top_k, position = offsets[pair_expert[i]] + pair_rank[i];
      p.pair_token[position] = token;
      p.token_pair[token * (top_k + 1) + k] = position;
    }
    for (int token = tid; token < tokens; token += kRouteThreads) p.token_pair[token * (top_k + 1) + top_k] = token;
  }
  __syncthreads();
  if (tid == 0) count_done(p.route_ready);  // 1: the groups
  if (one_cta) write_weights();  // (several CTAs wrote theirs before the count; the barrier above: shared_gate)
  __syncthreads();
  if (tid == 0) count_done(p.route_ready);  // 2: the weights
}

// ---- expert GEMMs ------------------------------------------------------------------------------------------

__device__ __forceinline__ uint4 load_16(const bf16* src) { return __ldg(reinterpret_cast<const uint4*>(src)); }

// Asks L2 for the weights of the CTA's first round of loads (k-blocks [0, kWarps x kDepth) of its 16 rows of each
// matrix), so that they are on their way while the previous kernel still runs.
template <int kMats>
__device__ __forceinline__ void prefetch_first_round(const bf16* const (&mats)[kMats], int stride, int k_len) {
  constexpr int kLine = 64;  // bf16 elements in 128 bytes
  const int lines = (min(k_len, kWarps * kDepth * kBlockK) + kLine - 1) / kLine;  // per row
  for (int i = threadIdx.x; i < kMats * kTileRows * lines; i += kThreads) {
    const int m = i / (kTileRows * lines), row = i / lines % kTileRows, line = i % lines;
    const bf16* address = (m == 0 ? mats[0] : mats[kMats - 1]) + int64_t(row) * stride + line * kLine;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
  }
}

// acc (16 rows x 8 tokens) += the rows' 32-wide k-block (w: rows g and g + 8) times the token's (b).
__device__ __forceinline__ void mma_block(FragC& acc, const uint4 (&w)[2], const uint4& b) {
  const FragA a0 = {w[0].x, w[1].x, w[0].y, w[1].y}, a1 = {w[0].z, w[1].z, w[0].w, w[1].w};
  const FragB2 b_steps = {b.x, b.y, b.z, b.w};  // B of both k-steps; mma() takes the register pair it is told
  mma(acc, a0, b_steps, 0);
  mma(acc, a1, b_steps, 1);
}

// The block's GEMMs, one kernel body: kRouter: router_partial[split][token] = the router's rows times the token's
// x over the split's k range (every token, split = blockIdx.y); kGateUp: hidden[pair] = silu(gate x) * up x over the
// group's tokens (x rows gathered by pair_token); kDown: expert_out[pair] = down hidden[pair]. kTokenTiles tiles of
// 8 tokens per pass: 1 when no group holds more than 8 tokens (up to 8 tokens in all), whose small accumulators let
// 4 CTAs share an SM (one wave of gate_up CTAs at the model's sizes, twice the loads in flight per SM), else
// kMaxTokenTiles.
enum class Pass { kRouter, kGateUp, kDown };

// With one token tile (few tokens) the block's time is its chain of kernels, so gate_up, down and the combine are
// chained by counters: each starts as soon as what it reads is published (the route's route_ready, the gate_up CTAs
// of a group for down) and awaits the kernel before it only at its end (common/chain.cuh). With more tokens a CTA's
// round trip to a counter costs more than the chain saves (H100, N = 32: 540 -> 561 µs).
__host__ __device__ constexpr bool counted_chain(Pass pass, int token_tiles) {
  return pass != Pass::kRouter && token_tiles == 1;
}

template <Pass kPass, int kTokenTiles>
__global__ void __launch_bounds__(kThreads, kTokenTiles == 1 ? 4 : 1) moe_gemm_kernel(const MoeDecodeParams p) {
  constexpr int kMats = kPass == Pass::kGateUp ? 2 : 1;
  constexpr bool kCounted = counted_chain(kPass, kTokenTiles);
  __shared__ __align__(16) float partial[kWarps][kTokenTiles][32][4 * kMats];  // read as float4
  const int64_t hidden_size = p.hidden_size, hidden_stride = max(p.expert_width, p.shared_width);
  const int row0 = blockIdx.x * kTileRows;
  // The CTA's 16 weight rows of each matrix (row stride `stride`, k over [0, k_len) from mats[m]), its tokens
  // [begin, begin + count) of the grouped order (the router: every token) and, for the router, its K split.
  const bf16* mats[kMats];
  int begin = 0, count = p.tokens, k_len = p.hidden_size, stride = p.hidden_size, split = 0, width = 0;
  bool waited = false;
  const int group = blockIdx.y;
  if constexpr (kCounted) let_next_kernel_launch();
  if constexpr (kPass == Pass::kRouter) {
    if (row0 >= p.experts) return;
    split = blockIdx.y;
    k_len = p.hidden_size / kRouterSplits;
    mats[0] = static_cast<const bf16*>(p.router) + int64_t(row0) * stride + int64_t(split) * k_len;
  } else {
    // The group's expert and pairs come from the route kernel (two launches back for down, the previous one for
    // gate_up; counted: once route_ready says so), except for the first group, the shared expert with every token
    // (pairs [0, N)), known beforehand.
    int expert = p.experts;
    if (group > 0) {
      if (kCounted) {
        wait_for_count(p.route_ready, 1);
      } else if (kPass == Pass::kGateUp) {
        await_previous_kernel(), waited = true;
      }
      // The count, expert and bounds in one round trip (all in bounds: group < max_groups): the exit test reads all
      // four, so the compiler cannot sink three of them past it into a second round trip.
      const int groups = *p.num_groups, group_expert = p.group_expert[group];
      const int first = p.group_start[group], end = p.group_start[group + 1];
      if ((group >= groups) | (group_expert < 0) | (end <= first)) return;
      expert = group_expert, begin = first, count = end - first;
    }
    const bool shared = expert == p.experts;
    width = shared ? p.shared_width : p.expert_width;  // the expert's intermediate size
    if constexpr (kPass == Pass::kGateUp) {
      if (row0 >= width) return;
      if (shared) {
        mats[0] = static_cast<const bf16*>(p.shared_gate) + int64_t(row0) * stride;
        mats[1] = static_cast<const bf16*>(p.shared_up) + int64_t(row0) * stride;
      } else {  // the experts' gate and up rows interleaved in blocks of kGateUpBlock (a tile is in one block)
        mats[0] = static_cast<const bf16*>(p.gate_up) +
                  (int64_t(expert) * 2 * width + gate_up_gate_row(row0)) * hidden_size;
        mats[1] = mats[0] + int64_t(kGateUpBlock) * hidden_size;
      }
    } else {
      if (row0 >= p.hidden_size) return;
      k_len = stride = width;
      mats[0] = (shared ? static_cast<const bf16*>(p.shared_down)
                        : static_cast<const bf16*>(p.down) + int64_t(expert) * hidden_size * width) +
                int64_t(row0) * stride;
    }
  }
  if (!waited) {
    prefetch_first_round(mats, stride, k_len);
    if (!kCounted) {
      await_previous_kernel();  // x (router, gate_up), hidden (down)
    } else if (kPass == Pass::kDown) {
      wait_for_count(p.gate_up_done + group, width / kTileRows);  // the group's h: one count per gate_up CTA
    }
  }
  if (kPass == Pass::kRouter && blockIdx.x + blockIdx.y == 0) {  // the route's and gate_up's counters
    if (threadIdx.x == 0) *p.route_done = 0, *p.route_ready = 0;
    for (int i = threadIdx.x; i < p.max_groups; i += kThreads) p.gate_up_done[i] = 0;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int k_blocks = k_len / kBlockK;
  // Down's h may be written while down runs (the group's count tells when): read through L2.
  auto load_b = [](const bf16* src) {
    return kPass == Pass::kDown ? __ldcg(reinterpret_cast<const uint4*>(src)) : load_16(src);
  };

  for (int token0 = 0; token0 < count; token0 += kTokenTiles * 8) {
    const int tiles = min(kTokenTiles, (count - token0 + 7) / 8);
    const bf16* b_rows[kTokenTiles];  // this thread's token row of each tile (null past the group)
#pragma unroll
    for (int tt = 0; tt < kTokenTiles; ++tt) {
      const int j = token0 + 8 * tt + g;
      b_rows[tt] = nullptr;
      if (j < count) {
        if constexpr (kPass == Pass::kRouter) {
          b_rows[tt] = static_cast<const bf16*>(p.x) + j * hidden_size + int64_t(split) * k_len;
        } else if constexpr (kPass == Pass::kGateUp) {
          // The shared expert's pairs are the tokens; one token's pairs are all token 0: no round trip to pair_token
          // before the first weight load.
          const int token = group == 0 || p.tokens == 1 ? j : p.pair_token[begin + j];
          b_rows[tt] = static_cast<const bf16*>(p.x) + int64_t(token) * hidden_size;
        } else {
          b_rows[tt] = static_cast<const bf16*>(p.hidden) + int64_t(begin + j) * hidden_stride;
        }
      }
    }
    float acc[kMats][kTokenTiles][4] = {};
    for (int base = warp; base < k_blocks; base += kWarps * kDepth) {
      uint4 w[kDepth][kMats][2], b0[kDepth];
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int k = (base + d * kWarps) * kBlockK + 8 * t;
        const bool valid = base + d * kWarps < k_blocks;
#pragma unroll
        for (int m = 0; m < kMats; ++m) {
          w[d][m][0] = valid ? load_16(mats[m] + g * stride + k) : make_uint4(0, 0, 0, 0);
          w[d][m][1] = valid ? load_16(mats[m] + (g + 8) * stride + k) : make_uint4(0, 0, 0, 0);
        }
        b0[d] = valid && b_rows[0] ? load_b(b_rows[0] + k) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int k = (base + d * kWarps) * kBlockK + 8 * t;
        if (base + d * kWarps >= k_blocks) break;
#pragma unroll
        for (int m = 0; m < kMats; ++m) mma_block(acc[m][0], w[d][m], b0[d]);
#pragma unroll
        for (int tt = 1; tt < kTokenTiles; ++tt) {
          if (tt >= tiles) break;
          const uint4 b = b_rows[tt] ? load_b(b_rows[tt] + k) : make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int m = 0; m < kMats; ++m) mma_block(acc[m][tt], w[d][m], b);
        }
      }
    }

    // The warps' partial sums, then each (token tile, lane) slot's epilogue by one thread.
#pragma unroll
    for (int tt = 0; tt < kTokenTiles; ++tt) {
      if (tt >= tiles) break;
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
        *reinterpret_cast<float4*>(&partial[warp][tt][lane][4 * m]) =
            make_float4(acc[m][tt][0], acc[m][tt][1], acc[m][tt][2], acc[m][tt][3]);
      }
    }
    __syncthreads();
    for (int tt = warp; tt < tiles; tt += kWarps) {
      float sum[4 * kMats] = {};
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
#pragma unroll
        for (int i = 0; i < 4 * kMats; ++i) sum[i] += partial[w][tt][lane][i];
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {  // accumulator element e: row g + 8 (e / 2), token 2t + e % 2 of the tile
        const int j = token0 + 8 * tt + 2 * t + e % 2, row = row0 + g + 8 * (e / 2);
        if (j >= count) continue;
        if constexpr (kPass == Pass::kRouter) {
          p.router_partial[(int64_t(split) * p.tokens + j) * p.experts + row] = sum[e];
        } else if constexpr (kPass == Pass::kGateUp) {
          static_cast<bf16*>(p.hidden)[int64_t(begin + j) * hidden_stride + row] =
              __float2bfloat16_rn(silu(sum[e]) * sum[4 + e]);
        } else {
          p.expert_out[int64_t(begin + j) * hidden_size + row] = sum[e];
        }
      }
    }
    __syncthreads();  // `partial` is reused by the next pass
  }
  if constexpr (kCounted) {
    if (kPass == Pass::kGateUp && threadIdx.x == 0) count_done(p.gate_up_done + group);  // h published
    wait_previous_kernel();
  }
}

// ---- combine: out[token] = sum over its pairs, routed ones first, then the shared expert ------------------
// A CTA per (token, 512 columns): each thread loads its 4 columns of every pair at once, so a CTA is one memory round
// trip (a CTA per token took a round trip per 1024 columns). The token's pair positions and weights go to shared
// memory first.
constexpr int kCombineThreads = 128, kCombineColumns = 4 * kCombineThreads;

template <bool kCounted>
__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(const MoeDecodeParams p) {
  constexpr int kMaxPairs = kMaxTopK + 1;
  __shared__ float weights[kMaxPairs];
  __shared__ int32_t positions[kMaxPairs];
  const int token = blockIdx.x, pairs = p.top_k + 1;
  if (kCounted) wait_for_count(p.route_ready, 2);  // the weights; else the route ended three launches back
  if (threadIdx.x < pairs) {
    weights[threadIdx.x] = p.token_weight[int64_t(token) * pairs + threadIdx.x];
    positions[threadIdx.x] = p.token_pair[int64_t(token) * pairs + threadIdx.x];
  }
  __syncthreads();
  await_previous_kernel();  // expert_out
  bf16* out = static_cast<bf16*>(p.out) + int64_t(token) * p.hidden_size;
  const int c = blockIdx.y * kCombineColumns + 4 * threadIdx.x;
  if (c < p.hidden_size) {
    float4 y[kMaxPairs];
#pragma unroll
    for (int k = 0; k < kMaxPairs; ++k) {
      if (k < pairs) y[k] = *reinterpret_cast<const float4*>(p.expert_out + int64_t(positions[k]) * p.hidden_size + c);
    }
    float acc[4] = {};
#pragma unroll
    for (int k = 0; k < kMaxPairs; ++k) {
      if (k >= pairs) break;
      acc[0] += weights[k] * y[k].x;
      acc[1] += weights[k] * y[k].y;
      acc[2] += weights[k] * y[k].z;
      acc[3] += weights[k] * y[k].w;
    }
    store_float<bf16, 4>(out + c, acc);
  }
}

}  // namespace moe_decode
}  // namespace qwen3next
