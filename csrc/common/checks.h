// Argument checks shared by the *_api.cpp files: each names the argument and what is wrong.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#define QN_CHECK_CUDA(t) TORCH_CHECK((t).is_cuda(), #t " must be a CUDA tensor, got ", (t).device())
#define QN_CHECK_LAST_DIM_CONTIGUOUS(t) \
  TORCH_CHECK((t).size(-1) == 1 || (t).stride(-1) == 1, #t " must be contiguous in its last dimension")
#define QN_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define QN_CHECK_DTYPE(t, dtype) \
  TORCH_CHECK((t).scalar_type() == (dtype), #t " must have dtype ", (dtype), ", got ", (t).scalar_type())
#define QN_CHECK_SAME_DEVICE(a, b) \
  TORCH_CHECK((a).device() == (b).device(), #a " and " #b " must be on the same device, got ", (a).device(), \
              " and ", (b).device())
#define QN_CHECK_SHAPE(t, ...)                                                                       \
  TORCH_CHECK((t).sizes() == c10::IntArrayRef({__VA_ARGS__}), #t " must have shape ",           \
              c10::IntArrayRef({__VA_ARGS__}), ", got ", (t).sizes())

namespace qwen3next {

// The data starts on a 16-byte boundary (kernels move 16-byte vectors).
inline bool vector_aligned(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }
// Every row of a 2-D tensor starts on a 16-byte boundary: aligned data, row stride a multiple of `elements`.
inline bool rows_vector_aligned(const at::Tensor& t, int64_t elements) {
  return vector_aligned(t) && (t.size(0) <= 1 || t.stride(0) % elements == 0);
}

}  // namespace qwen3next
