// Gated DeltaNet prefill: the causal conv1d + SiLU and the chunked gated delta rule (64-token chunks, WY/UT form,
// tensor cores) over a varlen batch, from the in_proj output to the gated RMSNorm, each sequence starting from the
// conv and recurrent states in its cache slot and leaving its final states there. Layouts:
// python/qwen3next_cuda/cache.py.
//
// Three launches (sm80+: mma.sync and cp.async). `prepare` (every chunk at once, a CTA per chunk and key head)
// convolves the 512 channels it owns (q and k of its key head, v of its two value heads) into the qkv workspace,
// solves each chunk's triangular system and writes, per token and value head, the chunk-local terms that do not
// depend on the state: T diag(beta), P and the row scales. `state` (a CTA per 32 value columns of a head and
// sequence; the columns evolve independently) walks the chunks in order, carrying the fp32 state S, and writes each
// chunk's output columns (bf16, before the norm) into `out`:
//   V' = T diag(beta) (V - diag(wscale) K S),   O = diag(qscale) Q S + P V',   S = gamma S + K^T diag(kscale) V'
// `norm` (norm/rmsnorm_kernel.cuh's row code), since the norm spans a head's 128 columns, then finishes the rows of
// the batch's sequences in place (rows of padding keep what they held):
//   out = rmsnorm(O) w silu(z)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwen3next {

struct GdnPrefillParams {
  const void* x;  // [tokens, >= C] bf16 rows: the in_proj output, [q | k | v] its first C = 2*Hk*128 + Hv*128 channels
  int64_t x_row_stride;
  const void* conv_weight;  // [C, 4] bf16
  void* conv_state;  // [num_slots, 3, C] bf16: the conv inputs before each sequence, oldest first
  void* qkv;  // [tokens, C] bf16 workspace: the conv + SiLU output, written by `prepare`, read by `state`
  int64_t qkv_row_stride;
  const void* z;  // [tokens, Hv*128] bf16 rows (a slice of the in_proj output)
  int64_t z_row_stride;
  const void* ba;  // [tokens, 2*Hv] bf16 rows: [b | a]
  int64_t ba_row_stride;
  const float* A_log;  // [Hv]
  const float* dt_bias;  // [Hv]
  const void* norm_weight;  // [128] bf16
  void* out;  // [tokens, Hv*128] bf16 rows: O from `state`, then the normed output
  int64_t out_row_stride;
  float* state;  // [num_slots, Hv, 128 (v), 128 (k)] fp32, value-major
  const int32_t* cu_seqlens;  // [seqs + 1]
  const int32_t* slots;  // [seqs]; outside [0, num_slots): padding, skipped
  // Workspace written by `prepare`, per token and value head, read by `state`:
  void* t;  // [tokens, Hv, 64] bf16: row i of T diag(beta) of its chunk (T = (I + A)^-1, lower triangular)
  void* p;  // [tokens, Hv, 64] bf16: row i of P = (Q K^T, normalised) * exp(c_i - c_j), j <= i, of its chunk
  float* scales;  // [tokens, Hv, 4] fp32: qscale, kscale, c (cumulative g within the chunk), wscale
  float eps;
  int tokens, channels, key_heads, value_heads, seqs, num_slots;
  int max_chunks;  // chunks of the longest sequence (a hint: `prepare` strides over more when there are)
};

// portable: the mma.sync `state` even where the wgmma one would run (sm90, a build with 90a).
void run_gdn_prefill(const GdnPrefillParams& params, bool portable, cudaStream_t stream);
// `state` on sm90a (gdn_prefill_state_sm90.cu; built with QWEN3NEXT_SM90A): warpgroup MMAs, same contract.
void run_gdn_prefill_state_sm90(const GdnPrefillParams& params, cudaStream_t stream);

}  // namespace qwen3next
