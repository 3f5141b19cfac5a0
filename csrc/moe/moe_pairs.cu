// The many-token MoE path's passes over its (token, expert) pairs, between and after the grouped GEMMs:
//   swiglu    act[p] = silu(gate[p]) * up[p] * scale[p]: the gate_up GEMM's output [pairs, 2I] (gate and up
//             columns interleaved in blocks of 32, as the experts' rows are) to the down GEMM's input [pairs, I],
//             scaled by the pair's route weight (down is linear, so the combine is then a plain sum), fp32 math
//             rounded to bf16 once (sm80 / sm100: on sm90a the gate_up GEMM's epilogue does it);
//   combine   out[n] = sum over j of routed[pair_of[n][j]] + sigmoid(gate[n]) * shared[n]: each token's k routed rows
//             and its gated shared-expert row in one pass, summed in j order in fp32, rounded to bf16 once.
// (The few-token kernels combine their fp32 expert outputs in moe_decode_kernel.cuh.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "common/checks.h"
#include "common/launch.h"
#include "common/vec.cuh"
#include "moe/gate_up_layout.h"
#include "ops.h"

namespace qwen3next {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256, kMaxTopK = 16;

__device__ __forceinline__ void add_scaled(float (&acc)[8], const uint4& v, float scale) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc[2 * i] += scale * to_float(element_of<bf16>(w[i], 0));
    acc[2 * i + 1] += scale * to_float(element_of<bf16>(w[i], 1));
  }
}

// A thread per 8 columns of a pair.
__global__ void __launch_bounds__(kThreads) moe_swiglu_kernel(bf16* act, const bf16* gate_up, const float* scale,
                                                             int64_t pairs, int width) {
  const int64_t i = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * 8, pair = i / width;
  if (pair >= pairs) return;
  const int c = static_cast<int>(i % width), gate_column = gate_up_gate_row(c);
  float gate[8], up[8], out[8];
  load_float<bf16, 8>(gate, gate_up + pair * 2 * width + gate_column);
  load_float<bf16, 8>(up, gate_up + pair * 2 * width + gate_column + kGateUpBlock);
  const float s = scale[pair];
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = silu(gate[e]) * up[e] * s;
  store_float<bf16, 8>(act + pair * width + c, out);
}

// A CTA per token; a thread owns 8 columns (16 bytes) per pass and issues the loads of all the token's rows before
// it sums the first.
__global__ void __launch_bounds__(kThreads) moe_combine_kernel(bf16* out, const bf16* routed, const int64_t* pair_of,
                                                              const bf16* shared, const bf16* gate, int hidden,
                                                              int top_k) {
  __shared__ int64_t rows[kMaxTopK];
  const int64_t token = blockIdx.x;
  if (threadIdx.x < top_k) rows[threadIdx.x] = pair_of[token * top_k + threadIdx.x];
  __syncthreads();
  const float shared_weight = 1.f / (1.f + __expf(-to_float(gate[token])));
  for (int c = 8 * threadIdx.x; c < hidden; c += 8 * kThreads) {
    uint4 v[kMaxTopK + 1];
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) {
      if (j < top_k) v[j] = __ldg(reinterpret_cast<const uint4*>(routed + rows[j] * hidden + c));
    }
    v[kMaxTopK] = __ldg(reinterpret_cast<const uint4*>(shared + token * hidden + c));
    float acc[8] = {};
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) {
      if (j >= top_k) break;
      add_scaled(acc, v[j], 1.f);
    }
    add_scaled(acc, v[kMaxTopK], shared_weight);
    store_float<bf16, 8>(out + token * hidden + c, acc);
  }
}

}  // namespace

void moe_swiglu(at::Tensor& act, const at::Tensor& gate_up, const at::Tensor& scale) {
  QN_CHECK_CUDA(gate_up);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&act, &gate_up, &scale}) {
    TORCH_CHECK(t->device() == gate_up.device(), "moe_swiglu: all tensors must be on ", gate_up.device(),
                ", got one on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "moe_swiglu: every tensor must be contiguous");
  }
  TORCH_CHECK(act.scalar_type() == at::kBFloat16 && gate_up.scalar_type() == at::kBFloat16,
              "moe_swiglu: act and gate_up must be bfloat16, got ", act.scalar_type(), " and ", gate_up.scalar_type());
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "moe_swiglu: scale must be float32, got ", scale.scalar_type());
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(1) % (2 * kGateUpBlock) == 0, "moe_swiglu: gate_up must be [pairs, "
              "2 x width] with the width a multiple of ", kGateUpBlock, ", got ", gate_up.sizes());
  const int64_t pairs = gate_up.size(0), width = gate_up.size(1) / 2;
  QN_CHECK_SHAPE(act, pairs, width);
  QN_CHECK_SHAPE(scale, pairs);
  TORCH_CHECK(vector_aligned(act) && vector_aligned(gate_up), "moe_swiglu: act and gate_up must start on a 16-byte "
              "boundary");
  if (pairs == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(gate_up.device());
  const int64_t threads = pairs * width / 8;
  moe_swiglu_kernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0,
                      c10::cuda::getCurrentCUDAStream()>>>(static_cast<bf16*>(act.data_ptr()),
                                                           static_cast<const bf16*>(gate_up.data_ptr()),
                                                           scale.data_ptr<float>(), pairs, static_cast<int>(width));
  QN_CHECK_LAUNCH();
}

void moe_combine(at::Tensor& out, const at::Tensor& routed, const at::Tensor& pair_of, const at::Tensor& shared,
                 const at::Tensor& gate) {
  QN_CHECK_CUDA(routed);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &routed, &pair_of, &shared, &gate}) {
    TORCH_CHECK(t->device() == routed.device(), "moe_combine: all tensors must be on ", routed.device(),
                ", got one on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "moe_combine: every tensor must be contiguous");
  }
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &routed, &shared, &gate}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "moe_combine: out, routed, shared and gate must be bfloat16, got ",
                t->scalar_type());
  }
  TORCH_CHECK(pair_of.scalar_type() == at::kLong, "moe_combine: pair_of must be int64, got ", pair_of.scalar_type());
  TORCH_CHECK(out.dim() == 2 && pair_of.dim() == 2, "moe_combine: out must be [tokens, hidden] and pair_of [tokens, "
              "top_k], got ", out.sizes(), " and ", pair_of.sizes());
  const int64_t tokens = out.size(0), hidden = out.size(1), top_k = pair_of.size(1);
  QN_CHECK_SHAPE(pair_of, tokens, top_k);
  QN_CHECK_SHAPE(shared, tokens, hidden);
  TORCH_CHECK(gate.numel() == tokens, "moe_combine: gate must have one logit per token (", tokens, "), got ",
              gate.sizes());
  TORCH_CHECK(routed.dim() == 2 && routed.size(1) == hidden, "moe_combine: routed must be [pairs, ", hidden,
              "], got ", routed.sizes());
  TORCH_CHECK(top_k >= 1 && top_k <= kMaxTopK, "moe_combine: top_k must be in [1, ", kMaxTopK, "], got ", top_k);
  TORCH_CHECK(hidden % 8 == 0, "moe_combine: the hidden size must be a multiple of 8, got ", hidden);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &routed, &shared}) {
    TORCH_CHECK(vector_aligned(*t), "moe_combine: out, routed and shared must start on a 16-byte boundary");
  }
  if (tokens == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(routed.device());
  moe_combine_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<bf16*>(out.data_ptr()), static_cast<const bf16*>(routed.data_ptr()), pair_of.data_ptr<int64_t>(),
      static_cast<const bf16*>(shared.data_ptr()), static_cast<const bf16*>(gate.data_ptr()),
      static_cast<int>(hidden), static_cast<int>(top_k));
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
