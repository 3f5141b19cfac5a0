// Host entry points registered in torch_bindings.cpp (defined in the <family>/*_api.cpp files).
#pragma once

#include <ATen/core/Tensor.h>

namespace qwen3next {

// norm/
void rmsnorm(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps);
void rmsnorm_add(at::Tensor& residual_out, at::Tensor& out, const at::Tensor& x, const at::Tensor& residual,
                 const at::Tensor& weight, double eps);
void rmsnorm_gated(at::Tensor& out, const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight,
                   double eps);

}  // namespace qwen3next
