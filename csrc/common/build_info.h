#pragma once

#include <string>

namespace qwen3next {

// The CUDA architectures, CUDA and CUTLASS versions this library was built with, as JSON.
std::string build_info();

}  // namespace qwen3next
