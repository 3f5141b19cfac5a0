#include <algorithm>

#include "common/launch.h"
#include "moe/moe_decode_kernel.cuh"

namespace qwen3next {

using namespace moe_decode;

namespace {

// Chained launches (common/chain.cuh): each kernel's prologue (weights asked of L2, the shared gate, the groups
// known two launches back) overlaps the tail of the one before; with one token tile, gate_up, down and the combine go
// on counters instead of the previous kernel's end (counted_chain).
template <int kTokenTiles>
void run_passes(const MoeDecodeParams& p, cudaStream_t stream) {
  const int widest = std::max(p.expert_width, p.shared_width);
  launch_chained(moe_gemm_kernel<Pass::kRouter, kTokenTiles>, dim3(p.experts / kTileRows, kRouterSplits), kThreads, 0,
                 stream, p);
  launch_chained(moe_route_kernel, route_ctas(p.tokens), kRouteThreads,
                 route_shared_bytes(p.experts, p.tokens, p.top_k), stream, p);
  launch_chained(moe_gemm_kernel<Pass::kGateUp, kTokenTiles>, dim3(widest / kTileRows, p.max_groups), kThreads, 0,
                 stream, p);
  launch_chained(moe_gemm_kernel<Pass::kDown, kTokenTiles>, dim3(p.hidden_size / kTileRows, p.max_groups), kThreads,
                 0, stream, p);
  launch_chained(moe_combine_kernel<counted_chain(Pass::kDown, kTokenTiles)>,
                 dim3(p.tokens, (p.hidden_size + kCombineColumns - 1) / kCombineColumns), kCombineThreads, 0, stream,
                 p);
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
