// Causal flash attention of a varlen prefill over the KV cache (see attention_prefill.h). Warp w owns query rows
// 16w .. 16w + 15 of the CTA's 128 (two warps per scheduler to hide each other's latency); the CTA streams the keys up to its last row's position (causal) through two
// stages of kKeys (64 where shared memory allows, else 32), and every warp takes each stage in one step
// (flash::attend_keys: O rescaled once and each Q fragment reused kKeys / 8 times per stage), skipping stages wholly
// after its own rows.
#include <cuda_bf16.h>

#include <algorithm>

#include "attention/attention_prefill.h"
#include "attention/flash_block.cuh"
#include "common/async_copy.cuh"
#include "common/chain.cuh"
#include "common/device.h"
#include "common/launch.h"

namespace qwen3next {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kDim = 256, kRows = 128, kStages = 2, kThreads = kRows / 16 * 32;
constexpr int kLd = kDim + 8;  // padded bf16 row: 33 16-byte units, ldmatrix without bank conflicts
constexpr int kVecs = kDim / 8;

template <int kKeys>
struct Smem {
  bf16 q[kRows][kLd];
  bf16 k[kStages][kKeys][kLd];
  bf16 v[kStages][kKeys][kLd];
};

template <int kKeys>
__device__ __forceinline__ void load_keys(bf16 (*dst)[kLd], const bf16* cache, const AttentionPrefillParams& p,
                                          int slot, int kv_head, int key0, int key_end, int tid) {
  for (int i = tid; i < kKeys * kVecs; i += kThreads) {
    const int r = i / kVecs, col = i % kVecs * 8, key = key0 + r;
    const bool valid = key < key_end;
    const bf16* src = cache + ((int64_t(slot) * p.max_len + (valid ? key : key0)) * p.kv_heads + kv_head) * kDim + col;
    cp_async_16_or_zero(&dst[r][col], src, valid);
  }
}

template <int kKeys>
__global__ void __launch_bounds__(kThreads, 1) attention_prefill_kernel(const AttentionPrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Smem<kKeys>& sm = *reinterpret_cast<Smem<kKeys>*>(smem_bytes);
  const int head = blockIdx.x, seq = blockIdx.z, kv_head = head / (p.query_heads / p.kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  await_previous_kernel();  // the pre-pass's queries, keys and values (and whatever wrote the lengths)
  const int slot = p.slots[seq];
  if (slot < 0 || slot >= p.num_slots) return;
  const int start = p.cu_seqlens[seq], length = p.cu_seqlens[seq + 1] - start;
  const int context = min(p.context_lens[seq], p.max_len), first_position = context - length;
  const bf16* key_cache = static_cast<const bf16*>(p.key_cache);
  const bf16* value_cache = static_cast<const bf16*>(p.value_cache);

  // Tiles last to first: the longest (causal) start first and the short ones fill the last wave.
  for (int tile = (length + kRows - 1) / kRows - 1 - blockIdx.y; tile >= 0; tile -= gridDim.y) {
    const int row0 = tile * kRows, rows = min(kRows, length - row0);
    const int key_end = max(min(first_position + row0 + rows, context), 0);  // past the tile's last query
    const int key_tiles = (key_end + kKeys - 1) / kKeys;
    __syncthreads();  // the previous tile is done with shared memory
    for (int i = tid; i < kRows * kVecs; i += kThreads) {
      const int r = i / kVecs, col = i % kVecs * 8;
      const int64_t token = start + row0 + (r < rows ? r : 0);
      cp_async_16_or_zero(&sm.q[r][col], static_cast<const bf16*>(p.q) + (token * p.query_heads + head) * kDim + col,
                          r < rows);
    }
    if (key_tiles > 0) {
      load_keys<kKeys>(sm.k[0], key_cache, p, slot, kv_head, 0, key_end, tid);
      load_keys<kKeys>(sm.v[0], value_cache, p, slot, kv_head, 0, key_end, tid);
    }
    cp_async_commit();

    int last_key[2];  // of rows 16 warp + g and + 8: their positions (causal); -1 past the tile's rows
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = 16 * warp + g + 8 * half;
      last_key[half] = r < rows ? min(first_position + row0 + r, key_end - 1) : -1;
    }
    const int warp_last = 16 * warp < rows ? min(first_position + row0 + min(16 * warp + 15, rows - 1), key_end - 1)
                                           : -1;
    flash::RowState<kDim> state;
    for (int kt = 0; kt < key_tiles; ++kt) {
      const int stage = kt % kStages, key0 = kt * kKeys;
      if (kt + 1 < key_tiles) {
        load_keys<kKeys>(sm.k[(kt + 1) % kStages], key_cache, p, slot, kv_head, key0 + kKeys, key_end, tid);
        load_keys<kKeys>(sm.v[(kt + 1) % kStages], value_cache, p, slot, kv_head, key0 + kKeys, key_end, tid);
      }
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();  // this stage (and the query rows) have landed for every thread
      if (key0 <= warp_last) {  // a stage wholly after the warp's rows adds nothing
        flash::attend_keys<kDim, kLd, kKeys>(state, &sm.q[0][0], 16 * warp, &sm.k[stage][0][0], &sm.v[stage][0][0],
                                             0, key0, last_key, p.scale_log2, lane);
      }
      __syncthreads();  // every warp is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    state.reduce_sums();

    // out = O / l * sigmoid(gate)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = 16 * warp + g + 8 * half;
      if (r >= rows) continue;
      const int64_t token = start + row0 + r;
      const float inv_sum = 1.f / state.sum[half];
      const bf16* gate = static_cast<const bf16*>(p.gate) + token * p.gate_row_stride + head * p.gate_head_stride;
      unsigned* out = reinterpret_cast<unsigned*>(static_cast<bf16*>(p.out) + (token * p.query_heads + head) * kDim);
#pragma unroll
      for (int nt = 0; nt < kDim / 8; ++nt) {
        const int col = nt * 8 + 2 * t;
        const float2 z = unpack_bf16(*reinterpret_cast<const unsigned*>(gate + col));
        out[col / 2] = pack_bf16(state.o[nt][2 * half] * inv_sum / (1.f + __expf(-z.x)),
                                 state.o[nt][2 * half + 1] * inv_sum / (1.f + __expf(-z.y)));
      }
    }
  }
}

template <int kKeys>
void launch(const AttentionPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<attention_prefill_kernel<kKeys>>(sizeof(Smem<kKeys>), "attention_prefill");
  const dim3 grid = attention_prefill_grid(p, kRows);
  launch_chained(attention_prefill_kernel<kKeys>, grid, kThreads, sizeof(Smem<kKeys>), stream, p);
}

}  // namespace

void run_attention_prefill(const AttentionPrefillParams& p, bool portable, cudaStream_t stream) {
  if (p.seqs == 0) return;
#ifdef QWEN3NEXT_SM90A
  if (!portable && current_device_is_sm90()) {
    run_attention_prefill_sm90(p, stream);
    return;
  }
#endif
  // 64-key stages need 198 KB (sm90, sm100); the A100's 163 KB takes 32-key ones (132 KB).
  if (int(sizeof(Smem<64>)) <= current_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>()) {
    launch<64>(p, stream);
  } else {
    launch<32>(p, stream);
  }
}

}  // namespace qwen3next
