// Device code of the split-context decode attention (see attention_decode.h for the launches).
//
// `split` CTA: 4 warps, the head group's rows (row r = token r / group, query head r % group of the KV head) in
// row tiles of 16; keys stream through shared memory in stages of 64 (cp.async, two or three stages). With 1 row tile
// (T <= 2) the 4 warps take 16 keys of each stage each, with 2 (T <= 4) 32 keys, with 4 all 64 keys of their own
// row tile; each warp keeps an online softmax (row max m, row sum l, unnormalised O: 16 x 256 fp32 in registers)
// and the warps of a row tile merge at the end. Scores are in log2 units (scale * log2 e folded in).
#pragma once

#include <cuda_bf16.h>

#include "attention/attention_decode.h"
#include "attention/flash_block.cuh"
#include "common/async_copy.cuh"
#include "common/chain.cuh"
#include "common/mma.cuh"
#include "common/vec.cuh"

namespace qwen3next {
namespace attention_decode {

using bf16 = __nv_bfloat16;

constexpr int kDim = 256;  // head dim
constexpr int kKeys = kAttentionDecodeStageKeys;
constexpr int kThreads = 128, kWarps = kThreads / 32;
constexpr int kLd = kDim + 8;  // padded bf16 row: 33 16-byte units, ldmatrix without bank conflicts
// fp32 row of a warp's O in the merge: 16-byte aligned rows (float4 reads), and a half-warp's float2 stores of
// its accumulator (4 rows x 4 column pairs) fall on 32 distinct banks.
constexpr int kMergeLd = kDim + 8;

// Dynamic shared memory: the query rows, then kStages stages of K and V (reused to merge the warps' results).
// Three stages keep two in flight while one is used (211 KB with one row tile: sm90 and sm100), else two.
template <int kStages>
struct SplitSmem {
  static constexpr int kStageBytes = kKeys * kLd * 2;
  static constexpr int kMergeBytes = kWarps * 16 * (kMergeLd + 2) * 4;  // per warp: 16 rows of O, then (m, l)
  static constexpr int kStagesBytes = 2 * kStages * kStageBytes;
  static_assert(kMergeBytes <= kStagesBytes, "the merge reuses the stages");
  static int bytes(int row_tiles) { return row_tiles * 16 * kLd * 2 + kStagesBytes; }
};

// Row tiles of 16 for a head group's `rows` query rows (query heads per KV head x tokens per sequence).
__host__ __device__ __forceinline__ int row_tiles_of(int rows) { return rows <= 16 ? 1 : rows <= 32 ? 2 : 4; }

struct Split {
  int slot, context, key_begin, key_end;
};

// Split `split`'s keys of the sequence in cache slot `slot` with `context` keys.
__device__ __forceinline__ Split split_range(const AttentionDecodeParams& p, int slot, int context, int split) {
  Split s{slot, context, 0, 0};
  if (s.slot < 0 || s.slot >= p.num_slots) return s;  // padding: empty range
  s.context = min(max(s.context, 0), p.max_len);
  const int per_split = attention_decode_split_keys(s.context, p.splits);
  s.key_begin = min(split * per_split, s.context);
  s.key_end = min(s.key_begin + per_split, s.context);
  return s;
}

__device__ __forceinline__ void load_keys(bf16* dst, const bf16* cache, const AttentionDecodeParams& p, int slot,
                                          int head, int key0, int key_end, int tid) {
  constexpr int kVecs = kDim / 8;
  for (int i = tid; i < kKeys * kVecs; i += kThreads) {
    const int r = i / kVecs, col = i % kVecs * 8, key = key0 + r;
    const bool valid = key < key_end;
    const bf16* src = cache + ((int64_t(slot) * p.max_len + (valid ? key : key0)) * p.kv_heads + head) * kDim + col;
    cp_async_16_or_zero(dst + r * kLd + col, src, valid);
  }
}

template <int kStages>
__global__ void __launch_bounds__(kThreads, 1) attention_decode_split_kernel(const AttentionDecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  const int split = blockIdx.x, head = blockIdx.y, b = blockIdx.z;
  const int group = p.query_heads / p.kv_heads, rows = group * p.tokens;
  const int row_tiles = row_tiles_of(rows), slices = kWarps / row_tiles;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int row_tile = warp % row_tiles, slice = warp / row_tiles, slice_keys = kKeys / slices;
  bf16* q_smem = reinterpret_cast<bf16*>(smem_bytes);
  bf16* k_smem = q_smem + row_tiles * 16 * kLd;
  bf16* v_smem = k_smem + kStages * kKeys * kLd;
  const bf16* key_cache = static_cast<const bf16*>(p.key_cache);
  const bf16* value_cache = static_cast<const bf16*>(p.value_cache);

  // While the kernel before (the pre-pass) runs, only hints: the first stages' keys and values of the split as the
  // slot and length stand now (read through L2, no stale copy left in L1) are asked of L2, a key row per thread.
  // The slot, length, queries and cache may be what that kernel writes: they are read for real after the await.
  {
    const Split hinted = split_range(p, __ldcg(p.slots + b), __ldcg(p.context_lens + b), split);
    constexpr int kHintedKeys = (kStages - 1) * kKeys;
    static_assert(kThreads == 2 * kKeys, "a thread per key row of the first stage's K and V");
    for (int key = hinted.key_begin + tid % kKeys; key < min(hinted.key_end, hinted.key_begin + kHintedKeys);
         key += kKeys) {
      const bf16* cache = tid < kKeys ? key_cache : value_cache;
      prefetch_l2(cache + ((int64_t(hinted.slot) * p.max_len + key) * p.kv_heads + head) * kDim, kDim * 2);
    }
  }
  await_previous_kernel();  // the pre-pass's queries and new keys and values
  const Split range = split_range(p, p.slots[b], p.context_lens[b], split);

  // Query rows (zeros past the group's rows), then the first stage of keys and values.
  for (int i = tid; i < row_tiles * 16 * (kDim / 8); i += kThreads) {
    const int r = i / (kDim / 8), col = i % (kDim / 8) * 8;
    const bool valid = r < rows;
    const int token = b * p.tokens + (valid ? r / group : 0), q_head = head * group + (valid ? r % group : 0);
    cp_async_16_or_zero(q_smem + r * kLd + col,
                        static_cast<const bf16*>(p.q) + (int64_t(token) * p.query_heads + q_head) * kDim + col, valid);
  }
  const int tiles = (range.key_end - range.key_begin + kKeys - 1) / kKeys;
  // Tile t goes to stage t % kStages; every step commits one copy group (empty past the last tile), so that
  // waiting for all but the newest kStages - 1 groups means tile t has landed.
  auto load_tile = [&](int tile) {
    if (tile < tiles) {
      const int stage = tile % kStages, key0 = range.key_begin + tile * kKeys;
      load_keys(k_smem + stage * kKeys * kLd, key_cache, p, range.slot, head, key0, range.key_end, tid);
      load_keys(v_smem + stage * kKeys * kLd, value_cache, p, range.slot, head, key0, range.key_end, tid);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int tile = 0; tile < kStages - 1; ++tile) load_tile(tile);  // the query rows ride with tile 0

  // This thread's rows: r0 = 16 row_tile + g and r0 + 8; the last key each may see (causal, within the split),
  // -1 past the rows.
  int last_key[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = 16 * row_tile + g + 8 * half;
    last_key[half] = r < rows ? min(range.context - p.tokens + r / group, range.key_end - 1) : -1;
  }
  flash::RowState<kDim> rows_state;

  for (int tile = 0; tile < tiles; ++tile) {
    const int stage = tile % kStages, key0 = range.key_begin + tile * kKeys;
    load_tile(tile + kStages - 1);  // into the stage freed by the previous step's closing barrier
    cp_async_wait<kStages - 1>();
    __syncthreads();  // this stage has landed for every thread
    const bf16* k_tile = k_smem + stage * kKeys * kLd;
    const bf16* v_tile = v_smem + stage * kKeys * kLd;

    for (int sub = slice * slice_keys; sub < (slice + 1) * slice_keys; sub += 16) {
      flash::attend_keys<kDim, kLd, 16>(rows_state, q_smem, 16 * row_tile, k_tile, v_tile, sub, key0, last_key,
                                        p.scale_log2, lane);
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }
  cp_async_wait<0>();
  __syncthreads();  // no copy in flight into the stages the merge reuses

  // Merge the warps of each row tile (their key slices) and write the split's partial result. Slice s keeps row r
  // at merge row 16 row_tiles s + r. A thread takes 4 columns of a row per step (rows x 64 steps per CTA) and
  // weighs the row's slices itself: no serial loop per element, no barrier for the weights.
  rows_state.reduce_sums();
  float* merge = reinterpret_cast<float*>(k_smem);  // [kWarps * 16][kMergeLd]: O, then [kWarps * 16] (m, l)
  float2* merge_ml = reinterpret_cast<float2*>(merge + kWarps * 16 * kMergeLd);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = warp * 16 + g + 8 * half;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt) {
      *reinterpret_cast<float2*>(merge + row * kMergeLd + nt * 8 + 2 * t) =
          make_float2(rows_state.o[nt][2 * half], rows_state.o[nt][2 * half + 1]);
    }
    if (t == 0) merge_ml[row] = make_float2(rows_state.max[half], rows_state.sum[half]);
  }
  __syncthreads();
  const int64_t base_row = ((int64_t(b) * p.kv_heads + head) * p.splits + split) * rows;
  const int slice_rows = 16 * row_tiles;
  for (int i = tid; i < rows * (kDim / 4); i += kThreads) {
    const int r = i / (kDim / 4), col = i % (kDim / 4) * 4;
    // Every slot read before any is used (one shared-memory round trip); past the slices a slot rereads the last
    // slice and weighs 0.
    float2 ml[kWarps];
    float4 o[kWarps];
    float m = -INFINITY;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      const int row = min(s, slices - 1) * slice_rows + r;
      ml[s] = merge_ml[row];
      o[s] = *reinterpret_cast<const float4*>(merge + row * kMergeLd + col);
      m = fmaxf(m, ml[s].x);
    }
    float4 out = make_float4(0.f, 0.f, 0.f, 0.f);
    float sum = 0.f;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      const float weight = s >= slices || ml[s].x == -INFINITY ? 0.f : exp2f(ml[s].x - m);
      out.x += weight * o[s].x, out.y += weight * o[s].y, out.z += weight * o[s].z, out.w += weight * o[s].w;
      sum += weight * ml[s].y;
    }
    *reinterpret_cast<float4*>(p.partial_out + (base_row + r) * kDim + col) = out;
    if (col == 0) p.partial_max[base_row + r] = m, p.partial_sum[base_row + r] = sum;
  }
}

// ---- reduce: a CTA per (token, query head), 8 warps ---------------------------------------------------------
// A thread per split (splits <= kDim) finds the splits' weights e^(m_s - m) and the total row sum; warp w sums
// splits w, w + 8, ... over all 256 columns (8 per lane), kSplitsInFlight splits' loads issued at once (the first
// ones with the maxima and sums), and the warps' sums meet in shared memory: two memory round trips in all at up to
// 64 splits. The slot and gate, final before the split kernel began, are read before the await.

constexpr int kReduceWarps = kDim / 32, kSplitsInFlight = 8;

__device__ __forceinline__ float block_reduce(float x, float* scratch, bool is_max) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, x, offset);
    x = is_max ? fmaxf(x, other) : x + other;
  }
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = scratch[0];
  for (int w = 1; w < kReduceWarps; ++w) x = is_max ? fmaxf(x, scratch[w]) : x + scratch[w];
  __syncthreads();  // scratch is reused by the next reduction
  return x;
}

__global__ void __launch_bounds__(kDim) attention_decode_reduce_kernel(const AttentionDecodeParams p) {
  __shared__ float weight[kDim], scratch[kReduceWarps];
  __shared__ __align__(16) float warp_out[kReduceWarps][kDim];
  const int token = blockIdx.x, q_head = blockIdx.y, d = threadIdx.x, warp = d / 32, lane = d % 32;
  const int b = token / p.tokens, group = p.query_heads / p.kv_heads, head = q_head / group;
  const int slot = p.slots[b];
  if (slot < 0 || slot >= p.num_slots) return;  // the whole CTA: padding
  const float gate = to_float(static_cast<const bf16*>(
      p.gate)[int64_t(token) * p.gate_row_stride + int64_t(q_head) * p.gate_head_stride + d]);
  await_previous_kernel();  // the splits' partials
  const int rows = group * p.tokens, r = (token % p.tokens) * group + q_head % group;
  const int64_t first = (int64_t(b) * p.kv_heads + head) * p.splits * rows + r;  // split s: first + s * rows
  constexpr int kStep = kReduceWarps * kSplitsInFlight;
  float4 y[kSplitsInFlight][2];
  auto load_rows = [&](int s0) {  // splits s0 + u kReduceWarps (the last again past the end, weighed 0)
#pragma unroll
    for (int u = 0; u < kSplitsInFlight; ++u) {
      const float* row = p.partial_out + (first + int64_t(min(s0 + u * kReduceWarps, p.splits - 1)) * rows) * kDim;
      y[u][0] = *reinterpret_cast<const float4*>(row + 4 * lane);
      y[u][1] = *reinterpret_cast<const float4*>(row + kDim / 2 + 4 * lane);
    }
  };
  load_rows(warp);
  const float split_max = d < p.splits ? p.partial_max[first + int64_t(d) * rows] : -INFINITY;
  const float split_sum = d < p.splits ? p.partial_sum[first + int64_t(d) * rows] : 0.f;
  const float m = block_reduce(split_max, scratch, true);
  weight[d] = split_max == -INFINITY ? 0.f : exp2f(split_max - m);  // -inf: a split without keys
  const float sum = block_reduce(weight[d] * split_sum, scratch, false);  // its barriers publish `weight`

  float acc[8] = {};
  for (int s0 = warp;;) {
#pragma unroll
    for (int u = 0; u < kSplitsInFlight; ++u) {
      const int s = s0 + u * kReduceWarps;
      const float w = s < p.splits ? weight[s] : 0.f;
      acc[0] += w * y[u][0].x, acc[1] += w * y[u][0].y, acc[2] += w * y[u][0].z, acc[3] += w * y[u][0].w;
      acc[4] += w * y[u][1].x, acc[5] += w * y[u][1].y, acc[6] += w * y[u][1].z, acc[7] += w * y[u][1].w;
    }
    s0 += kStep;
    if (s0 >= p.splits) break;
    load_rows(s0);
  }
  *reinterpret_cast<float4*>(&warp_out[warp][4 * lane]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  *reinterpret_cast<float4*>(&warp_out[warp][kDim / 2 + 4 * lane]) = make_float4(acc[4], acc[5], acc[6], acc[7]);
  __syncthreads();
  float out = 0.f;
#pragma unroll
  for (int w = 0; w < kReduceWarps; ++w) out += warp_out[w][d];
  static_cast<bf16*>(p.out)[(int64_t(token) * p.query_heads + q_head) * kDim + d] =
      __float2bfloat16_rn(out / sum / (1.f + __expf(-gate)));
}

}  // namespace attention_decode
}  // namespace qwen3next
