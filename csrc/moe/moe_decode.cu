#include <algorithm>

#include "common/launch.h"
#include "moe/moe_decode_kernel.cuh"

namespace qwen3next {

using namespace moe_decode;

void run_moe_decode(const MoeDecodeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  const size_t route_bytes = sizeof(int) * (2 * size_t(p.experts) + 2 * size_t(p.tokens) * p.top_k);
  moe_route_kernel<<<1, kRouteThreads, route_bytes, stream>>>(p);
  QN_CHECK_LAUNCH();
  const int widest = std::max(p.expert_width, p.shared_width);
  const dim3 gate_up_grid(widest / kTileRows, p.max_groups), down_grid(p.hidden_size / kTileRows, p.max_groups);
  if (p.tokens <= 8) {  // a group holds each token at most once
    moe_expert_kernel<true, 1><<<gate_up_grid, kThreads, 0, stream>>>(p);
    QN_CHECK_LAUNCH();
    moe_expert_kernel<false, 1><<<down_grid, kThreads, 0, stream>>>(p);
  } else {
    moe_expert_kernel<true, kMaxTokenTiles><<<gate_up_grid, kThreads, 0, stream>>>(p);
    QN_CHECK_LAUNCH();
    moe_expert_kernel<false, kMaxTokenTiles><<<down_grid, kThreads, 0, stream>>>(p);
  }
  QN_CHECK_LAUNCH();
  moe_combine_kernel<<<p.tokens, 256, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
