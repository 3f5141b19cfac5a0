#include <c10/util/Exception.h>

#include <array>
#include <atomic>

#include "attention/attention_decode_kernel.cuh"
#include "common/launch.h"

namespace qwen3next {

using namespace attention_decode;

namespace {

template <int kStages>
void launch_split(const AttentionDecodeParams& p, int device, int row_tiles, cudaStream_t stream) {
  const int bytes = SplitSmem<kStages>::bytes(row_tiles);
  // Raise the kernel's shared-memory limit once per device, as far as the largest call so far needs.
  static std::array<std::atomic<int>, 64> allowed{};
  if (allowed.at(device).load(std::memory_order_relaxed) < bytes) {
    const cudaError_t set = cudaFuncSetAttribute(attention_decode_split_kernel<kStages>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (set != cudaSuccess) cudaGetLastError();  // reported here, not by the next launch check
    TORCH_CHECK(set == cudaSuccess, "attention_decode: ", row_tiles * 16, " query rows per KV head need ",
                bytes / 1024, " KiB of shared memory per block, which this GPU does not allow (",
                cudaGetErrorString(set), ")");
    allowed.at(device).store(bytes, std::memory_order_relaxed);
  }
  attention_decode_split_kernel<kStages><<<dim3(p.splits, p.kv_heads, p.batch), kThreads, bytes, stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace

void run_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  const int rows = p.query_heads / p.kv_heads * p.tokens;
  const int row_tiles = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (SplitSmem<3>::bytes(row_tiles) <= optin) {
    launch_split<3>(p, device, row_tiles, stream);
  } else {
    launch_split<2>(p, device, row_tiles, stream);
  }
  attention_decode_reduce_kernel<<<dim3(p.batch * p.tokens, p.query_heads), kDim, 0, stream>>>(p);
  QN_CHECK_LAUNCH();
}

}  // namespace qwen3next
