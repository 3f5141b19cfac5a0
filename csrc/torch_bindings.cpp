// Every op of qwen3next_cuda._C, registered once. Shape legend:
//   N  tokens (any leading dims)     H  hidden size      D  row length (hidden size or head dim)
//   Hv value heads                    dv value head dim
// Outputs are preallocated by the caller and marked (a!); nothing here allocates, so every op can
// be captured in a CUDA graph. Fake (meta) implementations live in python/qwen3next_cuda/ops.py.
#include <Python.h>
#include <torch/library.h>

#include "common/build_info.h"
#include "ops.h"

TORCH_LIBRARY(qwen3next, m) {
  // out[N, D] = x * rsqrt(mean(x^2) + eps) * (1 + weight[D])              (zero-centred RMSNorm)
  m.def("rmsnorm(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.impl("rmsnorm", c10::DeviceType::CUDA, &qwen3next::rmsnorm);

  // residual_out[N, H] = x + residual (rounded to the dtype); out[N, H] = rmsnorm(residual_out)
  m.def("rmsnorm_add(Tensor(a!) residual_out, Tensor(b!) out, Tensor x, Tensor residual, Tensor weight, "
        "float eps) -> ()");
  m.impl("rmsnorm_add", c10::DeviceType::CUDA, &qwen3next::rmsnorm_add);

  // per row of D = dv: out = x * rsqrt(mean(x^2) + eps) * weight[D] * silu(z); x, z [N, Hv, dv] or
  // [N, Hv * dv], rows may be strided slices of a wider projection output
  m.def("rmsnorm_gated(Tensor(a!) out, Tensor x, Tensor z, Tensor weight, float eps) -> ()");
  m.impl("rmsnorm_gated", c10::DeviceType::CUDA, &qwen3next::rmsnorm_gated);

  // the CUDA architectures, CUDA and CUTLASS versions this library was built with (JSON)
  m.def("build_info() -> str", &qwen3next::build_info);
}

// `import qwen3next_cuda._C` loads the library, which runs the registration above.
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "qwen3next_cuda CUDA ops (torch.ops.qwen3next)", -1};
PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
