// gdn_prefill's `state` on sm90a: the same walk over the chunks as the mma.sync kernel (gdn_prefill_kernel.cuh: a CTA
// per 32 value columns, value head and sequence; the same math and roundings), with every product a warpgroup MMA
// (wgmma) that reads both operands from shared memory once per warpgroup, where the mma.sync kernel's eight warps
// each load their fragments through ldmatrix. Two warpgroups:
//   phase 1   WG0: K S -> R = V - diag(wscale) K S          WG1: O = diag(qscale) Q S
//   phase 2   V' = T diag(beta) R
//   phase 3   WG0, WG1: S = gamma S + K^T diag(kscale) V', key rows 0-63 / 64-127 (S stays in their accumulators)
//             O += P V'
// (phases 2 and 3 issue the V' and O products on both warpgroups: ptxas serialises every wgmma of a kernel that issues
// some under a branch on the warpgroup, and the twins cost less than that).
// The operand tiles: k and q [token][key] and T, P [token][token] 128-byte swizzled K-major (K^T is k's tile read
// MN-major), S^T [col][key] and R, V', diag(kscale) V' [col][token] 64-byte swizzled MN-major, so that the
// accumulators' column pairs are 4-byte stores into them.
#include "gdn/gdn_prefill.h"

#ifdef QWEN3NEXT_SM90A
#include <cuda_bf16.h>

#include "common/async_copy.cuh"
#include "common/launch.h"
#include "common/mma.cuh"
#include "cute/arch/mma_sm90.hpp"
#include "cute/atom/mma_traits_sm90_gmma.hpp"
#include "cute/tensor.hpp"
#include "gdn/gdn_prefill_common.cuh"

namespace qwen3next {
namespace {

using namespace cute;
using gdn_prefill::kChunk;
using gdn_prefill::kCols;
using gdn_prefill::kDim;
using gdn_prefill::kLdCols;
using gdn_prefill::kRatio;
using gdn_prefill::kThreads;
using gdn_prefill::Sequence;
using gdn_prefill::bf16;
using Element = cute::bfloat16_t;

constexpr int kWarpgroupThreads = 128, kStages = 3;
using Tokens = Int<kChunk>;
using Keys = Int<kDim>;
using Cols = Int<kCols>;
using Half = Int<kDim / 2>;  // a warpgroup's key rows of S

using SmemRows = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Tokens, Keys>{}));
using SmemRowsT = decltype(composition(SmemRows{}, make_ordered_layout(Shape<Keys, Tokens>{}, Step<_2, _1>{})));
using SmemSquare = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Tokens, Tokens>{}));
using SmemStateT = decltype(tile_to_shape(GMMA::Layout_MN_SW64_Atom<Element>{}, Shape<Cols, Keys>{}));
using SmemColsT = decltype(tile_to_shape(GMMA::Layout_MN_SW64_Atom<Element>{}, Shape<Cols, Tokens>{}));

// One warpgroup per product, 64 x 32 outputs each.
using MmaByState = decltype(make_tiled_mma(  // K S, Q S: A [token][key], B = S^T [col][key]
    GMMA::ss_op_selector<Element, Element, float, Shape<_64, Cols, Keys>, GMMA::Major::K, GMMA::Major::MN>()));
using MmaByRows = decltype(make_tiled_mma(  // T R, P V': A [token][token], B [col][token]
    GMMA::ss_op_selector<Element, Element, float, Shape<_64, Cols, Tokens>, GMMA::Major::K, GMMA::Major::MN>()));
using MmaUpdate = decltype(make_tiled_mma(  // K^T V': A = K^T [key][token] (MN-major), B [col][token]
    GMMA::ss_op_selector<Element, Element, float, Shape<_64, Cols, Tokens>, GMMA::Major::MN, GMMA::Major::MN>()));

struct Stage {  // one chunk's inputs, loaded while the previous chunks compute
  alignas(1024) Element k[cosize_v<SmemRows>];
  alignas(1024) Element q[cosize_v<SmemRows>];
  alignas(1024) Element t[cosize_v<SmemSquare>];  // T diag(beta)
  alignas(1024) Element p[cosize_v<SmemSquare>];
  bf16 v[kChunk][kLdCols];  // raw v rows, this CTA's columns (read in the accumulators' layout)
  float4 scales[kChunk];    // qscale, kscale, c, wscale
};

struct Smem {
  Stage stage[kStages];
  alignas(1024) Element state[cosize_v<SmemStateT>];  // S^T in bf16: B of K S and Q S
  alignas(1024) Element residual[cosize_v<SmemColsT>];  // R^T
  alignas(1024) Element written[cosize_v<SmemColsT>];  // V'^T
  alignas(1024) Element written_k[cosize_v<SmemColsT>];  // (diag(kscale) V')^T
  bf16 out[kChunk][kLdCols];  // O of the previous chunk, stored to `out` after the next barrier
};

// kRows rows of kWidth bf16 (row r at src + r * stride) into a swizzled [row][column] tile, 16 bytes per copy;
// rows from `valid` on are zero-filled.
template <class Layout, int kRows, int kWidth>
__device__ __forceinline__ void copy_tile(Element* tile, const bf16* src, int64_t stride, int valid, int tid) {
  Tensor s = make_tensor(make_smem_ptr(tile), Layout{});
  constexpr int kVecs = kWidth / 8, kRowStep = kThreads / kVecs;
  static_assert(kThreads % kVecs == 0 && kRows % kRowStep == 0, "every thread copies kRows / kRowStep vectors");
  const int row = tid / kVecs, col = tid % kVecs * 8;
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const int r = row + i * kRowStep;
    const bool inside = r < valid;
    cp_async_16_or_zero(&s(r, col), inside ? src + r * stride + col : src, inside);
  }
}

__device__ __forceinline__ void load_stage(Stage& st, const GdnPrefillParams& p, const Sequence& seq, int chunk,
                                           int head, int col0, int tid) {
  const int row0 = seq.start + chunk * kChunk, rows = min(kChunk, seq.length - chunk * kChunk);
  const bf16* chunk_rows = static_cast<const bf16*>(p.qkv) + int64_t(row0) * p.qkv_row_stride;
  const int64_t head_row = int64_t(row0) * p.value_heads + head;  // [tokens, Hv, ...] workspace rows
  const int key_head = head / kRatio;
  copy_tile<SmemRows, kChunk, kDim>(st.k, chunk_rows + (p.key_heads + key_head) * kDim, p.qkv_row_stride, rows, tid);
  copy_tile<SmemRows, kChunk, kDim>(st.q, chunk_rows + key_head * kDim, p.qkv_row_stride, rows, tid);
  copy_tile<SmemSquare, kChunk, kChunk>(st.t, static_cast<const bf16*>(p.t) + head_row * kChunk,
                                        int64_t(p.value_heads) * kChunk, rows, tid);
  copy_tile<SmemSquare, kChunk, kChunk>(st.p, static_cast<const bf16*>(p.p) + head_row * kChunk,
                                        int64_t(p.value_heads) * kChunk, rows, tid);
  gdn_prefill::copy_rows<kChunk, kCols>(&st.v[0][0], kLdCols, chunk_rows + (2 * p.key_heads + head) * kDim + col0,
                                        p.qkv_row_stride, rows, tid);
  if (tid < kChunk) {
    cp_async_16_or_zero(&st.scales[tid], p.scales + (head_row + int64_t(tid < rows ? tid : 0) * p.value_heads) * 4,
                        tid < rows);
  }
}

// acc (+)= A B over the k-blocks of the fragments, issued as one batch (not waited for).
template <class Mma, class A, class B, class C>
__device__ __forceinline__ void issue(Mma& mma, const A& a, const B& b, C& acc, bool accumulate) {
  mma.accumulate_ = accumulate ? GMMA::ScaleOut::One : GMMA::ScaleOut::Zero;
#pragma unroll
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
}

// Generic-proxy shared-memory writes (cp.async, st.shared) made visible to the wgmma that read them after a barrier.
__device__ __forceinline__ void fence_for_wgmma() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__global__ void __launch_bounds__(kThreads, 1) gdn_prefill_state_sm90_kernel(const GdnPrefillParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_bytes[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_bytes);
  const int col0 = blockIdx.x * kCols, head = blockIdx.y;
  const int tid = threadIdx.x, warpgroup = tid / kWarpgroupThreads, wtid = tid % kWarpgroupThreads;
  const Sequence seq = gdn_prefill::sequence(p, blockIdx.z);
  if (seq.length == 0) return;  // padding or an empty sequence keeps its state
  const int chunks = (seq.length + kChunk - 1) / kChunk;

  for (int chunk = 0; chunk < kStages - 1; ++chunk) {
    if (chunk < chunks) load_stage(sm.stage[chunk], p, seq, chunk, head, col0, tid);
    cp_async_commit();  // one group per chunk, empty past the end: the waits below count groups
  }

  MmaByState mma_state;
  MmaByRows mma_rows;
  MmaUpdate mma_update;
  auto thr_state = mma_state.get_thread_slice(wtid);
  auto thr_rows = mma_rows.get_thread_slice(wtid);
  auto thr_update = mma_update.get_thread_slice(wtid);
  Tensor sS = make_tensor(make_smem_ptr(sm.state), SmemStateT{});  // (col, key)
  Tensor sR = make_tensor(make_smem_ptr(sm.residual), SmemColsT{});  // (col, token)
  Tensor sW = make_tensor(make_smem_ptr(sm.written), SmemColsT{});
  Tensor sWk = make_tensor(make_smem_ptr(sm.written_k), SmemColsT{});
  const Tensor tBS = thr_state.partition_fragment_B(sS);
  const Tensor tBR = thr_rows.partition_fragment_B(sR);
  const Tensor tBW = thr_rows.partition_fragment_B(sW);
  const Tensor tBWk = thr_update.partition_fragment_B(sWk);
  Tensor rows_acc = partition_fragment_C(mma_state, Shape<_64, Cols>{});  // K S (WG0) or O (WG1)
  Tensor written_acc = partition_fragment_C(mma_rows, Shape<_64, Cols>{});  // V' (WG0)
  Tensor state_acc = partition_fragment_C(mma_update, Shape<_64, Cols>{});  // S, key rows 64 warpgroup ..
  static_assert(decltype(size(rows_acc))::value == 16, "a 64 x 32 accumulator: 16 values a thread");
  // Accumulator element i = c + 2 h + 4 j of a thread: row 16 (warp % 4) + lane / 4 + 8 h,
  // column 8 j + 2 (lane % 4) + c.
  const int first_row = 16 * (wtid / 32) + wtid % 32 / 4, first_col = 2 * (wtid % 4);
  auto row_of = [&](int i) { return first_row + 8 * (i / 2 % 2); };
  auto col_of = [&](int i) { return first_col + 8 * (i / 4) + i % 2; };
  const int key0 = Half{} * warpgroup;

  float* state = p.state + (int64_t(seq.slot) * p.value_heads + head) * kDim * kDim;  // [v][k]
#pragma unroll
  for (int i = 0; i < size(state_acc); ++i) state_acc(i) = state[(col0 + col_of(i)) * kDim + key0 + row_of(i)];
  auto store_state_bf16 = [&] {
#pragma unroll
    for (int i = 0; i < size(state_acc); i += 2) {
      *reinterpret_cast<unsigned*>(&sS(col_of(i), key0 + row_of(i))) = pack_bf16(state_acc(i), state_acc(i + 1));
    }
    fence_for_wgmma();
  };
  store_state_bf16();

  for (int chunk = 0; chunk < chunks; ++chunk) {
    const int row0 = seq.start + chunk * kChunk, rows = min(kChunk, seq.length - chunk * kChunk);
    Stage& st = sm.stage[chunk % kStages];
    cp_async_wait<kStages - 2>();
    fence_for_wgmma();
    // This chunk's stage, S^T and the previous O are visible; the previous chunk is done with its stage.
    __syncthreads();
    const int ahead = chunk + kStages - 1;  // into the stage the previous chunk used
    if (ahead < chunks) load_stage(sm.stage[ahead % kStages], p, seq, ahead, head, col0, tid);
    cp_async_commit();
    if (chunk > 0) gdn_prefill::store_output_rows(sm.out, p, row0 - kChunk, kChunk, head, col0, tid);

    // Phase 1: K S (WG0) or Q S (WG1); then R = V - diag(wscale) K S into R^T (WG0), O = diag(qscale) Q S (WG1).
    // Both warpgroups issue the same wgmma sequence throughout, operands picked by pointer and results kept or
    // dropped by predicate: ptxas serialises every wgmma of a kernel that issues some under a warpgroup branch.
    const bool values = warpgroup == 0;  // WG0 carries the chain to V', WG1 the output
    const Tensor tA = thr_state.partition_fragment_A(make_tensor(make_smem_ptr(values ? st.k : st.q), SmemRows{}));
    warpgroup_fence_operand(rows_acc);
    warpgroup_arrive();
    issue(mma_state, tA, tBS, rows_acc, false);
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(rows_acc);
#pragma unroll
    for (int i = 0; i < size(rows_acc); i += 2) {
      const int r = row_of(i), c = col_of(i);
      const float4 scales = st.scales[r];
      const float2 v = unpack_bf16(*reinterpret_cast<const unsigned*>(&st.v[r][c]));
      const float x0 = values ? v.x - scales.w * rows_acc(i) : scales.x * rows_acc(i);
      const float x1 = values ? v.y - scales.w * rows_acc(i + 1) : scales.x * rows_acc(i + 1);
      rows_acc(i) = x0, rows_acc(i + 1) = x1;  // WG0's are dropped: its P V' below is a discarded twin
      if (values) *reinterpret_cast<unsigned*>(&sR(c, r)) = pack_bf16(x0, x1);
    }
    fence_for_wgmma();
    __syncthreads();  // R complete; every warpgroup is done reading S^T

    // Phase 2: V' = T diag(beta) R (both warpgroups, the same product: WG1's twin keeps the sequence uniform).
    const Tensor tAt = thr_rows.partition_fragment_A(make_tensor(make_smem_ptr(st.t), SmemSquare{}));
    warpgroup_fence_operand(written_acc);
    warpgroup_arrive();
    issue(mma_rows, tAt, tBR, written_acc, false);
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(written_acc);
    if (values) {
#pragma unroll
      for (int i = 0; i < size(written_acc); i += 2) {
        const int r = row_of(i), c = col_of(i);
        const float kscale = st.scales[r].y, v0 = written_acc(i), v1 = written_acc(i + 1);
        *reinterpret_cast<unsigned*>(&sW(c, r)) = pack_bf16(v0, v1);
        *reinterpret_cast<unsigned*>(&sWk(c, r)) = pack_bf16(v0 * kscale, v1 * kscale);
      }
    }
    fence_for_wgmma();
    __syncthreads();  // V' complete

    // Phase 3: S = gamma S + K^T diag(kscale) V' (each warpgroup its key rows), O += P V'.
    const float gamma = __expf(st.scales[rows - 1].z);
#pragma unroll
    for (int i = 0; i < size(state_acc); ++i) state_acc(i) *= gamma;
    Tensor sKt = make_tensor(make_smem_ptr(st.k), SmemRowsT{});  // (key, token)
    const Tensor tAkt =
        thr_update.partition_fragment_A(local_tile(sKt, Shape<Half, Tokens>{}, make_coord(warpgroup, 0)));
    const Tensor tAp = thr_rows.partition_fragment_A(make_tensor(make_smem_ptr(st.p), SmemSquare{}));
    warpgroup_fence_operand(state_acc);
    warpgroup_fence_operand(rows_acc);
    warpgroup_arrive();
    issue(mma_update, tAkt, tBWk, state_acc, true);
    issue(mma_rows, tAp, tBW, rows_acc, true);
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(state_acc);
    warpgroup_fence_operand(rows_acc);
    if (!values) {  // O, rounded to bf16 where the unfused model stores it
#pragma unroll
      for (int i = 0; i < size(rows_acc); i += 2) {
        *reinterpret_cast<unsigned*>(&sm.out[row_of(i)][col_of(i)]) = pack_bf16(rows_acc(i), rows_acc(i + 1));
      }
    }
    store_state_bf16();
  }
  __syncthreads();  // the last chunk's O is complete
  const int last = chunks - 1;
  gdn_prefill::store_output_rows(sm.out, p, seq.start + last * kChunk, seq.length - last * kChunk, head, col0, tid);
#pragma unroll
  for (int i = 0; i < size(state_acc); ++i) state[(col0 + col_of(i)) * kDim + key0 + row_of(i)] = state_acc(i);
#endif
}

}  // namespace

void run_gdn_prefill_state_sm90(const GdnPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<gdn_prefill_state_sm90_kernel>(sizeof(Smem), "gdn_prefill (state, sm90)");
  gdn_prefill_state_sm90_kernel<<<dim3(kDim / kCols, p.value_heads, p.seqs), kThreads, sizeof(Smem), stream>>>(p);
}

}  // namespace qwen3next
#endif
