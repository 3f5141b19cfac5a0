#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/rows.h"
#include "norm/rmsnorm.h"

namespace qwen3next {
namespace {

template <NormKind kKind>
void rmsnorm_impl(at::Tensor& out, at::Tensor* residual_out, const at::Tensor& x, const at::Tensor* other,
                  const at::Tensor& weight, double eps, const char* other_name) {
  QN_CHECK_CUDA(x);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, residual_out, other, &weight}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->device() == x.device(), "all tensors must be on ", x.device(), ", got one on ", t->device());
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "all tensors must have x's dtype ", x.scalar_type(),
                ", got ", t->scalar_type());
  }
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "weight must have shape [", x.size(-1),
              "] (x's last dimension), got ", weight.sizes());
  QN_CHECK_CONTIGUOUS(weight);
  TORCH_CHECK(eps > 0, "eps must be positive, got ", eps);

  const at::Tensor& other_t = other ? *other : x;
  const at::Tensor& residual_out_t = residual_out ? *residual_out : out;
  const RowLayout rows = row_layout({{&out, "out"}, {&residual_out_t, "residual_out"}, {&x, "x"},
                                     {&other_t, other_name}});
  RMSNormParams p{};
  p.out = out.data_ptr();
  p.residual_out = residual_out ? residual_out->data_ptr() : nullptr;
  p.x = x.data_ptr();
  p.other = other ? other->data_ptr() : nullptr;
  p.weight = weight.data_ptr();
  p.tokens = rows.tokens;
  p.heads = static_cast<int>(rows.heads);
  p.dim = static_cast<int>(x.size(-1));
  p.out_stride = rows.token_strides[0];
  p.residual_out_stride = rows.token_strides[1];
  p.x_stride = rows.token_strides[2];
  p.other_stride = rows.token_strides[3];
  p.eps = static_cast<float>(eps);
  if (x.numel() == 0) return;

  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool launched =
      QN_DISPATCH_FLOAT_TYPES(x.scalar_type(), "rmsnorm", [&] { return run_rmsnorm<scalar_t, kKind>(p, stream); });
  TORCH_CHECK(launched, "rmsnorm: rows of ", p.dim, " elements are too long (at most ", 2048 * 16 / x.element_size(),
              " elements in 16-byte aligned rows, 2048 otherwise)");
}

}  // namespace

void rmsnorm(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  rmsnorm_impl<NormKind::kPlain>(out, nullptr, x, nullptr, weight, eps, "x");
}

void rmsnorm_add(at::Tensor& residual_out, at::Tensor& out, const at::Tensor& x, const at::Tensor& residual,
                 const at::Tensor& weight, double eps) {
  rmsnorm_impl<NormKind::kAddResidual>(out, &residual_out, x, &residual, weight, eps, "residual");
}

void rmsnorm_gated(at::Tensor& out, const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight,
                   double eps) {
  rmsnorm_impl<NormKind::kGated>(out, nullptr, x, &z, weight, eps, "z");
}

}  // namespace qwen3next
