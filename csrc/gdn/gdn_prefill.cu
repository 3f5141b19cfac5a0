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

template <int kStages>
void launch_state(const GdnPrefillParams& p, cudaStream_t stream) {
  static std::array<std::atomic<bool>, 64> ready{};
  allow_shared_memory(gdn_prefill_state_kernel<kStages>, sizeof(StateSmem<kStages>), ready, "state");
  gdn_prefill_state_kernel<kStages>
      <<<dim3(kDim / kCols, p.value_heads, p.seqs), kThreads, sizeof(StateSmem<kStages>), stream>>>(p);
}

}  // namespace

void run_gdn_prefill(const GdnPrefillParams& p, cudaStream_t stream) {
  if (p.seqs == 0 || p.tokens == 0) return;
  static std::array<std::atomic<bool>, 64> prepare_ready{}, output_ready{};
  allow_shared_memory(gdn_prefill_prepare_kernel, sizeof(PrepareSmem), prepare_ready, "prepare");
  allow_shared_memory(gdn_prefill_output_kernel, sizeof(OutputSmem), output_ready, "output");

  const dim3 chunk_grid(std::max(p.max_chunks, 1), p.key_heads, p.seqs);
  gdn_prefill_prepare_kernel<<<chunk_grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
  int device = 0, multiprocessors = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (kDim / kCols * p.value_heads * p.seqs >= 2 * multiprocessors) {  // CTAs enough for two per SM
    launch_state<2>(p, stream);
  } else {
    launch_state<3>(p, stream);
  }
  QN_CHECK_LAUNCH();
  const dim3 output_grid(chunk_grid.x, p.value_heads, p.seqs);
  gdn_prefill_output_kernel<<<output_grid, kThreads, sizeof(OutputSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
