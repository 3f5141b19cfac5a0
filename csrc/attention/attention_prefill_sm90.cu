// Causal flash attention of a varlen prefill over the KV cache on sm90a: warpgroup MMAs (wgmma) fed by TMA. A CTA
// of three warpgroups: one thread of the first copies keys and values (TMA, into 128-byte-swizzled 64-key stages,
// two of each, on mbarriers); the other two own 64 query rows each of the CTA's 128 (one query head). Per stage and
// warpgroup: S = Q K^T as 16 wgmma (Q and K from shared memory), the online softmax in registers, O += P V as 4
// wgmma with P straight from registers (the S accumulator's layout, converted to bf16, is the A operand's) and V
// read transposed from the same shared-memory tile; P V of one stage runs while the next stage's softmax does, and
// the two warpgroups take turns issuing, so that each one's softmax also runs under the other's GEMMs.
// Same contract as the portable kernel (attention_prefill.h).
#include "attention/attention_prefill.h"

#ifdef QWEN3NEXT_SM90A
#include <cuda_bf16.h>

#include <algorithm>

#include "common/async_copy.cuh"
#include "common/chain.cuh"
#include "common/launch.h"
#include "common/mma.cuh"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90.hpp"
#include "cute/atom/mma_traits_sm90_gmma.hpp"
#include "cute/tensor.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"
#include "cutlass/cuda_host_adapter.hpp"

namespace qwen3next {
namespace {

using namespace cute;
using Element = cute::bfloat16_t;

constexpr int kDim = 256, kRows = 128, kKeys = 64, kStages = 2;
constexpr int kThreads = 384, kWarpgroupThreads = 128;  // warpgroup 0 copies, 1 and 2 compute
// Named barriers (CUTLASS's user ids): 1 + g, compute warpgroup g's own (its query rows); kTurnBarrier + g, its turn.
constexpr int kTurnBarrier = 3;
constexpr int kVecs = kDim / 8;  // 16-byte chunks per row
constexpr int kBoxCols = 64;  // a TMA box: 64 keys x 64 columns (128 bytes, the swizzle's span)
constexpr uint32_t kStageBytes = kKeys * kDim * 2;
using Rows = Int<kRows>;
using Keys = Int<kKeys>;
using Dim = Int<kDim>;

// Each warpgroup a 64-row slice of the tile (the atoms laid along M).
using MmaQK = decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, Shape<_64, Keys, Dim>>(),
                                      Layout<Shape<_2, _1, _1>>{}));
using MmaPV = decltype(make_tiled_mma(
    GMMA::rs_op_selector<Element, Element, float, Shape<_64, Dim, Keys>, GMMA::Major::K, GMMA::Major::MN>(),
    Layout<Shape<_2, _1, _1>>{}));

// Q [rows, dim] and each stage's K and V [keys, dim], dim contiguous in 128-byte swizzled atoms; V^T [dim, keys] is
// a view of V's tile (the transposed B operand of P V). A stage is addressed by its base pointer (the descriptors'
// offsets within it stay compile-time constants).
using SmemQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Rows, Dim>{}));
using SmemKV = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Keys, Dim>{}));
using SmemVt = decltype(composition(SmemKV{}, make_ordered_layout(Shape<Dim, Keys>{}, Step<_2, _1>{})));

using Barrier = cutlass::arch::ClusterTransactionBarrier;

struct Smem {
  alignas(1024) Element q[cosize_v<SmemQ>];
  alignas(1024) Element k[kStages][cosize_v<SmemKV>];
  alignas(1024) Element v[kStages][cosize_v<SmemKV>];
  // Per stage: full when its copy has landed (TMA transaction bytes), empty when every compute warp is done with it.
  uint64_t key_full[kStages], key_empty[kStages], value_full[kStages], value_empty[kStages];
};
constexpr uint32_t kComputeWarps = 2 * kWarpgroupThreads / 32;

// The accumulator layout ((2, 2, N / 8), 1, 1) of a 64 x N wgmma read as the A operand layout ((2, 2, 2), 1, N / 16)
// of the next one: a k-step of 16 is two 8-column groups of the accumulator.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_a(Layout acc) {
  static_assert(decltype(rank(acc))::value == 3 && decltype(rank(get<0>(acc)))::value == 3, "((2, 2, N/8), M, N)");
  auto groups = logical_divide(get<0, 2>(acc), Tile<_2>{});  // ((2, N / 16)): pairs of groups, then the pairs
  return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0, 0>(groups)), get<1>(acc),
                     coalesce(make_layout(get<2>(acc), get<0, 1>(groups))));
}

// The query rows [row0, row0 + 64) of a warpgroup's slice of the tile, by cp.async (zeros past `rows`); its 128
// threads each copy one 16-byte column of every fourth row.
__device__ __forceinline__ void load_query_rows(Element* q_tile, const __nv_bfloat16* q, int64_t first_token,
                                                int row0, int rows, int head, int query_heads, int thread) {
  Tensor sQ = make_tensor(make_smem_ptr(q_tile), SmemQ{});
  constexpr int kRowStep = kWarpgroupThreads / kVecs;
  const int col = thread % kVecs * 8;
#pragma unroll 1
  for (int r = row0 + thread / kVecs; r < row0 + 64; r += kRowStep) {
    const bool valid = r < rows;
    cp_async_16_or_zero(&sQ(r, col), q + ((first_token + (valid ? r : 0)) * query_heads + head) * kDim + col, valid);
  }
}

// Stage n of a tile covers keys [key_base, key_base + 64): n * 64, except the last stage, which ends at key_end
// (its first keys repeat the previous stage's and are masked): every key a copy reads is one the sequence has, or
// (before key 0) TMA's zero fill, so no stale cache row past the context, however poisoned, reaches P V.
__device__ __forceinline__ int stage_key_base(int n, int key_end) { return min(n * kKeys, key_end - kKeys); }

// One stage of keys or values: four 64-column boxes of the [slots, max_len, kv_heads, 256] cache.
__device__ __forceinline__ void copy_stage(const CUtensorMap* map, uint64_t* full, Element* stage, int slot, int kv_head,
                                           int key_base) {
  Barrier::arrive_and_expect_tx(full, kStageBytes);
#pragma unroll
  for (int box = 0; box < kDim / kBoxCols; ++box) {
    SM90_TMA_LOAD_4D::copy(map, full, uint64_t(TMA::CacheHintSm90::EVICT_LAST), stage + box * kKeys * kBoxCols,
                           box * kBoxCols, kv_head, key_base, slot);
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    attention_prefill_sm90_kernel(const AttentionPrefillParams p, const __grid_constant__ CUtensorMap key_map,
                                  const __grid_constant__ CUtensorMap value_map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_bytes[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_bytes);

  const int head = blockIdx.x, seq = blockIdx.z, kv_head = head / (p.query_heads / p.kv_heads);
  const int warpgroup = threadIdx.x / kWarpgroupThreads;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&sm.key_full[s], 1);
      Barrier::init(&sm.value_full[s], 1);
      Barrier::init(&sm.key_empty[s], kComputeWarps);
      Barrier::init(&sm.value_empty[s], kComputeWarps);
    }
    cutlass::arch::fence_barrier_init();
    prefetch_tma_descriptor(&key_map);
    prefetch_tma_descriptor(&value_map);
  }
  __syncthreads();
  await_previous_kernel();  // the pre-pass's queries, keys and values (and whatever wrote the lengths)
  const int slot = p.slots[seq];
  if (slot < 0 || slot >= p.num_slots) return;
  const int start = p.cu_seqlens[seq], length = p.cu_seqlens[seq + 1] - start;
  const int context = min(p.context_lens[seq], p.max_len), first_position = context - length;
  const int first_tile = (length + kRows - 1) / kRows - 1 - blockIdx.y;  // tiles last to first (causal: longest first)
  // Past the tile's last query: its keys end here.
  auto key_end_of = [&](int row0, int rows) { return max(min(first_position + row0 + rows, context), 0); };

  // Stage uses so far in this CTA: use u is stage u % 2 in its (u / 2)-th round, whose barrier phase is (u / 2) & 1.
  int uses = 0;
  if (warpgroup == 0) {
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (threadIdx.x != 0) return;
    for (int tile = first_tile; tile >= 0; tile -= gridDim.y) {
      const int row0 = tile * kRows, key_end = key_end_of(row0, min(kRows, length - row0));
      const int key_tiles = (key_end + kKeys - 1) / kKeys;
      for (int n = 0; n < key_tiles; ++n, ++uses) {
        const int stage = uses % kStages, round_parity = (uses / kStages) & 1;
        const int key_base = stage_key_base(n, key_end);
        Barrier::wait(&sm.key_empty[stage], round_parity ^ 1);  // the first round's wait passes at once
        copy_stage(&key_map, &sm.key_full[stage], sm.k[stage], slot, kv_head, key_base);
        Barrier::wait(&sm.value_empty[stage], round_parity ^ 1);
        copy_stage(&value_map, &sm.value_full[stage], sm.v[stage], slot, kv_head, key_base);
      }
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<240>();
  const int tid = threadIdx.x - kWarpgroupThreads, compute_group = warpgroup - 1;  // over the 256 compute threads
  const bool warp_leader = tid % 32 == 0;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q);
  Tensor sQ = make_tensor(make_smem_ptr(sm.q), SmemQ{});

  MmaQK mma_qk;
  MmaPV mma_pv;
  mma_pv.accumulate_ = GMMA::ScaleOut::One;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // descriptors (MMA, 1, kDim / 16)
  Tensor tSrS = partition_fragment_C(mma_qk, Shape<Rows, Keys>{});  // ((2, 2, 8), 1, 1) fp32
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<Rows, Dim>{});  // ((2, 2, 32), 1, 1) fp32
  Tensor rP = make_tensor<Element>(tSrS.layout());
  Tensor tOrP = make_tensor(rP.data(), accumulator_as_a(tSrS.layout()));
  static_assert(decltype(size(tSrS))::value == 32 && decltype(size(tOrO))::value == 128, "per thread: 2 rows");
  // The wgmma accumulator: element i = c + 2 h + 4 j of a thread holds row first_row + 8 h, column 8 j + 2 (lane % 4)
  // + c (its two rows, and two adjacent columns of every 8-column group).
  const int first_row = 64 * compute_group + 16 * (tid / 32 % 4) + tid % 32 / 4, first_column = 2 * (tid % 4);
  auto row_of = [&](int i) { return first_row + 8 * (i / 2 % 2); };
  // The compute warpgroups take turns issuing their GEMMs (named barrier kTurnBarrier + g: warpgroup g waits on its
  // own, the other arrives on it once it has issued), so that one's softmax runs while the other's GEMMs hold the
  // tensor cores. Both issue at the same steps of the same tiles; the second lets the first go first.
  auto await_turn = [&] {
    cutlass::arch::NamedBarrier::arrive_and_wait(2 * kWarpgroupThreads, kTurnBarrier + compute_group);
  };
  auto pass_turn = [&] {
    cutlass::arch::NamedBarrier::arrive(2 * kWarpgroupThreads, kTurnBarrier + 1 - compute_group);
  };
  if (compute_group == 1) pass_turn();

  for (int tile = first_tile; tile >= 0; tile -= gridDim.y) {
    const int row0 = tile * kRows, rows = min(kRows, length - row0);
    const int key_end = key_end_of(row0, rows), key_tiles = (key_end + kKeys - 1) / kKeys;
    // This warpgroup's query rows: its previous tile's S = Q K^T are done (waited), so only its own threads need
    // to meet; the copies are generic-proxy writes that wgmma reads through the async proxy.
    load_query_rows(sm.q, q, start + row0, 64 * compute_group, rows, head, p.query_heads, tid % kWarpgroupThreads);
    cp_async_commit();
    cp_async_wait<0>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    cutlass::arch::NamedBarrier::arrive_and_wait(kWarpgroupThreads, 1 + compute_group);

    // The thread's two rows: their last visible key (causal; -1 past the tile's rows), running max and sum.
    int last_key[2];
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = row_of(2 * half);
      last_key[half] = r < rows ? min(first_position + row0 + r, key_end - 1) : -1;
    }
    clear(tOrO);

    // Software-pipelined: step n issues S_n = Q K_n^T and O += P_{n-1} V_{n-1} back to back, so that the tensor
    // cores run P V while this warpgroup does S_n's softmax; each stage goes back to the copier as soon as its
    // GEMM is done. Both warpgroups take every stage (the first one's last is wholly masked on the diagonal), and
    // the first and last steps are peeled: ptxas serializes wgmma under branches it cannot prove uniform or match
    // with their waits.
    auto await_stage = [&](uint64_t* full, int n) {
      Barrier::wait(&full[(uses + n) % kStages], ((uses + n) / kStages) & 1);
    };
    auto release_stage = [&](uint64_t* empty, int n) {
      if (warp_leader) Barrier::arrive(&empty[(uses + n) % kStages]);
    };
    auto begin_step = [&] {
      warpgroup_fence_operand(tSrS);
      warpgroup_fence_operand(tOrO);
      warpgroup_arrive();
    };
    auto issue_scores = [&](int n) {
      Tensor tSrK = thr_qk.partition_fragment_B(make_tensor(make_smem_ptr(sm.k[(uses + n) % kStages]), SmemKV{}));
      mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
      for (int k = 0; k < size<2>(tSrQ); ++k) {
        cute::gemm(mma_qk, tSrQ(_, _, k), tSrK(_, _, k), tSrS);
        mma_qk.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
    };
    auto issue_values = [&](int n) {
      Tensor tOrV = thr_pv.partition_fragment_B(make_tensor(make_smem_ptr(sm.v[(uses + n) % kStages]), SmemVt{}));
      cute::gemm(mma_pv, tOrP, tOrV, tOrO);
      warpgroup_commit_batch();
    };
    // Online softmax of S_n in log2 units (masked keys are -inf); P stays fp32 in S's registers until the previous
    // P V, which reads rP, is done.
    float correction[2];
    auto softmax = [&](int n) {
      warpgroup_fence_operand(tSrS);
      const int first_key = n * kKeys, key_base = stage_key_base(n, key_end);
      float stage_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int i = 0; i < size(tSrS); ++i) {
        const int half = (i / 2) % 2, key = key_base + first_column + 8 * (i / 4) + i % 2;
        tSrS(i) = key >= first_key && key <= last_key[half] ? tSrS(i) * p.scale_log2 : -INFINITY;
        stage_max[half] = fmaxf(stage_max[half], tSrS(i));
      }
      float base[2];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        stage_max[half] = fmaxf(stage_max[half], __shfl_xor_sync(0xffffffffu, stage_max[half], 1));
        stage_max[half] = fmaxf(stage_max[half], __shfl_xor_sync(0xffffffffu, stage_max[half], 2));
        const float new_max = fmaxf(row_max[half], stage_max[half]);
        base[half] = new_max == -INFINITY ? 0.f : new_max;  // nothing visible yet: every p is 0
        correction[half] = exp2f(row_max[half] - base[half]);
        row_max[half] = new_max;
        row_sum[half] *= correction[half];
      }
#pragma unroll
      for (int i = 0; i < size(tSrS); ++i) {
        const int half = (i / 2) % 2;
        tSrS(i) = exp2f(tSrS(i) - base[half]);
        row_sum[half] += tSrS(i);
      }
    };
    auto rescale_and_keep_p = [&] {
      warpgroup_fence_operand(tOrO);
#pragma unroll
      for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= correction[(i / 2) % 2];
#pragma unroll
      for (int i = 0; i < size(tSrS); ++i) rP(i) = Element(tSrS(i));
    };

    if (key_tiles > 0) {
      await_stage(sm.key_full, 0);
      await_turn();
      begin_step();
      issue_scores(0);
      pass_turn();
      warpgroup_wait<0>();
      release_stage(sm.key_empty, 0);
      softmax(0);
      rescale_and_keep_p();
      for (int n = 1; n < key_tiles; ++n) {
        await_stage(sm.key_full, n);
        await_stage(sm.value_full, n - 1);
        await_turn();
        begin_step();
        issue_scores(n);
        issue_values(n - 1);
        pass_turn();
        warpgroup_wait<1>();
        release_stage(sm.key_empty, n);
        softmax(n);
        warpgroup_wait<0>();
        release_stage(sm.value_empty, n - 1);
        rescale_and_keep_p();
      }
      await_stage(sm.value_full, key_tiles - 1);
      await_turn();
      begin_step();
      issue_values(key_tiles - 1);
      pass_turn();
      warpgroup_wait<0>();
      release_stage(sm.value_empty, key_tiles - 1);
      warpgroup_fence_operand(tOrO);
    }
    uses += key_tiles;

    // out = O / l * sigmoid(gate), two adjacent columns per store. Every gate word of the row is loaded before the
    // first store (out might alias gate, for all the compiler knows: each load would wait for the store before it).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      row_sum[half] += __shfl_xor_sync(0xffffffffu, row_sum[half], 1);
      row_sum[half] += __shfl_xor_sync(0xffffffffu, row_sum[half], 2);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = row_of(2 * half);
      if (r >= rows) continue;
      const int64_t token = start + row0 + r;
      const float inv_sum = 1.f / row_sum[half];
      // Row pointers at the thread's first column: the 32 column groups are then constant offsets.
      const __nv_bfloat16* gate = static_cast<const __nv_bfloat16*>(p.gate) + token * p.gate_row_stride +
                                  head * p.gate_head_stride + first_column;
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out) + (token * p.query_heads + head) * kDim + first_column;
      unsigned gate_words[kDim / 8];
#pragma unroll
      for (int group = 0; group < kDim / 8; ++group) {
        gate_words[group] = *reinterpret_cast<const unsigned*>(gate + 8 * group);
      }
#pragma unroll
      for (int group = 0; group < kDim / 8; ++group) {
        const int i = 4 * group + 2 * half;
        const float2 z = unpack_bf16(gate_words[group]);
        *reinterpret_cast<unsigned*>(out + 8 * group) =
            pack_bf16(tOrO(i) * inv_sum / (1.f + __expf(-z.x)), tOrO(i + 1) * inv_sum / (1.f + __expf(-z.y)));
      }
    }
  }
#endif
}

// A TMA map of a [slots, max_len, kv_heads, 256] bf16 cache: boxes of 64 keys x 64 columns of one head and slot,
// 128-byte swizzled (the layout of SmemKV's column blocks); keys outside [0, max_len) read as zeros.
CUtensorMap cache_map(const void* cache, const AttentionPrefillParams& p) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {kDim, cuuint64_t(p.kv_heads), cuuint64_t(p.max_len), cuuint64_t(p.num_slots)};
  const cuuint64_t strides[3] = {kDim * 2, cuuint64_t(p.kv_heads) * kDim * 2, cuuint64_t(p.max_len) * p.kv_heads * kDim * 2};
  const cuuint32_t box[4] = {kBoxCols, 1, kKeys, 1}, element_strides[4] = {1, 1, 1, 1};
  const CUresult result = cutlass::call_cuTensorMapEncodeTiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(cache), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(result == CUDA_SUCCESS, "attention_prefill: cuTensorMapEncodeTiled failed (", int(result),
              ") for a cache of ", p.num_slots, " x ", p.max_len, " x ", p.kv_heads, " x ", kDim);
  return map;
}

}  // namespace

void run_attention_prefill_sm90(const AttentionPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<attention_prefill_sm90_kernel>(sizeof(Smem), "attention_prefill");
  const dim3 grid = attention_prefill_grid(p, kRows);
  launch_chained(attention_prefill_sm90_kernel, grid, kThreads, sizeof(Smem), stream, p, cache_map(p.key_cache, p),
                 cache_map(p.value_cache, p));
}

}  // namespace qwen3next
#endif
