// Device code of the chunked Gated DeltaNet prefill (see gdn_prefill.h for the algorithm's outline).
//
// Per value head and 64-token chunk, with c the cumulative sum of g inside the chunk, k^ = k / |k| and
// q^ = q / |q| / sqrt(128): the written values of the chunk are
//   V' = T diag(beta) (V - diag(exp(c)) K^ S),  A = tril(diag(beta) (K^ K^T^ * D), -1),  D[i][j] = exp(c_i - c_j),
//   T = (I + A)^-1  (the WY form's U - W S with U = T diag(beta) V, W = T diag(beta exp(c)) K^, not materialised),
// then O = diag(exp(c)) Q^ S + (Q^ K^T^ * D, j <= i) V' and S = exp(c_last) S + (K^ * exp(c_last - c))^T V'.
// The 1/|q|, 1/|k| and decay factors are folded into per-row scales (qscale, kscale, wscale) and into T's
// columns, so the tensor cores read the raw bf16 q, k and v rows as they are.
#pragma once

#include <cuda_bf16.h>

#include "common/mma.cuh"
#include "common/vec.cuh"
#include "conv/conv_math.cuh"
#include "gdn/gdn_prefill_common.cuh"
#include "norm/rmsnorm_kernel.cuh"

namespace qwen3next {
namespace gdn_prefill {

// ---- prepare: one CTA per (chunk, key head, sequence), both value heads of the key head -----------------

struct PrepareSmem {
  struct Rows {
    bf16 q[kChunk][kLdDim];  // raw q rows of the key head (zeros past the sequence)
    bf16 k[kChunk][kLdDim];
  };
  union {
    Rows rows;
    float t[kRatio][kChunk][kLdSolve];  // T = (I + A)^-1 per value head, once K K^T and Q K^T are in registers
  };
  float a[kRatio][kChunk][kLdSolve];  // A per value head (strictly lower)
  float inv_norm_q[kChunk], inv_norm_k[kChunk];
  float beta[kRatio][kChunk], cum_g[kRatio][kChunk];
};

// T = (I + A)^-1 of both value heads, A in sm.a (zeros above the diagonal), T into sm.t (its blocks above the
// diagonal left as they are). A warp owns 16-column block `block` of head `head`'s T: with T_ii the inverted
// diagonal blocks, T_ij = -T_ii sum_{k=j}^{i-1} A_ik T_kj needs only the warp's own column block below the
// diagonal, so after the diagonal blocks the warps run without barriers. The sums run on tensor cores in tf32
// (fp32 accumulation): bf16 operands would add errors the size of T's own bf16 rounding at every block level.
__device__ __forceinline__ void invert_unit_lower(PrepareSmem& sm, int head, int block, int lane) {
  float (*t)[kLdSolve] = sm.t[head];
  const float* a = &sm.a[head][0][0];
  const int base = 16 * block;
  // The diagonal block by forward substitution, a column per lane.
  if (lane < 16) {
    float x[16];
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      float acc = r == lane ? 1.f : 0.f;
#pragma unroll
      for (int j = 0; j < r; ++j) acc -= a[(base + r) * kLdSolve + base + j] * x[j];
      x[r] = acc;
    }
#pragma unroll
    for (int r = 0; r < 16; ++r) t[base + r][base + lane] = x[r];
  }
  __syncthreads();  // every diagonal block is complete
  for (int i = block + 1; i < kRowBlocks; ++i) {
    float sum[2][4] = {};
    mma_rows_tf32<16>(sum, a, kLdSolve, 16 * i, &t[0][0], kLdSolve, base, base, 16 * i, lane);
    store_rows<16>(&t[0][0], kLdSolve, 16 * i, base, sum, 1.f, lane);  // staged in T_ij's place (the warp's own)
    __syncwarp();
    float tij[2][4] = {};
    mma_rows_tf32<16>(tij, &t[0][0], kLdSolve, 16 * i, &t[0][0], kLdSolve, base, 16 * i, 16 * i + 16, lane);
    __syncwarp();  // the sum is read before T_ij replaces it
    store_rows<16>(&t[0][0], kLdSolve, 16 * i, base, tij, -1.f, lane);
    __syncwarp();  // T_ij is visible to the next row block's sum
  }
}

// The conv + SiLU of a chunk's channels, inside `prepare`: a CTA (chunk, key head) owns exactly 512 of the conv's
// channels -- q and k of its key head, v of its two value heads -- so the conv needs no launch of its own, and its
// output is written once (for `state`) and read once, not written, read back and written again.
constexpr int kConvRows = 8;  // consecutive rows per thread and pass: 3 window rows are loaded per 8 outputs
constexpr int kConvVectors = (2 + kRatio) * kDim / 8;  // 16-byte channel vectors of a CTA: q, k, then v

// The conv channel of the CTA's vector `vec`.
__device__ __forceinline__ int conv_channel(const GdnPrefillParams& p, int key_head, int vec) {
  constexpr int kHead = kDim / 8;  // vectors per head
  const int key_dim = p.key_heads * kDim;
  if (vec < kHead) return key_head * kDim + 8 * vec;
  if (vec < 2 * kHead) return key_dim + key_head * kDim + 8 * (vec - kHead);
  return 2 * key_dim + key_head * kRatio * kDim + 8 * (vec - 2 * kHead);
}

// Conv input pos of the sequence (pos < 0: the slot's conv state) at channels c..c+7, as raw words.
__device__ __forceinline__ void load_conv_input(unsigned (&words)[4], const GdnPrefillParams& p, const Sequence& seq,
                                                int pos, int c) {
  load_words(words, conv::conv_input(static_cast<const bf16*>(p.x), p.x_row_stride,
                                     static_cast<const bf16*>(p.conv_state), p.channels, seq.slot, seq.start,
                                     seq.start + pos, c));
}

// The chunk's conv outputs into the qkv workspace, and q and k also into the shared tiles (zero rows past the
// sequence). The thread of a sequence's first rows is the only reader of the slot's old conv state; it writes the new
// one (the sequence's last 3 inputs) right after its loads (a thread's loads precede its stores to the same address).
__device__ __forceinline__ void convolve_chunk(PrepareSmem& sm, const GdnPrefillParams& p, const Sequence& seq,
                                               int chunk, int key_head, int tid) {
  constexpr int kHistory = conv::kWidth - 1;
  for (int task = tid; task < kConvVectors * (kChunk / kConvRows); task += kThreads) {
    const int vec = task % kConvVectors, r0 = task / kConvVectors * kConvRows, c = conv_channel(p, key_head, vec);
    const int pos0 = chunk * kChunk + r0;  // of the task's first row, within the sequence
    unsigned rows[kHistory + kConvRows][4];  // inputs pos0 - 3 ... pos0 + 7, all loads in flight at once
#pragma unroll
    for (int i = 0; i < kHistory + kConvRows; ++i) {
      if (pos0 - kHistory + i < seq.length) load_conv_input(rows[i], p, seq, pos0 - kHistory + i, c);
    }
    unsigned taps[conv::kWidth][4];
    conv::load_taps(taps, static_cast<const bf16*>(p.conv_weight), c);
    if (pos0 == 0) {
      unsigned last[kHistory][4];
#pragma unroll
      for (int j = 0; j < kHistory; ++j) load_conv_input(last[j], p, seq, seq.length - kHistory + j, c);
      bf16* state = static_cast<bf16*>(p.conv_state) + int64_t(seq.slot) * kHistory * p.channels + c;
#pragma unroll
      for (int j = 0; j < kHistory; ++j) store_words<4>(state + j * p.channels, last[j]);
    }
    float w[conv::kWidth][8];
    conv::scale_taps<bf16>(w, taps);
    bf16* tile = vec < kDim / 8       ? &sm.rows.q[r0][8 * vec]
                 : vec < 2 * kDim / 8 ? &sm.rows.k[r0][8 * vec - kDim]
                                      : nullptr;  // v: the workspace only
    bf16* out = static_cast<bf16*>(p.qkv) + int64_t(seq.start + pos0) * p.qkv_row_stride + c;
#pragma unroll
    for (int i = 0; i < kConvRows; ++i) {
      unsigned y[4] = {};  // zeros past the sequence
      if (pos0 + i < seq.length) {
#pragma unroll
        for (int v = 0; v < 8; v += 2) {
          float z[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            z[e] = 0.f;
#pragma unroll
            for (int j = 0; j < conv::kWidth; ++j) z[e] += w[j][v + e] * conv::element_float<bf16>(rows[i + j], v + e);
          }
          y[v / 2] = pack_bf16(conv::silu_of_scaled(z[0]), conv::silu_of_scaled(z[1]));
        }
        store_words<4>(out + int64_t(i) * p.qkv_row_stride, y);
      }
      if (tile != nullptr) *reinterpret_cast<uint4*>(tile + i * kLdDim) = make_uint4(y[0], y[1], y[2], y[3]);
    }
  }
}

// Two CTAs per SM: a CTA's serial steps (the conv's loads, the solve's column blocks of unequal length, the barriers)
// leave its warps idle, and the other CTA fills the gaps. Three (80 registers) would spill the conv's rows in flight.
__global__ void __launch_bounds__(kThreads, 2) gdn_prefill_prepare_kernel(const GdnPrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  PrepareSmem& sm = *reinterpret_cast<PrepareSmem*>(smem_bytes);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int block = warp % kRowBlocks, group = warp / kRowBlocks;  // 16 rows x 32 columns of K K^T and Q K^T
  const int key_head = blockIdx.y;
  const Sequence seq = sequence(p, blockIdx.z);

  for (int chunk = blockIdx.x; chunk * kChunk < seq.length; chunk += gridDim.x) {
    const int row0 = seq.start + chunk * kChunk, rows = min(kChunk, seq.length - chunk * kChunk);
    __syncthreads();  // the previous chunk is done with shared memory
    // Gating: a thread per (value head, token); g = 0 and beta = 0 past the sequence. Its loads are issued before
    // the conv's, so that their round trips overlap.
    const int gate_head = tid / kChunk, gate_row = tid % kChunk, head0 = key_head * kRatio;
    const bool gate_thread = gate_head < kRatio && gate_row < rows;
    bf16 raw_b{}, raw_a{};
    if (gate_thread) {
      const bf16* ba = static_cast<const bf16*>(p.ba) + int64_t(row0 + gate_row) * p.ba_row_stride;
      raw_b = ba[head0 + gate_head];
      raw_a = ba[p.value_heads + head0 + gate_head];
    }
    convolve_chunk(sm, p, seq, chunk, key_head, tid);
    if (gate_head < kRatio) {
      float g = 0.f, beta = 0.f;
      if (gate_thread) {
        const int head = head0 + gate_head;
        const float a = to_float(raw_a) + p.dt_bias[head];
        g = -expf(p.A_log[head]) * (a > 20.f ? a : log1pf(expf(a)));  // torch's softplus threshold
        beta = round_to<bf16>(1.f / (1.f + expf(-to_float(raw_b))));
      }
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {  // inclusive scan over the warp's 32 tokens
        const float x = __shfl_up_sync(0xffffffffu, g, offset);
        if (lane >= offset) g += x;
      }
      sm.cum_g[gate_head][gate_row] = g;
      sm.beta[gate_head][gate_row] = beta;
    }
    __syncthreads();  // the conv's tiles and the gating's per-warp sums are complete
    if (gate_head < kRatio && gate_row >= 32) sm.cum_g[gate_head][gate_row] += sm.cum_g[gate_head][31];
    for (int r = warp; r < 2 * kChunk; r += kWarps) {  // 1 / |x| of every q and k row: a warp per row
      const bf16* row = r < kChunk ? sm.rows.q[r] : sm.rows.k[r - kChunk];
      float x[4];
      load_float<bf16, 4>(x, row + 4 * lane);
      const float sum = group_sum<32>(x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3]);
      if (lane == 0) (r < kChunk ? sm.inv_norm_q : sm.inv_norm_k)[r % kChunk] = rsqrtf(sum + kL2NormEps);
    }

    // K K^T and Q K^T of the warp's tile, where it reaches the diagonal (the rest is masked).
    float kk[4][4] = {}, qk[4][4] = {};
#pragma unroll
    for (int k0 = 0; k0 < kDim; k0 += 16) {
      if (2 * group <= block) {
        FragA ak, aq;
        load_a(ak, &sm.rows.k[0][0], kLdDim, 16 * block, k0, lane);
        load_a(aq, &sm.rows.q[0][0], kLdDim, 16 * block, k0, lane);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          if (2 * group + np <= block) {
            FragB2 b;
            load_b_nk(b, &sm.rows.k[0][0], kLdDim, k0, 32 * group + 16 * np, lane);
            mma(kk[2 * np], ak, b, 0);
            mma(kk[2 * np + 1], ak, b, 1);
            mma(qk[2 * np], aq, b, 0);
            mma(qk[2 * np + 1], aq, b, 1);
          }
        }
      }
    }
    __syncthreads();  // cumulative g and the norms are complete; q and k are read

    const float q_scale = rsqrtf(float(kDim));
#pragma unroll 1
    for (int j = 0; j < kRatio; ++j) {
      const int head = head0 + j;
      const float* cum = sm.cum_g[j];
      // A into shared memory, P (this head's decays) straight to the workspace, 16 bytes per thread and row.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = 16 * block + lane / 4 + 8 * half;
        const float ci = cum[i], bi = sm.beta[j][i] * sm.inv_norm_k[i], qi = sm.inv_norm_q[i] * q_scale;
        unsigned p_words[4];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int col0 = 32 * group + nt * 8 + 2 * (lane % 4);
          float a[2], pq[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = col0 + e;
            const float decay = col <= i ? __expf(ci - cum[col]) : 0.f;
            a[e] = col < i ? bi * sm.inv_norm_k[col] * kk[nt][2 * half + e] * decay : 0.f;
            pq[e] = qi * sm.inv_norm_k[col] * qk[nt][2 * half + e] * decay;
          }
          *reinterpret_cast<float2*>(&sm.a[j][i][col0]) = make_float2(a[0], a[1]);
          p_words[nt] = pack_bf16(pq[0], pq[1]);
        }
        quad_transpose(p_words, lane);  // columns 32 group + 8 (lane % 4) ..
        if (i < rows) {
          store_words<4>(static_cast<bf16*>(p.p) + (int64_t(row0 + i) * p.value_heads + head) * kChunk + 32 * group +
                             8 * (lane % 4), p_words);
        }
      }
    }
    __syncthreads();  // A of both heads is complete
    invert_unit_lower(sm, warp / kRowBlocks, block, lane);  // both heads at once: a warp per (head, column block)
    __syncthreads();  // T is complete

    // Rows of T diag(beta) (zeros above the diagonal blocks), 16 bytes per thread, 8 threads per row.
    for (int head_row = tid / 8; head_row < kRatio * kChunk; head_row += kThreads / 8) {
      const int j = head_row / kChunk, r = head_row % kChunk, col = tid % 8 * 8;
      if (r >= rows) continue;
      unsigned w[4] = {};
      if (col / 16 <= r / 16) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = col + 2 * e;
          w[e] = pack_bf16(sm.t[j][r][c] * sm.beta[j][c], sm.t[j][r][c + 1] * sm.beta[j][c + 1]);
        }
      }
      store_words<4>(static_cast<bf16*>(p.t) + (int64_t(row0 + r) * p.value_heads + head0 + j) * kChunk + col, w);
    }
    if (const int j = tid / kChunk, r = tid % kChunk; j < kRatio && r < rows) {
      const float* cum = sm.cum_g[j];
      const float c = cum[r], c_last = cum[rows - 1], e_c = __expf(c);
      *reinterpret_cast<float4*>(p.scales + (int64_t(row0 + r) * p.value_heads + head0 + j) * 4) =
          make_float4(sm.inv_norm_q[r] * q_scale * e_c, sm.inv_norm_k[r] * __expf(c_last - c), c,
                      sm.inv_norm_k[r] * e_c);
    }
  }
}

// ---- state: a CTA per (kCols value columns, value head, sequence) walks the chunks in order ----------------
// Value columns of the state and of the output evolve independently, so the CTAs of a head need no exchange; the
// gated norm, which spans a head's 128 columns, runs afterwards over the rows they write.

struct StateStage {  // one chunk's inputs, loaded while the previous chunks compute
  bf16 k[kChunk][kLdDim];  // raw k rows of the key head
  bf16 q[kChunk][kLdDim];  // raw q rows of the key head
  bf16 v[kChunk][kLdCols];  // raw v rows, this CTA's columns
  bf16 t[kChunk][kLdChunk];  // T diag(beta)
  bf16 p[kChunk][kLdChunk];  // P
  float4 scales[kChunk];
};

template <int kStages>
struct StateSmem {
  StateStage stage[kStages];
  bf16 state[kDim][kLdCols];  // S (key rows x this CTA's value columns) in bf16: the B operand of K S and Q S
  bf16 residual[kChunk][kLdCols];  // V - diag(wscale) K S
  bf16 written[kChunk][kLdCols];  // V'
  bf16 written_k[kChunk][kLdCols];  // diag(kscale) V'
  bf16 out[kChunk][kLdCols];  // O of the previous chunk, stored to `out` after the next barrier
};

__device__ __forceinline__ void load_state_stage(StateStage& st, const GdnPrefillParams& p, const Sequence& seq,
                                                 int chunk, int head, int col0, int tid) {
  const int row0 = seq.start + chunk * kChunk, rows = min(kChunk, seq.length - chunk * kChunk);
  const bf16* chunk_rows = static_cast<const bf16*>(p.qkv) + int64_t(row0) * p.qkv_row_stride;
  const int64_t head_row = int64_t(row0) * p.value_heads + head;  // [tokens, Hv, ...] workspace rows
  const int key_head = head / kRatio;
  copy_rows<kChunk, kDim>(&st.k[0][0], kLdDim, chunk_rows + (p.key_heads + key_head) * kDim, p.qkv_row_stride, rows,
                          tid);
  copy_rows<kChunk, kDim>(&st.q[0][0], kLdDim, chunk_rows + key_head * kDim, p.qkv_row_stride, rows, tid);
  copy_rows<kChunk, kCols>(&st.v[0][0], kLdCols, chunk_rows + (2 * p.key_heads + head) * kDim + col0,
                           p.qkv_row_stride, rows, tid);
  copy_rows<kChunk, kChunk>(&st.t[0][0], kLdChunk, static_cast<const bf16*>(p.t) + head_row * kChunk,
                            int64_t(p.value_heads) * kChunk, rows, tid);
  copy_rows<kChunk, kChunk>(&st.p[0][0], kLdChunk, static_cast<const bf16*>(p.p) + head_row * kChunk,
                            int64_t(p.value_heads) * kChunk, rows, tid);
  if (tid < kChunk) {
    cp_async_16_or_zero(&st.scales[tid], p.scales + (head_row + int64_t(tid < rows ? tid : 0) * p.value_heads) * 4,
                        tid < rows);
  }
}

// The warp's 16 key rows of the fp32 state in mma accumulator layout (all kCols value columns):
// `visit(value, key row, value column)`.
template <typename Visit>
__device__ __forceinline__ void for_each_state_element(float (&s)[kCols / 8][4], int warp, int lane, Visit visit) {
#pragma unroll
  for (int nt = 0; nt < kCols / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) visit(s[nt][e], 16 * warp + lane / 4 + 8 * (e / 2), nt * 8 + 2 * (lane % 4) + e % 2);
  }
}

template <typename Smem>
__device__ __forceinline__ void store_state_bf16(Smem& sm, float (&s)[kCols / 8][4], int warp, int lane) {
#pragma unroll
  for (int nt = 0; nt < kCols / 8; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<unsigned*>(&sm.state[16 * warp + lane / 4 + 8 * half][nt * 8 + 2 * (lane % 4)]) =
          pack_bf16(s[nt][2 * half], s[nt][2 * half + 1]);
    }
  }
}

template <int kStages>
__global__ void __launch_bounds__(kThreads, 1) gdn_prefill_state_kernel(const GdnPrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  StateSmem<kStages>& sm = *reinterpret_cast<StateSmem<kStages>*>(smem_bytes);
  const int col0 = blockIdx.x * kCols, head = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Chunk-row work: 16 rows (block) x 16 of the CTA's columns (group); state work: 16 key rows (warp).
  const int block = warp % kRowBlocks, group = warp / kRowBlocks;
  constexpr int kGroupCols = kCols / kColumnGroups;
  const Sequence seq = sequence(p, blockIdx.z);
  if (seq.length == 0) return;  // padding or an empty sequence keeps its state
  const int chunks = (seq.length + kChunk - 1) / kChunk;

  for (int chunk = 0; chunk < kStages - 1; ++chunk) {
    if (chunk < chunks) load_state_stage(sm.stage[chunk], p, seq, chunk, head, col0, tid);
    cp_async_commit();  // one group per chunk, empty past the end: the waits below count groups
  }

  float* state = p.state + (int64_t(seq.slot) * p.value_heads + head) * kDim * kDim;  // [v][k]
  float s[kCols / 8][4];
  for_each_state_element(s, warp, lane, [&](float& x, int key, int col) { x = state[(col0 + col) * kDim + key]; });
  store_state_bf16(sm, s, warp, lane);

  for (int chunk = 0; chunk < chunks; ++chunk) {
    const int row0 = seq.start + chunk * kChunk, rows = min(kChunk, seq.length - chunk * kChunk);
    const StateStage& st = sm.stage[chunk % kStages];
    cp_async_wait<kStages - 2>();
    __syncthreads();  // this chunk's rows, S and the previous O are visible; the previous chunk is done with its stage
    const int ahead = chunk + kStages - 1;  // into the stage the previous chunk used
    if (ahead < chunks) load_state_stage(sm.stage[ahead % kStages], p, seq, ahead, head, col0, tid);
    cp_async_commit();
    if (chunk > 0) store_output_rows(sm.out, p, row0 - kChunk, kChunk, head, col0, tid);

    // The warp's 16 rows x 16 columns: R = V - diag(wscale) K S and O = diag(qscale) Q S, then (after the barrier)
    // V' = T diag(beta) R and O += P V'.
    float acc[kGroupCols / 8][4] = {}, o[kGroupCols / 8][4] = {};
    const int col = kGroupCols * group + 2 * (lane % 4);  // + nt * 8
    mma_rows<kGroupCols, kDim>(acc, &st.k[0][0], kLdDim, 16 * block, &sm.state[0][0], kLdCols, kGroupCols * group,
                               kDim, lane);
    mma_rows<kGroupCols, kDim>(o, &st.q[0][0], kLdDim, 16 * block, &sm.state[0][0], kLdCols, kGroupCols * group,
                               kDim, lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = 16 * block + lane / 4 + 8 * half;
      const float wscale = st.scales[i].w, qscale = st.scales[i].x;
#pragma unroll
      for (int nt = 0; nt < kGroupCols / 8; ++nt) {
        const float2 v = unpack_bf16(*reinterpret_cast<const unsigned*>(&st.v[i][col + nt * 8]));
        *reinterpret_cast<unsigned*>(&sm.residual[i][col + nt * 8]) =
            pack_bf16(v.x - wscale * acc[nt][2 * half], v.y - wscale * acc[nt][2 * half + 1]);
        o[nt][2 * half] *= qscale;
        o[nt][2 * half + 1] *= qscale;
      }
    }
    __syncthreads();  // R complete; every thread is done reading the state's bf16 copy
    float written[kGroupCols / 8][4] = {};  // T is zero right of the diagonal block: k up to the block's end
    mma_rows<kGroupCols, kChunk>(written, &st.t[0][0], kLdChunk, 16 * block, &sm.residual[0][0], kLdCols,
                                 kGroupCols * group, 16 * block + 16, lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = 16 * block + lane / 4 + 8 * half;
      const float kscale = st.scales[i].y;
#pragma unroll
      for (int nt = 0; nt < kGroupCols / 8; ++nt) {
        const float v0 = written[nt][2 * half], v1 = written[nt][2 * half + 1];
        *reinterpret_cast<unsigned*>(&sm.written[i][col + nt * 8]) = pack_bf16(v0, v1);
        *reinterpret_cast<unsigned*>(&sm.written_k[i][col + nt * 8]) = pack_bf16(v0 * kscale, v1 * kscale);
      }
    }
    __syncthreads();  // V' complete

    // S = gamma S + K^T diag(kscale) V'.
    const float gamma = __expf(st.scales[rows - 1].z);
    for_each_state_element(s, warp, lane, [&](float& x, int, int) { x *= gamma; });
#pragma unroll
    for (int k0 = 0; k0 < kChunk; k0 += 16) {
      FragA a;
      load_a_trans(a, &st.k[0][0], kLdDim, 16 * warp, k0, lane);
#pragma unroll
      for (int np = 0; np < kCols / 16; ++np) {
        FragB2 b;
        load_b_kn(b, &sm.written_k[0][0], kLdCols, k0, 16 * np, lane);
        mma(s[2 * np], a, b, 0);
        mma(s[2 * np + 1], a, b, 1);
      }
    }
    // O += P V' (P is zero right of the diagonal block), rounded to bf16 where the unfused model stores it.
    mma_rows<kGroupCols, kChunk>(o, &st.p[0][0], kLdChunk, 16 * block, &sm.written[0][0], kLdCols,
                                 kGroupCols * group, 16 * block + 16, lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int nt = 0; nt < kGroupCols / 8; ++nt) {
        *reinterpret_cast<unsigned*>(&sm.out[16 * block + lane / 4 + 8 * half][col + nt * 8]) =
            pack_bf16(o[nt][2 * half], o[nt][2 * half + 1]);
      }
    }
    store_state_bf16(sm, s, warp, lane);
  }
  __syncthreads();  // the last chunk's O is complete
  const int last = chunks - 1;
  store_output_rows(sm.out, p, seq.start + last * kChunk, seq.length - last * kChunk, head, col0, tid);
  for_each_state_element(s, warp, lane, [&](float& x, int key, int col) { state[(col0 + col) * kDim + key] = x; });
}

// ---- norm: out = rmsnorm(O) w silu(z) in place, over the rows of the batch's sequences only ------------------
// A block per kRowsPerBlock (token, value head) rows of a sequence (grid y); rows of padding keep what they held.

using NormTraits = RMSNormTraits<bf16, NormKind::kGated, 8, kDim / 8, 1>;  // 16 lanes per row, a vector each

__global__ void __launch_bounds__(NormTraits::kThreads) gdn_prefill_norm_kernel(const RMSNormParams norm,
                                                                                 const GdnPrefillParams p) {
  await_previous_kernel();  // launched chained to `state`
  const Sequence seq = sequence(p, blockIdx.y);
  const int rows = seq.length * p.value_heads;  // below 2^31: the op checks tokens * channels
  // Blocks stride over the sequence's rows: the grid is sized by max_chunks, a hint.
  for (int row0 = blockIdx.x * NormTraits::kRowsPerBlock; row0 < rows; row0 += gridDim.x * NormTraits::kRowsPerBlock) {
    const int row = row0 + threadIdx.x / NormTraits::kLanes;
    const bool valid_row = row < rows;
    norm_row<NormTraits>(norm, valid_row ? seq.start + row / p.value_heads : 0,
                         valid_row ? row % p.value_heads * kDim : 0, valid_row, threadIdx.x % NormTraits::kLanes);
  }
}

}  // namespace gdn_prefill
}  // namespace qwen3next
