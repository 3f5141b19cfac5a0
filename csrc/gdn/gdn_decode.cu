#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "common/launch.h"
#include "gdn/gdn_decode_kernel.cuh"

namespace qwen3next {
namespace {

// How many clusters of this kernel fit on the device at once (asked once per device).
template <typename Traits>
int resident_clusters(const cudaLaunchConfig_t& config) {
  static std::array<std::atomic<int>, 64> per_device{};  // 0: not asked yet
  int device = 0;
  cudaGetDevice(&device);
  std::atomic<int>& cached = per_device.at(device);
  if (cached.load(std::memory_order_relaxed) == 0) {
    allow_shared_memory<gdn_decode_kernel<Traits>>(Traits::kStateBytes, "gdn_decode");
    int clusters = 0;
    cudaOccupancyMaxActiveClusters(&clusters, gdn_decode_kernel<Traits>, &config);
    cached.store(std::max(clusters, 1), std::memory_order_relaxed);
  }
  return cached.load(std::memory_order_relaxed);
}

template <typename T, typename StateT, int kRatio, int kTokens>
void launch(const GdnDecodeParams& p, cudaStream_t stream) {
  using Traits = GdnDecodeTraits<T, StateT, kRatio, kTokens>;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(p.key_heads * kRatio);
  config.blockDim = dim3(Traits::kThreads);
  config.dynamicSmemBytes = Traits::kStateBytes;
  config.stream = stream;
  // Clusters, launched chained (the kernel's prologue overlaps the kernel before it: see gdn_decode.h).
  cudaLaunchAttribute attributes[2]{};
  attributes[0].id = cudaLaunchAttributeClusterDimension;
  attributes[0].val.clusterDim.x = kRatio;
  attributes[0].val.clusterDim.y = attributes[0].val.clusterDim.z = 1;
  attributes[1] = chained_attribute();
  config.attrs = attributes;
  config.numAttrs = 1;  // the occupancy query takes the cluster shape alone (as CUTLASS's does)
  // Lanes of sequences: as many as fit at once, then evened out so every lane walks as many sequences.
  const int max_lanes = std::max(resident_clusters<Traits>(config) / p.key_heads, 1);
  const int rounds = (p.batch + max_lanes - 1) / max_lanes;
  config.gridDim.y = (p.batch + rounds - 1) / rounds;
  config.numAttrs = 2;
  cudaLaunchKernelEx(&config, gdn_decode_kernel<Traits>, p);
  QN_CHECK_LAUNCH();
}

// One token per sequence (decode) keeps a register per input; 2..8 (verification) take the general case.
template <typename T, typename StateT, int kRatio>
void launch_for_tokens(const GdnDecodeParams& p, cudaStream_t stream) {
  if (p.tokens == 1) {
    launch<T, StateT, kRatio, 1>(p, stream);
  } else {
    launch<T, StateT, kRatio, 8>(p, stream);
  }
}

template <typename T, typename StateT>
void launch_for_heads(const GdnDecodeParams& p, cudaStream_t stream) {
  if (p.value_heads == p.key_heads) {
    launch_for_tokens<T, StateT, 1>(p, stream);
  } else {
    launch_for_tokens<T, StateT, 2>(p, stream);
  }
}

}  // namespace

template <typename T>
void run_gdn_decode(const GdnDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  if (p.bf16_state) {
    launch_for_heads<T, __nv_bfloat16>(p, stream);
  } else {
    launch_for_heads<T, float>(p, stream);
  }
}

template void run_gdn_decode<__half>(const GdnDecodeParams&, cudaStream_t);
template void run_gdn_decode<__nv_bfloat16>(const GdnDecodeParams&, cudaStream_t);

}  // namespace qwen3next
