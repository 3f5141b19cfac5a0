// Device facts the host code sizes launches by (SMs, shared memory, compute capability), asked of the driver once
// per device and attribute: launches on the decode path query nothing.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>

namespace qwen3next {

template <cudaDeviceAttr kAttribute>
int device_attribute(int device) {
  static std::array<std::atomic<int>, 64> known{};  // the value + 1; 0: not asked yet
  std::atomic<int>& slot = known.at(device);
  int value = slot.load(std::memory_order_relaxed) - 1;
  if (value < 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, kAttribute, device));
    slot.store(value + 1, std::memory_order_relaxed);
  }
  return value;
}

// The same on the current device.
template <cudaDeviceAttr kAttribute>
int current_device_attribute() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  return device_attribute<kAttribute>(device);
}

// Whether the current device is sm90 (H100, H200): the GPUs a build's 90a kernels (wgmma, TMA) run on.
inline bool current_device_is_sm90() {
  return current_device_attribute<cudaDevAttrComputeCapabilityMajor>() == 9 &&
         current_device_attribute<cudaDevAttrComputeCapabilityMinor>() == 0;
}

}  // namespace qwen3next
