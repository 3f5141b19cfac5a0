#include <algorithm>

#include "common/launch.h"
#include "moe/moe_decode_kernel.cuh"

namespace qwen3next {

using namespace moe_decode;

namespace {

template <int kTokenTiles>
void run_passes(const MoeDecodeParams& p, cudaStream_t stream) {
  moe_gemm_kernel<Pass::kRouter, kTokenTiles><<<dim3(p.experts / kTileRows, kRouterSplits), kThreads, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
  const size_t route_bytes = sizeof(int) * (2 * size_t(p.experts) + 2 * size_t(p.tokens) * p.top_k);
  moe_route_kernel<<<1, kRouteThreads, route_bytes, stream>>>(p);
  QN_CHECK_LAUNCH();
  const int widest = std::max(p.expert_width, p.shared_width);
  moe_gemm_kernel<Pass::kGateUp, kTokenTiles><<<dim3(widest / kTileRows, p.max_groups), kThreads, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
  moe_gemm_kernel<Pass::kDown, kTokenTiles><<<dim3(p.hidden_size / kTileRows, p.max_groups), kThreads, 0, stream>>>(
      p);
  QN_CHECK_LAUNCH();
  moe_combine_kernel<<<p.tokens, 256, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace

void run_moe_decode(const MoeDecodeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (p.tokens <= 8) {  // a group holds each token at most once
    run_passes<1>(p, stream);
  } else {
    run_passes<kMaxTokenTiles>(p, stream);
  }
}

}  // namespace qwen3next
