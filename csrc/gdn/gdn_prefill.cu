#include <algorithm>

#include "common/launch.h"
#include "gdn/gdn_prefill_kernel.cuh"

namespace qwen3next {

using namespace gdn_prefill;

void run_gdn_prefill(const GdnPrefillParams& p, cudaStream_t stream) {
  if (p.seqs == 0 || p.tokens == 0) return;
  allow_shared_memory<gdn_prefill_prepare_kernel>(sizeof(PrepareSmem), "gdn_prefill (prepare)");
  allow_shared_memory<gdn_prefill_state_kernel>(sizeof(StateSmem), "gdn_prefill (state)");
  allow_shared_memory<gdn_prefill_output_kernel>(sizeof(OutputSmem), "gdn_prefill (output)");

  const dim3 chunk_grid(std::max(p.max_chunks, 1), p.key_heads, p.seqs);
  gdn_prefill_prepare_kernel<<<chunk_grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
  const dim3 state_grid(kDim / kCols, p.value_heads, p.seqs);
  gdn_prefill_state_kernel<<<state_grid, kThreads, sizeof(StateSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
  const dim3 output_grid(chunk_grid.x, p.value_heads, p.seqs);
  gdn_prefill_output_kernel<<<output_grid, kThreads, sizeof(OutputSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
