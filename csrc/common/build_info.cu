// Build facts for `qwen3next_cuda.build_info()`. Including CuTe here proves the CUTLASS wiring in
// every build: the MoE and attention kernels depend on it.
#include <cuda.h>

#include <cute/tensor.hpp>
#include <cutlass/version.h>

#include <string>

#include "common/build_info.h"

namespace qwen3next {

// A CuTe layout evaluated at compile time: the (2,4):(4,1) row-major tile maps (1,2) to offset 6.
static_assert(cute::Layout<cute::Shape<cute::_2, cute::_4>, cute::Stride<cute::_4, cute::_1>>{}(1, 2) == 6);

std::string build_info() {
  return std::string("{\"cuda_archs\": \"") + QWEN3NEXT_CUDA_ARCHS + "\", \"cuda\": \"" +
         std::to_string(CUDA_VERSION / 1000) + "." + std::to_string(CUDA_VERSION % 1000 / 10) +
         "\", \"cutlass\": \"" + std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." +
         std::to_string(CUTLASS_PATCH) + "\"}";
}

}  // namespace qwen3next
