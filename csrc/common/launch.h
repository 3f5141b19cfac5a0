#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <utility>

#include "common/device.h"

// After every kernel launch: report launch errors at the launch site (no device sync).
#define QN_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

namespace qwen3next {

// Raises kKernel's dynamic shared-memory limit on the current device to `bytes` (past the 48 KiB default), once per
// device and size: the largest request so far is remembered. `op` names the kernel in the error.
template <auto kKernel>
void allow_shared_memory(int bytes, const char* op) {
  static std::array<std::atomic<int>, 64> allowed{};
  int device = 0;
  cudaGetDevice(&device);
  std::atomic<int>& allowed_bytes = allowed.at(device);
  if (allowed_bytes.load(std::memory_order_relaxed) >= bytes) return;
  const cudaError_t set = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (set != cudaSuccess) cudaGetLastError();  // reported here, not by the next launch check
  TORCH_CHECK(set == cudaSuccess, op, ": the kernel needs ", bytes / 1024, " KiB of shared memory per block, which "
              "this GPU does not allow (", cudaGetErrorString(set), ")");
  allowed_bytes.store(bytes, std::memory_order_relaxed);
}

// The launch attribute that chains a kernel to the one before it in the stream (programmatic dependent launch, sm90+
// only), for launches that set other attributes too; launch_chained sets it alone.
inline cudaLaunchAttribute chained_attribute() {
  cudaLaunchAttribute chained{};
  chained.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  chained.val.programmaticStreamSerializationAllowed = 1;
  return chained;
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...) launched chained to the kernel before it in the stream
// (programmatic dependent launch, sm90+): it may start while that one runs, and must follow common/chain.cuh's rules.
// Before sm90 a plain launch.
template <typename... Params, typename... Args>
void launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                    Args&&... args) {
  cudaLaunchAttribute chained = chained_attribute();
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &chained;
  config.numAttrs = current_device_attribute<cudaDevAttrComputeCapabilityMajor>() >= 9 ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace qwen3next
