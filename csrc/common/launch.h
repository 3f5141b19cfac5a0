#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

// After every kernel launch: report launch errors at the launch site (no device sync).
#define QN_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

namespace qwen3next {

// A launch configuration for cudaLaunchKernelEx with clusters of `cluster_x` CTAs along x (sm90+); the
// cluster attribute lives beside the configuration that points to it.
struct ClusterLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute cluster{};

  ClusterLaunch(dim3 grid, int threads, size_t shared_bytes, cudaStream_t stream, unsigned cluster_x) {
    config.gridDim = grid;
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = cluster_x;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
};

}  // namespace qwen3next
