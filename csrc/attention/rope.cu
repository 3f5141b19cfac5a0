#include "attention/rope.h"
#include "common/chain.cuh"
#include "common/launch.h"

namespace qwen3next {
namespace {

constexpr int kThreads = 256;

// A thread per table entry. cosf / sinf (not the fast intrinsics) and the reference's fp32 product of the
// position and the frequency, so that the tables are the reference's.
template <typename Position>
__global__ void __launch_bounds__(kThreads) rope_cos_sin_kernel(const RopeParams p) {
  const int64_t entry = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int half = p.rotary_dim / 2;
  const float inv_freq = entry < int64_t(p.tokens) * p.rotary_dim ? p.inv_freq[entry % p.rotary_dim % half] : 0.f;
  await_previous_kernel();  // the positions
  if (entry >= int64_t(p.tokens) * p.rotary_dim) return;
  const float angle = static_cast<float>(static_cast<const Position*>(p.positions)[entry / p.rotary_dim]) * inv_freq;
  p.cos[entry] = cosf(angle) * p.scale;
  p.sin[entry] = sinf(angle) * p.scale;
}

}  // namespace

template <typename Position>
void run_rope_cos_sin(const RopeParams& p, cudaStream_t stream) {
  const int64_t entries = int64_t(p.tokens) * p.rotary_dim;
  if (entries == 0) return;
  launch_chained(rope_cos_sin_kernel<Position>, dim3((entries + kThreads - 1) / kThreads), kThreads, 0, stream, p);
}

template void run_rope_cos_sin<int32_t>(const RopeParams&, cudaStream_t);
template void run_rope_cos_sin<int64_t>(const RopeParams&, cudaStream_t);

}  // namespace qwen3next
