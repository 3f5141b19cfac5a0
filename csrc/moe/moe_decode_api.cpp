#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <initializer_list>

#include "common/checks.h"
#include "common/workspace.h"
#include "moe/moe_decode.h"

namespace qwen3next {

namespace {
// The kernels' limits: the route kernel keeps one expert per thread and a warp's lanes for the top-k; the
// GEMMs move 32-wide k-blocks of 16 rows, the router's in 4 K splits; the route kernel's shared memory,
// 4 x (2 E + 2 N top_k) bytes, bounds the tokens: 36 KiB at the largest E and top_k, under the 48 KiB a launch
// gets without opting in.
constexpr int64_t kMaxExperts = 512, kMaxTopK = 16, kBlockK = 32, kTileRows = 16, kRouterSplits = 4,
                  kMaxTokens = 256;
}  // namespace

void moe_decode(at::Tensor& out, const at::Tensor& x, const at::Tensor& router, const at::Tensor& gate_up,
                const at::Tensor& down, const at::Tensor& shared_gate, const at::Tensor& shared_up,
                const at::Tensor& shared_down, const at::Tensor& shared_expert_gate, int64_t top_k,
                bool norm_topk_prob) {
  QN_CHECK_CUDA(x);
  const std::initializer_list<const at::Tensor*> tensors{&out, &x, &router, &gate_up, &down, &shared_gate,
                                                          &shared_up, &shared_down, &shared_expert_gate};
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(t->device() == x.device(), "moe_decode: all tensors must be on ", x.device(), ", got one on ",
                t->device());
    TORCH_CHECK(t->scalar_type() == at::kBFloat16, "moe_decode: every tensor must be bfloat16, got ",
                t->scalar_type());
    TORCH_CHECK(t->is_contiguous(), "moe_decode: every tensor must be contiguous");
    TORCH_CHECK(vector_aligned(*t), "moe_decode: every tensor must start on a 16-byte boundary");
  }
  TORCH_CHECK(x.dim() == 2, "moe_decode: x must be [tokens, hidden], got ", x.sizes());
  const int64_t tokens = x.size(0), hidden = x.size(1);
  TORCH_CHECK(gate_up.dim() == 3 && gate_up.size(2) == hidden && gate_up.size(1) % 2 == 0,
              "moe_decode: gate_up must be [experts, 2 * width, ", hidden, "], got ", gate_up.sizes());
  const int64_t experts = gate_up.size(0), width = gate_up.size(1) / 2;
  QN_CHECK_SHAPE(down, experts, hidden, width);
  TORCH_CHECK(shared_gate.dim() == 2 && shared_gate.size(1) == hidden, "moe_decode: shared_gate must be [width, ",
              hidden, "], got ", shared_gate.sizes());
  const int64_t shared_width = shared_gate.size(0);
  QN_CHECK_SHAPE(shared_up, shared_width, hidden);
  QN_CHECK_SHAPE(shared_down, hidden, shared_width);
  TORCH_CHECK(shared_expert_gate.numel() == hidden, "moe_decode: shared_expert_gate must have ", hidden,
              " elements, got ", shared_expert_gate.sizes());
  QN_CHECK_SHAPE(router, experts, hidden);
  QN_CHECK_SHAPE(out, tokens, hidden);
  TORCH_CHECK(experts >= 1 && experts <= kMaxExperts && experts % kTileRows == 0, "moe_decode: a multiple of ",
              kTileRows, " experts up to ", kMaxExperts, ", got ", experts);
  TORCH_CHECK(top_k >= 1 && top_k <= std::min(kMaxTopK, experts), "moe_decode: top_k must be in [1, ",
              std::min(kMaxTopK, experts), "], got ", top_k);
  TORCH_CHECK(hidden % (kRouterSplits * kBlockK) == 0 && width % kBlockK == 0 && shared_width % kBlockK == 0,
              "moe_decode: the hidden size must be a multiple of ", kRouterSplits * kBlockK,
              " and the expert widths multiples of ", kBlockK, ", got ", hidden, ", ", width, " and ", shared_width);
  TORCH_CHECK(tokens <= kMaxTokens, "moe_decode: at most ", kMaxTokens, " tokens, got ", tokens);
  if (tokens == 0) return;

  const c10::cuda::OptionalCUDAGuard guard(x.device());
  MoeDecodeParams p{};
  p.x = x.data_ptr();
  p.router = router.data_ptr();
  p.gate_up = gate_up.data_ptr();
  p.down = down.data_ptr();
  p.shared_gate = shared_gate.data_ptr();
  p.shared_up = shared_up.data_ptr();
  p.shared_down = shared_down.data_ptr();
  p.shared_expert_gate = shared_expert_gate.data_ptr();
  p.out = out.data_ptr();
  // Workspace: one buffer (stream-ordered through the caching allocator, so the op stays capturable) carved into the
  // kernels' arrays, each 16-byte aligned.
  const int64_t pairs = tokens * (top_k + 1), routed = tokens * top_k, groups = std::min(experts, routed) + 1;
  const int64_t partial_count = kRouterSplits * tokens * experts, hidden_count = pairs * std::max(width, shared_width);
  const int64_t bytes = carved_bytes<float>(partial_count) + carved_bytes<float>(pairs) +
                        2 * carved_bytes<int32_t>(pairs) + carved_bytes<int32_t>(routed) +
                        3 * carved_bytes<int32_t>(1) + 2 * carved_bytes<int32_t>(groups) +
                        carved_bytes<int32_t>(groups + 1) +
                        carved_bytes<at::BFloat16>(hidden_count) + carved_bytes<float>(pairs * hidden);
  const at::Tensor workspace = at::empty({bytes}, x.options().dtype(at::kByte));
  uint8_t* const base = workspace.data_ptr<uint8_t>();
  uint8_t* cursor = base;
  p.router_partial = carve<float>(cursor, partial_count);
  p.token_weight = carve<float>(cursor, pairs);
  p.token_pair = carve<int32_t>(cursor, pairs);
  p.pair_token = carve<int32_t>(cursor, pairs);
  p.pair_expert = carve<int32_t>(cursor, routed);
  p.route_done = carve<int32_t>(cursor, 1);
  p.route_ready = carve<int32_t>(cursor, 1);
  p.gate_up_done = carve<int32_t>(cursor, groups);
  p.num_groups = carve<int32_t>(cursor, 1);
  p.group_expert = carve<int32_t>(cursor, groups);
  p.group_start = carve<int32_t>(cursor, groups + 1);
  p.hidden = carve<at::BFloat16>(cursor, hidden_count);
  p.expert_out = carve<float>(cursor, pairs * hidden);
  TORCH_INTERNAL_ASSERT(cursor == base + bytes, "moe_decode: the workspace's size and its carving disagree");
  p.tokens = static_cast<int>(tokens);
  p.hidden_size = static_cast<int>(hidden);
  p.experts = static_cast<int>(experts);
  p.expert_width = static_cast<int>(width);
  p.shared_width = static_cast<int>(shared_width);
  p.top_k = static_cast<int>(top_k);
  p.max_groups = static_cast<int>(groups);
  p.norm_topk_prob = norm_topk_prob;
  run_moe_decode(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace qwen3next
