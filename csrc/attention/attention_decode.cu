#include "attention/attention_decode_kernel.cuh"
#include "common/device.h"
#include "common/launch.h"

namespace qwen3next {

using namespace attention_decode;

namespace {

template <int kStages>
void launch_split(const AttentionDecodeParams& p, int row_tiles, cudaStream_t stream) {
  const int bytes = SplitSmem<kStages>::bytes(row_tiles);
  allow_shared_memory<attention_decode_split_kernel<kStages>>(bytes, "attention_decode");
  launch_chained(attention_decode_split_kernel<kStages>, dim3(p.splits, p.kv_heads, p.batch), kThreads, bytes, stream,
                 p);
}

}  // namespace

void run_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  const int row_tiles = row_tiles_of(p.query_heads / p.kv_heads * p.tokens);
  if (SplitSmem<3>::bytes(row_tiles) <= current_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>()) {
    launch_split<3>(p, row_tiles, stream);
  } else {
    launch_split<2>(p, row_tiles, stream);
  }
  launch_chained(attention_decode_reduce_kernel, dim3(p.batch * p.tokens, p.query_heads), kDim, 0, stream, p);
}

int attention_decode_shared_bytes(int rows) { return SplitSmem<2>::bytes(row_tiles_of(rows)); }

}  // namespace qwen3next
