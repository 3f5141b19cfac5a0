#include <algorithm>

#include "common/device.h"
#include "common/launch.h"
#include "gdn/gdn_prefill_kernel.cuh"

namespace qwen3next {

using namespace gdn_prefill;

namespace {

static_assert(sizeof(StateSmem<2>) == 149504, "ops.py's GDN_PREFILL_SHARED_BYTES: the least shared memory it needs");

template <int kStages>
void launch_state(const GdnPrefillParams& p, cudaStream_t stream) {
  allow_shared_memory<gdn_prefill_state_kernel<kStages>>(sizeof(StateSmem<kStages>), "gdn_prefill (state)");
  gdn_prefill_state_kernel<kStages>
      <<<dim3(kDim / kCols, p.value_heads, p.seqs), kThreads, sizeof(StateSmem<kStages>), stream>>>(p);
}

// `state`: the wgmma kernel on sm90 (a build with 90a) unless portable; else mma.sync, with three stages where
// shared memory allows.
void launch_state_kernel(const GdnPrefillParams& p, [[maybe_unused]] bool portable, cudaStream_t stream) {
#ifdef QWEN3NEXT_SM90A
  if (!portable && current_device_is_sm90()) {
    run_gdn_prefill_state_sm90(p, stream);
    return;
  }
#endif
  if (current_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>() >= int(sizeof(StateSmem<3>))) {
    launch_state<3>(p, stream);
  } else {
    launch_state<2>(p, stream);
  }
}

}  // namespace

void run_gdn_prefill(const GdnPrefillParams& p, bool portable, cudaStream_t stream) {
  if (p.seqs == 0 || p.tokens == 0) return;
  allow_shared_memory<gdn_prefill_prepare_kernel>(sizeof(PrepareSmem), "gdn_prefill (prepare)");
  const dim3 chunk_grid(std::max(p.max_chunks, 1), p.key_heads, p.seqs);
  gdn_prefill_prepare_kernel<<<chunk_grid, kThreads, sizeof(PrepareSmem), stream>>>(p);
  QN_CHECK_LAUNCH();
  launch_state_kernel(p, portable, stream);
  QN_CHECK_LAUNCH();
  RMSNormParams norm{};  // in place: each thread loads its row's values before storing any
  norm.out = p.out;
  norm.x = p.out;
  norm.other = p.z;
  norm.weight = p.norm_weight;
  norm.dim = kDim;
  norm.out_stride = norm.x_stride = p.out_row_stride;
  norm.other_stride = p.z_row_stride;
  norm.eps = p.eps;
  const int64_t row_blocks = (int64_t(std::max(p.max_chunks, 1)) * kChunk * p.value_heads + NormTraits::kRowsPerBlock -
                              1) / NormTraits::kRowsPerBlock;
  launch_chained(gdn_prefill_norm_kernel, dim3(row_blocks, p.seqs), NormTraits::kThreads, 0, stream, norm, p);
}

}  // namespace qwen3next
