// Causal flash attention of a varlen prefill over the KV cache on sm90a: warpgroup MMAs (wgmma). Two warpgroups
// own 64 query rows each of the CTA's 128 (one query head); keys and values stream through two 64-key stages of
// shared memory (cp.async into the 128-byte-swizzled layout wgmma reads). Per stage and warpgroup: S = Q K^T as 16
// wgmma (Q and K from shared memory), the online softmax in registers, O += P V as 4 wgmma with P straight from
// registers (the S accumulator's layout, converted to bf16, is the A operand's) and V read transposed from the
// same shared-memory tile; P V of one stage runs while the next stage's softmax does. Same contract as the portable
// kernel (attention_prefill.h).
#include "attention/attention_prefill.h"

#ifdef QWEN3NEXT_SM90A
#include <cuda_bf16.h>

#include <algorithm>

#include "common/async_copy.cuh"
#include "common/launch.h"
#include "common/mma.cuh"
#include "cute/arch/mma_sm90.hpp"
#include "cute/atom/mma_traits_sm90_gmma.hpp"
#include "cute/tensor.hpp"

namespace qwen3next {
namespace {

using namespace cute;
using Element = cute::bfloat16_t;

constexpr int kDim = 256, kRows = 128, kKeys = 64, kStages = 2, kThreads = 256;
constexpr int kVecs = kDim / 8;  // 16-byte chunks per row
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

struct Smem {
  alignas(1024) Element q[cosize_v<SmemQ>];
  alignas(1024) Element k[kStages][cosize_v<SmemKV>];
  alignas(1024) Element v[kStages][cosize_v<SmemKV>];
};

// The accumulator layout ((2, 2, N / 8), 1, 1) of a 64 x N wgmma read as the A operand layout ((2, 2, 2), 1, N / 16)
// of the next one: a k-step of 16 is two 8-column groups of the accumulator.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_a(Layout acc) {
  static_assert(decltype(rank(acc))::value == 3 && decltype(rank(get<0>(acc)))::value == 3, "((2, 2, N/8), M, N)");
  auto groups = logical_divide(get<0, 2>(acc), Tile<_2>{});  // ((2, N / 16)): pairs of groups, then the pairs
  return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0, 0>(groups)), get<1>(acc),
                     coalesce(make_layout(get<2>(acc), get<0, 1>(groups))));
}

// A [rows, dim] tile from the global rows src_row(r) (nullptr: zeros; `anywhere` is then the address the copy
// names and does not read). A thread copies one 16-byte column of every kThreads / kVecs-th row; the loop is kept
// rolled so that the rows' addresses are not all computed ahead and held in registers.
template <class SmemTensor, class RowOf>
__device__ __forceinline__ void load_tile(SmemTensor tile, int rows, RowOf src_row, const void* anywhere, int tid) {
  constexpr int kRowStep = kThreads / kVecs;
  const int col = tid % kVecs * 8;
#pragma unroll 1
  for (int r = tid / kVecs; r < rows; r += kRowStep) {
    const __nv_bfloat16* src = src_row(r);
    cp_async_16_or_zero(&tile(r, col), src != nullptr ? src + col : anywhere, src != nullptr);
  }
}

__global__ void __launch_bounds__(kThreads, 1) attention_prefill_sm90_kernel(const AttentionPrefillParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_bytes[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_bytes);
  Tensor sQ = make_tensor(make_smem_ptr(sm.q), SmemQ{});

  const int head = blockIdx.y, seq = blockIdx.z, kv_head = head / (p.query_heads / p.kv_heads);
  const int tid = threadIdx.x, warpgroup = tid / 128;
  const int slot = p.slots[seq];
  if (slot < 0 || slot >= p.num_slots) return;
  const int start = p.cu_seqlens[seq], length = p.cu_seqlens[seq + 1] - start;
  const int context = min(p.context_lens[seq], p.max_len), first_position = context - length;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q);
  const __nv_bfloat16* key_cache = static_cast<const __nv_bfloat16*>(p.key_cache);
  const __nv_bfloat16* value_cache = static_cast<const __nv_bfloat16*>(p.value_cache);

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
  const int first_row = 64 * warpgroup + 16 * (tid / 32 % 4) + tid % 32 / 4, first_column = 2 * (tid % 4);
  auto row_of = [&](int i) { return first_row + 8 * (i / 2 % 2); };

  // Tiles last to first: the longest (causal) start first and the short ones fill the last wave.
  for (int tile = (length + kRows - 1) / kRows - 1 - blockIdx.x; tile >= 0; tile -= gridDim.x) {
    const int row0 = tile * kRows, rows = min(kRows, length - row0);
    const int key_end = max(min(first_position + row0 + rows, context), 0);  // past the tile's last query
    const int key_tiles = (key_end + kKeys - 1) / kKeys;
    auto key_rows = [&](const __nv_bfloat16* cache, int key0) {
      return [=](int r) -> const __nv_bfloat16* {
        const int key = key0 + r;
        return key < key_end ? cache + ((int64_t(slot) * p.max_len + key) * p.kv_heads + kv_head) * kDim : nullptr;
      };
    };
    auto load_keys = [&](int kt) {
      load_tile(make_tensor(make_smem_ptr(sm.k[kt % kStages]), SmemKV{}), kKeys, key_rows(key_cache, kt * kKeys), q,
                tid);
    };
    auto load_values = [&](int kt) {
      load_tile(make_tensor(make_smem_ptr(sm.v[kt % kStages]), SmemKV{}), kKeys, key_rows(value_cache, kt * kKeys), q,
                tid);
    };
    __syncthreads();  // the previous tile is done with shared memory
    load_tile(sQ, kRows, [=](int r) -> const __nv_bfloat16* {
      return r < rows ? q + ((int64_t(start) + row0 + r) * p.query_heads + head) * kDim : nullptr;
    }, q, tid);
    if (key_tiles > 0) load_keys(0);
    cp_async_commit();

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
    // cores run P V while this warpgroup does S_n's softmax. The copies of step n (K_{n+1}, V_n) land by step n + 1:
    // K in stage (n + 1) % 2 and V in n % 2, whose previous readers (S_{n-1}, P_{n-2} V_{n-2}) every warpgroup has
    // waited for before step n's barrier. Both warpgroups take every stage (the first one's last is wholly masked
    // on the diagonal), and the first and last steps are peeled: ptxas serializes wgmma under branches it cannot
    // prove uniform or match with their waits.
    auto begin_step = [&] {
      cp_async_wait<0>();
      // The copies wrote through the generic proxy, wgmma reads through the async one: each thread's landed copies
      // made visible to it, then the barrier makes every thread's so.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
      warpgroup_fence_operand(tSrS);
      warpgroup_fence_operand(tOrO);
      warpgroup_arrive();
    };
    auto issue_scores = [&](int n) {
      Tensor tSrK = thr_qk.partition_fragment_B(make_tensor(make_smem_ptr(sm.k[n % kStages]), SmemKV{}));
      mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
      for (int k = 0; k < size<2>(tSrQ); ++k) {
        cute::gemm(mma_qk, tSrQ(_, _, k), tSrK(_, _, k), tSrS);
        mma_qk.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
    };
    auto issue_values = [&](int n) {
      Tensor tOrV = thr_pv.partition_fragment_B(make_tensor(make_smem_ptr(sm.v[n % kStages]), SmemVt{}));
      cute::gemm(mma_pv, tOrP, tOrV, tOrO);
      warpgroup_commit_batch();
    };
    auto issue_copies = [&](int n) {
      if (n + 1 < key_tiles) load_keys(n + 1);
      load_values(n);
      cp_async_commit();
    };
    // Online softmax of S_n in log2 units (masked keys are -inf); P stays fp32 in S's registers until the previous
    // P V, which reads rP, is done.
    float correction[2];
    auto softmax = [&](int n) {
      warpgroup_fence_operand(tSrS);
      const int key0 = n * kKeys;
      float stage_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int i = 0; i < size(tSrS); ++i) {
        const int half = (i / 2) % 2, key = key0 + first_column + 8 * (i / 4) + i % 2;
        tSrS(i) = key <= last_key[half] ? tSrS(i) * p.scale_log2 : -INFINITY;
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
      begin_step();
      issue_scores(0);
      issue_copies(0);
      warpgroup_wait<0>();
      softmax(0);
      rescale_and_keep_p();
      for (int n = 1; n < key_tiles; ++n) {
        begin_step();
        issue_scores(n);
        issue_values(n - 1);
        issue_copies(n);
        warpgroup_wait<1>();
        softmax(n);
        warpgroup_wait<0>();
        rescale_and_keep_p();
      }
      begin_step();
      issue_values(key_tiles - 1);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
    }

    // out = O / l * sigmoid(gate), two adjacent columns per store.
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
#pragma unroll
      for (int group = 0; group < kDim / 8; ++group) {
        const int i = 4 * group + 2 * half;
        const float2 z = unpack_bf16(*reinterpret_cast<const unsigned*>(gate + 8 * group));
        *reinterpret_cast<unsigned*>(out + 8 * group) =
            pack_bf16(tOrO(i) * inv_sum / (1.f + __expf(-z.x)), tOrO(i + 1) * inv_sum / (1.f + __expf(-z.y)));
      }
    }
  }
#endif
}

}  // namespace

void run_attention_prefill_sm90(const AttentionPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<attention_prefill_sm90_kernel>(sizeof(Smem), "attention_prefill");
  const dim3 grid(std::min((p.max_seqlen + kRows - 1) / kRows, 65535), p.query_heads, p.seqs);
  attention_prefill_sm90_kernel<<<grid, kThreads, sizeof(Smem), stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
#endif
