#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/launch.h"
#include "norm/rmsnorm_kernel.cuh"

namespace qwen3next {
namespace {

template <typename T, NormKind kKind, int kVec, int kLanes, int kIters>
void launch(const RMSNormParams& p, cudaStream_t stream) {
  using Traits = RMSNormTraits<T, kKind, kVec, kLanes, kIters>;
  const int64_t rows = p.tokens * p.heads;
  const int64_t blocks = (rows + Traits::kRowsPerBlock - 1) / Traits::kRowsPerBlock;
  launch_chained(rmsnorm_kernel<Traits>, blocks, Traits::kThreads, 0, stream, p);
}

// Row length in vectors -> (threads per row, vectors per thread). Rows of up to 32 vectors (a
// 128- or 256-wide head) take part of a warp or one warp, so a warp still moves several rows at
// once. Longer rows (the 2048-wide hidden state) take a whole block: one vector per thread is the
// shortest dependent chain for a lone decode row and, measured on an H100, also the fastest for
// long sequences (96% of copy bandwidth at 32768 tokens, against 84% for one warp per row and 54%
// for two rows of four warps per block).
template <typename T, NormKind kKind, int kVec>
bool launch_for_row_length(const RMSNormParams& p, cudaStream_t stream) {
  const int vecs = p.dim / kVec;
  if (vecs <= 8) launch<T, kKind, kVec, 8, 1>(p, stream);
  else if (vecs <= 16) launch<T, kKind, kVec, 16, 1>(p, stream);
  else if (vecs <= 32) launch<T, kKind, kVec, 32, 1>(p, stream);
  else if (vecs <= 64) launch<T, kKind, kVec, 64, 1>(p, stream);
  else if (vecs <= 128) launch<T, kKind, kVec, 128, 1>(p, stream);
  else if (vecs <= 256) launch<T, kKind, kVec, 256, 1>(p, stream);
  else if (vecs <= 512) launch<T, kKind, kVec, 256, 2>(p, stream);
  else if (vecs <= 1024) launch<T, kKind, kVec, 256, 4>(p, stream);
  else if (vecs <= 2048) launch<T, kKind, kVec, 256, 8>(p, stream);
  else return false;
  return true;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

template <typename T, NormKind kKind>
bool run_rmsnorm(const RMSNormParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return true;
  constexpr int kVec = 16 / sizeof(T);
  const bool strides_aligned = p.dim % kVec == 0 && p.x_stride % kVec == 0 && p.other_stride % kVec == 0 &&
                               p.out_stride % kVec == 0 && p.residual_out_stride % kVec == 0;
  const bool pointers_aligned = aligned16(p.x) && aligned16(p.out) && aligned16(p.weight) &&
                                (p.other == nullptr || aligned16(p.other)) &&
                                (p.residual_out == nullptr || aligned16(p.residual_out));
  return strides_aligned && pointers_aligned ? launch_for_row_length<T, kKind, kVec>(p, stream)
                                              : launch_for_row_length<T, kKind, 1>(p, stream);
}

#define INSTANTIATE(T)                                                                        \
  template bool run_rmsnorm<T, NormKind::kPlain>(const RMSNormParams&, cudaStream_t);       \
  template bool run_rmsnorm<T, NormKind::kAddResidual>(const RMSNormParams&, cudaStream_t); \
  template bool run_rmsnorm<T, NormKind::kGated>(const RMSNormParams&, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)

}  // namespace qwen3next
