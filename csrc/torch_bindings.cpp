// Every op of qwen3next_cuda._C, registered once. Shape legend:
//   N  tokens (any leading dims)     H  hidden size      D  row length (hidden size or head dim)
//   Hv value heads                    dv value head dim
// Outputs are preallocated by the caller and marked (a!); nothing here allocates, so every op can
// be captured in a CUDA graph. Fake (meta) implementations live in python/qwen3next_cuda/ops.py.
#include <Python.h>
#include <torch/library.h>

#include "common/build_info.h"
#include "ops.h"

TORCH_LIBRARY(qwen3next, m) {
  // out[N, D] = x * rsqrt(mean(x^2) + eps) * (1 + weight[D])              (zero-centred RMSNorm)
  m.def("rmsnorm(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.impl("rmsnorm", c10::DeviceType::CUDA, &qwen3next::rmsnorm);

  // residual_out[N, H] = x + residual (rounded to the dtype); out[N, H] = rmsnorm(residual_out)
  m.def("rmsnorm_add(Tensor(a!) residual_out, Tensor(b!) out, Tensor x, Tensor residual, Tensor weight, "
        "float eps) -> ()");
  m.impl("rmsnorm_add", c10::DeviceType::CUDA, &qwen3next::rmsnorm_add);

  // per row of D = dv: out = x * rsqrt(mean(x^2) + eps) * weight[D] * silu(z); x, z [N, Hv, dv] or
  // [N, Hv * dv], rows may be strided slices of a wider projection output
  m.def("rmsnorm_gated(Tensor(a!) out, Tensor x, Tensor z, Tensor weight, float eps) -> ()");
  m.impl("rmsnorm_gated", c10::DeviceType::CUDA, &qwen3next::rmsnorm_gated);

  // Gated DeltaNet decode mixer for T = 1..8 tokens per sequence (python/qwen3next_cuda/cache.py):
  // qkvz[B, T, 2*Hk*128 + 2*Hv*128] ([q|k|v|z]), ba[B, T, 2*Hv] ([b|a]) -> out[B, T, Hv*128] =
  // gated_rmsnorm(delta_rule(conv1d_silu(qkv)), z); conv_state[S, 3, C] and recurrent_state[S, Hv, 128, 128]
  // (fp32 or bf16, value-major) of slot slots[b] are read and, when update_state, written; slots outside [0, S) skip
  // (their output rows zeroed when zero_padding, else left as they are).
  m.def("gdn_decode(Tensor(a!) out, Tensor(b!) conv_state, Tensor(c!) recurrent_state, Tensor qkvz, Tensor ba, "
        "Tensor slots, Tensor conv_weight, Tensor A_log, Tensor dt_bias, Tensor norm_weight, float eps, "
        "bool update_state, bool zero_padding) -> ()");
  m.impl("gdn_decode", c10::DeviceType::CUDA, &qwen3next::gdn_decode);

  // Gated DeltaNet prefill (python/qwen3next_cuda/cache.py): causal conv1d + SiLU, then the chunked gated delta rule
  // on tensor cores: sequence s is rows [cu_seqlens[s], cu_seqlens[s+1]) of qkvz[N, >= C + Hv*128] (the in_proj
  // output [q|k|v|z], C = conv_weight's channels) and ba[N, 2*Hv] ([b|a]); out[N, Hv*128] =
  // gated_rmsnorm(delta_rule(conv(q, k, v)), z); it starts from conv_state[slots[s]] ([S, 3, C]) and
  // recurrent_state[slots[s]] ([S, Hv, 128, 128] fp32, value-major) and leaves its final states there; slots
  // outside [0, S) skip. max_seqlen (a hint for the grid) is the longest sequence. portable: the mma.sync `state`
  // even where the wgmma one (sm90, a build with 90a) would run.
  m.def("gdn_prefill(Tensor(a!) out, Tensor(b!) conv_state, Tensor(c!) recurrent_state, Tensor qkvz, Tensor ba, "
        "Tensor cu_seqlens, Tensor slots, Tensor conv_weight, Tensor A_log, Tensor dt_bias, Tensor norm_weight, "
        "float eps, int max_seqlen, bool portable=False) -> ()");
  m.impl("gdn_prefill", c10::DeviceType::CUDA, &qwen3next::gdn_prefill);

  // Causal depthwise conv1d + SiLU over a varlen batch (prefill): sequence s is rows
  // [cu_seqlens[s], cu_seqlens[s+1]) of x[N, C] (rows may be strided slices of the in_proj output); its history
  // is conv_state[slots[s]] ([S, 3, C]), which then holds its last 3 inputs; slots outside [0, S) skip.
  m.def("causal_conv1d_varlen(Tensor(a!) out, Tensor(b!) conv_state, Tensor x, Tensor weight, Tensor cu_seqlens, "
        "Tensor slots) -> ()");
  m.impl("causal_conv1d_varlen", c10::DeviceType::CUDA, &qwen3next::causal_conv1d_varlen);

  // Sparse MoE block for few tokens (decode), E experts of width I, shared expert of width Is:
  // out[N, H] = sum over the top_k of softmax(x router^T) (logits rounded to bf16; renormalised when
  // norm_topk_prob) of w * down(silu(gate x) * up x) + sigmoid(shared_expert_gate x) * shared_expert(x), with
  // router[E, H], gate_up[E, 2I, H] (gate rows first), down[E, H, I], shared_gate/up[Is, H], shared_down[H, Is];
  // all bf16.
  m.def("moe_decode(Tensor(a!) out, Tensor x, Tensor router, Tensor gate_up, Tensor down, "
        "Tensor shared_gate, Tensor shared_up, Tensor shared_down, Tensor shared_expert_gate, int top_k, "
        "bool norm_topk_prob) -> ()");
  m.impl("moe_decode", c10::DeviceType::CUDA, &qwen3next::moe_decode);

  // The MoE block's grouped GEMM: out[rows of group e] = a[rows of group e] @ b[e]^T, group e's rows being
  // [offsets[e - 1], offsets[e]) of a and out; a[P, K], b[E, N, K], out[P, N] bf16, offsets[E] int32 (cumulative).
  // The sm90a kernel (TMA + wgmma), or with portable the mma.sync one (sm80 and later).
  m.def("moe_grouped_gemm(Tensor(a!) out, Tensor a, Tensor b, Tensor offsets, bool portable) -> ()");
  m.impl("moe_grouped_gemm", c10::DeviceType::CUDA, &qwen3next::moe_grouped_gemm);

  // The many-token MoE path's activation: act[p] = silu(gate_up[p, :I]) * gate_up[p, I:] * scale[p], in fp32,
  // rounded once; gate_up[P, 2I], act[P, I] bf16, scale[P] float32 (the pairs' route weights).
  // The same grouped GEMM with the SwiGLU in its epilogue (sm90a only): b's 2I rows hold gate and up interleaved in
  // blocks of 32 ([g 0-31 | u 0-31 | g 32-63 | ...]); out[rows, I] = silu(gate) * up * scale[row] (scale float32).
  m.def("moe_grouped_gemm_swiglu(Tensor(a!) out, Tensor a, Tensor b, Tensor offsets, Tensor scale) -> ()");
  m.impl("moe_grouped_gemm_swiglu", c10::DeviceType::CUDA, &qwen3next::moe_grouped_gemm_swiglu);

  m.def("moe_swiglu(Tensor(a!) act, Tensor gate_up, Tensor scale) -> ()");
  m.impl("moe_swiglu", c10::DeviceType::CUDA, &qwen3next::moe_swiglu);

  // The many-token MoE path's combine: out[n] = sum_j routed[pair_of[n, j]] + sigmoid(gate[n]) * shared[n], in fp32,
  // rounded once; routed[P, H] (pre-scaled by the route weights), shared[N, H], gate[N] bf16, pair_of[N, k] int64.
  m.def("moe_combine(Tensor(a!) out, Tensor routed, Tensor pair_of, Tensor shared, Tensor gate) -> ()");
  m.impl("moe_combine", c10::DeviceType::CUDA, &qwen3next::moe_combine);

  // A dense projection of a few tokens (decode): out[N, M] = x[N, K] weight[M, K]^T, bf16, N <= 2, K a multiple of
  // 8, N x K <= 16384; x's rows may be strided.
  m.def("decode_linear(Tensor(a!) out, Tensor x, Tensor weight) -> ()");
  m.impl("decode_linear", c10::DeviceType::CUDA, &qwen3next::decode_linear);

  // RoPE tables (rotate half): cos[N, R] = cos(positions[N] * inv_freq[i % (R / 2)]) * scale, sin alike, fp32;
  // positions int32 or int64, inv_freq[R / 2] fp32.
  m.def("rope_cos_sin(Tensor(a!) cos, Tensor(b!) sin, Tensor positions, Tensor inv_freq, float scale) -> ()");
  m.impl("rope_cos_sin", c10::DeviceType::CUDA, &qwen3next::rope_cos_sin);

  // Before the gated attention (head dim 256), for a varlen batch (sequence s: rows [cu_seqlens[s],
  // cu_seqlens[s+1]), its last tokens, ending at context_lens[s]): q_out[N, Hq, 256] = rope(rmsnorm(q)), and
  // rope(rmsnorm(k)), v into key/value_cache[slots[s]] ([S, max_len, Hkv, 256]) at each token's position; q, k, v
  // [N, H, 256] may be strided views; cos, sin [N, R] fp32 (rotate half on the first R dims); norms zero-centred.
  m.def("attention_prepass(Tensor(a!) q_out, Tensor(b!) key_cache, Tensor(c!) value_cache, Tensor q, Tensor k, "
        "Tensor v, Tensor cos, Tensor sin, Tensor q_norm_weight, Tensor k_norm_weight, Tensor slots, "
        "Tensor cu_seqlens, Tensor context_lens, float eps) -> ()");
  m.impl("attention_prepass", c10::DeviceType::CUDA, &qwen3next::attention_prepass);

  // Gated GQA prefill attention, head dim 256: sequence s's new tokens are rows [cu_seqlens[s], cu_seqlens[s+1]) of
  // q[N, Hq, 256], token i at position context_lens[s] - T_s + i, over its keys and values 0 .. context_lens[s]-1
  // in key/value_cache[slots[s]] (a cached prefix included; causal). out[N, Hq*256] = softmax(scale q k^T) v *
  // sigmoid(gate[N, Hq, 256] (strided)); slots outside [0, S) skip. max_seqlen (a grid hint): the longest T_s.
  // portable: the mma.sync kernel even where the wgmma one (sm90, a build with 90a) would run.
  m.def("attention_prefill(Tensor(a!) out, Tensor q, Tensor gate, Tensor key_cache, Tensor value_cache, "
        "Tensor slots, Tensor cu_seqlens, Tensor context_lens, float scale, int max_seqlen, bool portable=False) "
        "-> ()");
  m.impl("attention_prefill", c10::DeviceType::CUDA, &qwen3next::attention_prefill);

  // Gated GQA decode attention, head dim 256: sequence b's T = tokens / B newest tokens are rows b*T .. b*T+T-1 of
  // q[N, Hq, 256]; its keys and values are positions 0 .. context_lens[b]-1 of key/value_cache[slots[b]]
  // ([S, max_len, Hkv, 256], the new tokens' included); token t sits at context_lens[b] - T + t (causal).
  // out[N, Hq*256] = softmax(scale q k^T) v * sigmoid(gate[N, Hq, 256] (strided)); slots outside [0, S) skip.
  // max_context (a hint: the longest context the batch may have; the cache's max_len will do) sizes the split over
  // the context; any value is correct, each split's range comes from its sequence's own length.
  m.def("attention_decode(Tensor(a!) out, Tensor q, Tensor gate, Tensor key_cache, Tensor value_cache, "
        "Tensor slots, Tensor context_lens, float scale, int max_context) -> ()");
  m.impl("attention_decode", c10::DeviceType::CUDA, &qwen3next::attention_decode);
  // whether attention_decode takes `rows` query rows per KV head on CUDA device `device` (at most 64, and its shared
  // memory fits that GPU)
  m.def("attention_decode_fits(int device, int rows) -> bool", &qwen3next::attention_decode_fits);

  // the CUDA architectures, CUDA and CUTLASS versions this library was built with (JSON)
  m.def("build_info() -> str", &qwen3next::build_info);
}

// `import qwen3next_cuda._C` loads the library, which runs the registration above.
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "qwen3next_cuda CUDA ops (torch.ops.qwen3next)", -1};
PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
