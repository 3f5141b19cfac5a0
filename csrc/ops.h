// Host entry points registered in torch_bindings.cpp (defined in the <family>/*_api.cpp files; the many-token MoE
// ops, small or with CUTLASS types in their host code, beside their kernels in moe/moe_grouped_gemm.cu and
// moe/moe_pairs.cu).
#pragma once

#include <ATen/core/Tensor.h>

namespace qwen3next {

// norm/
void rmsnorm(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps);
void rmsnorm_add(at::Tensor& residual_out, at::Tensor& out, const at::Tensor& x, const at::Tensor& residual,
                 const at::Tensor& weight, double eps);
void rmsnorm_gated(at::Tensor& out, const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight,
                   double eps);

// gdn/
void gdn_decode(at::Tensor& out, at::Tensor& conv_state, at::Tensor& recurrent_state, const at::Tensor& qkvz,
                const at::Tensor& ba, const at::Tensor& slots, const at::Tensor& conv_weight, const at::Tensor& A_log,
                const at::Tensor& dt_bias, const at::Tensor& norm_weight, double eps, bool update_state,
                bool zero_padding);
void gdn_prefill(at::Tensor& out, at::Tensor& conv_state, at::Tensor& recurrent_state, const at::Tensor& qkvz,
                 const at::Tensor& ba, const at::Tensor& cu_seqlens, const at::Tensor& slots,
                 const at::Tensor& conv_weight, const at::Tensor& A_log, const at::Tensor& dt_bias,
                 const at::Tensor& norm_weight, double eps, int64_t max_seqlen, bool portable);

// conv/
void causal_conv1d_varlen(at::Tensor& out, at::Tensor& conv_state, const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& cu_seqlens, const at::Tensor& slots);

// moe/
void moe_decode(at::Tensor& out, const at::Tensor& x, const at::Tensor& router, const at::Tensor& gate_up,
                const at::Tensor& down, const at::Tensor& shared_gate, const at::Tensor& shared_up,
                const at::Tensor& shared_down, const at::Tensor& shared_expert_gate, int64_t top_k,
                bool norm_topk_prob);
void moe_grouped_gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                      bool portable);
void moe_grouped_gemm_swiglu(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                             const at::Tensor& scale);
void moe_swiglu(at::Tensor& act, const at::Tensor& gate_up, const at::Tensor& scale);
void moe_combine(at::Tensor& out, const at::Tensor& routed, const at::Tensor& pair_of, const at::Tensor& shared,
                 const at::Tensor& gate);

// linear/
void decode_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight);

// attention/
void attention_prepass(at::Tensor& q_out, at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& q,
                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& q_norm_weight, const at::Tensor& k_norm_weight, const at::Tensor& slots,
                       const at::Tensor& cu_seqlens, const at::Tensor& context_lens, double eps);
void attention_prefill(at::Tensor& out, const at::Tensor& q, const at::Tensor& gate, const at::Tensor& key_cache,
                       const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& cu_seqlens,
                       const at::Tensor& context_lens, double scale, int64_t max_seqlen, bool portable);
void attention_decode(at::Tensor& out, const at::Tensor& q, const at::Tensor& gate, const at::Tensor& key_cache,
                      const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& context_lens,
                      double scale, int64_t max_context);
void rope_cos_sin(at::Tensor& cos, at::Tensor& sin, const at::Tensor& positions, const at::Tensor& inv_freq,
                  double scale);
// Whether attention_decode takes `rows` query rows per KV head on `device`: at most 64, and the split kernel's
// shared memory fits (an A100's does not with 5-8 tokens per sequence).
bool attention_decode_fits(int64_t device, int64_t rows);

}  // namespace qwen3next
