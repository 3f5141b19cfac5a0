#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/launch.h"
#include "gdn/gdn_decode_kernel.cuh"

namespace qwen3next {
namespace {

template <typename T, int kRatio, int kTokens>
void launch(const GdnDecodeParams& p, cudaStream_t stream) {
  using Traits = GdnDecodeTraits<T, kRatio, kTokens>;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(p.batch * p.key_heads * Traits::kClusterSize);
  config.blockDim = dim3(Traits::kThreads);
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = Traits::kClusterSize;
  cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  cudaLaunchKernelEx(&config, gdn_decode_kernel<Traits>, p);
  QN_CHECK_LAUNCH();
}

// One token per sequence (decode) keeps a register per input; 2..8 (verification) take the general case.
template <typename T, int kRatio>
void launch_for_tokens(const GdnDecodeParams& p, cudaStream_t stream) {
  if (p.tokens == 1) {
    launch<T, kRatio, 1>(p, stream);
  } else {
    launch<T, kRatio, 8>(p, stream);
  }
}

}  // namespace

template <typename T>
void run_gdn_decode(const GdnDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  if (p.value_heads == p.key_heads) {
    launch_for_tokens<T, 1>(p, stream);
  } else {
    launch_for_tokens<T, 2>(p, stream);
  }
}

template void run_gdn_decode<__half>(const GdnDecodeParams&, cudaStream_t);
template void run_gdn_decode<__nv_bfloat16>(const GdnDecodeParams&, cudaStream_t);

}  // namespace qwen3next
