#include <algorithm>

#include "common/device.h"
#include "common/launch.h"
#include "gdn/gdn_prefill_kernel.cuh"

namespace qwen3next {

using namespace gdn_prefill;

namespace {

template <int kStages>
void launch_state(const GdnPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<gdn_prefill_state_kernel<kStages>>(sizeof(StateSmem<kStages>), "gdn_prefill (state)");
  gdn_prefill_state_kernel<kStages>
      <<<dim3(kDim / kCols, p.value_heads, p.seqs), kThreads, sizeof(StateSmem<kStages>), stream>>>(p);
}

}  // namespace

void run_gdn_prefill(const GdnPrefillParams& p, cudaStream_t stream) {
  if (p.seqs == 0 || p.tokens == 0) return;
  allow_shared_memory<gdn_prefill_prepare_kernel>(sizeof(PrepareSmem), "gdn_prefill (prepare)");
  allow_shared_memory<gdn_prefill_output_kernel>(sizeof(OutputSmem), "gdn_prefill (output)");

  const dim3 chunk_grid(std::max(p.max_chunks, 1), p.key_heads, p.seqs);
  gdn_prefill_prepare_kernel<<<chunk_grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
  // Two stages when there are CTAs enough for two per SM, or where three do not fit (sm86 / sm89: 99 KiB).
  if (kDim / kCols * p.value_heads * p.seqs >= 2 * current_device_attribute<cudaDevAttrMultiProcessorCount>() ||
      current_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>() < int(sizeof(StateSmem<3>))) {
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
