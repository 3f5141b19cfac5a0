#include "common/launch.h"
#include "linear/decode_linear_kernel.cuh"

namespace qwen3next {

using namespace decode_linear;

namespace {

template <int kTokens>
void launch(const DecodeLinearParams& p, cudaStream_t stream) {
  const int x_bytes = p.tokens * p.k * int(sizeof(float));
  allow_shared_memory<decode_linear_kernel<kTokens>>(x_bytes, "decode_linear");
  launch_chained(decode_linear_kernel<kTokens>, dim3((p.rows + kWarps - 1) / kWarps), kThreads, x_bytes, stream, p);
}

}  // namespace

void run_decode_linear(const DecodeLinearParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.rows == 0) return;
  static_assert(kDecodeLinearMaxTokens == 2, "the instances below serve 1 and 2 tokens");
  if (p.tokens == 1) {
    launch<1>(p, stream);
  } else {
    launch<2>(p, stream);
  }
}

}  // namespace qwen3next
