// Views a [..., D] tensor as rows of D contiguous elements addressed as (token, head):
// row (t, h) starts at data + t * token_stride + h * D. The innermost leading dims that are
// contiguous in every tensor form the heads; the remaining outer dims must collapse into one
// token stride. This reads slices of wider projection outputs in place without copies.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace qwen3next {

struct RowLayout {
  int64_t tokens = 1;
  int64_t heads = 1;
  std::vector<int64_t> token_strides;  // one per tensor, in elements
};

// `tensors` must share one shape; names are used in error messages.
inline RowLayout row_layout(std::initializer_list<std::pair<const at::Tensor*, const char*>> tensors) {
  const at::Tensor& first = *tensors.begin()->first;
  TORCH_CHECK(first.dim() >= 1, tensors.begin()->second, " must have at least one dimension");
  const int64_t dim = first.size(-1);
  for (const auto& [t, name] : tensors) {
    TORCH_CHECK(t->sizes() == first.sizes(), name, " must have shape ", first.sizes(), ", got ", t->sizes());
    TORCH_CHECK(t->size(-1) <= 1 || t->stride(-1) == 1, name, " must be contiguous in its last dimension");
  }
  RowLayout layout;
  int d = first.dim() - 2;  // innermost leading dim
  for (; d >= 0; --d) {
    bool contiguous = true;
    for (const auto& [t, name] : tensors) contiguous &= t->size(d) == 1 || t->stride(d) == dim * layout.heads;
    if (!contiguous) break;
    layout.heads *= first.size(d);
  }
  for (const auto& [t, name] : tensors) {
    int64_t stride = 0, expected = -1;
    for (int i = d; i >= 0; --i) {
      if (t->size(i) == 1) continue;
      TORCH_CHECK(expected < 0 || t->stride(i) == expected, name, " with shape ", t->sizes(), " and strides ",
                  t->strides(), " cannot be viewed as rows of ", dim, " elements; make it contiguous");
      if (expected < 0) stride = t->stride(i);
      expected = t->stride(i) * t->size(i);
    }
    layout.token_strides.push_back(stride);
  }
  for (int i = d; i >= 0; --i) layout.tokens *= first.size(i);
  return layout;
}

}  // namespace qwen3next
