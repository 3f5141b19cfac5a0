#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "common/launch.h"
#include "gdn/gdn_prefill_kernel.cuh"

namespace qwen3next {
namespace {

using namespace gdn_prefill;

// Raises the kernel's dynamic shared-memory limit on the current device, once.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, int bytes, std::array<std::atomic<bool>, 64>& done, const char* what) {
  int device = 0;
  cudaGetDevice(&device);
  if (done.at(device).load(std::memory_order_relaxed)) return;
  const cudaError_t set = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (set != cudaSuccess) cudaGetLastError();  // reported here, not by the next launch check
  TORCH_CHECK(set == cudaSuccess, "gdn_prefill: the ", what, " kernel needs ", bytes / 1024,
              " KiB of shared memory per block, which this GPU does not allow (", cudaGetErrorString(set), ")");
  done.at(device).store(true, std::memory_order_relaxed);
}

}  // namespace

void run_gdn_prefill(const GdnPrefillParams& p, cudaStream_t stream) {
  if (p.seqs == 0 || p.tokens == 0) return;
  static std::array<std::atomic<bool>, 64> prepare_ready{}, scan_ready{};
  allow_shared_memory(gdn_prefill_prepare_kernel, sizeof(PrepareSmem), prepare_ready, "prepare");
  allow_shared_memory(gdn_prefill_scan_kernel, sizeof(ScanSmem), scan_ready, "scan");

  const dim3 prepare_grid(std::max(p.max_chunks, 1), p.key_heads, p.seqs);
  gdn_prefill_prepare_kernel<<<prepare_grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
  QN_CHECK_LAUNCH();

  ClusterLaunch scan(dim3(kSplit, p.value_heads, p.seqs), kThreads, sizeof(ScanSmem), stream, kSplit);
  cudaLaunchKernelEx(&scan.config, gdn_prefill_scan_kernel, p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
