// Runtime value -> template argument switches.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <ATen/core/Tensor.h>

// Runs __VA_ARGS__ with `scalar_t` bound to the CUDA type of `dtype` (float, half, bfloat16).
#define QN_DISPATCH_FLOAT_TYPES(dtype, name, ...)                                               \
  [&] {                                                                                         \
    switch (dtype) {                                                                            \
      case at::ScalarType::Float: { using scalar_t = float; return __VA_ARGS__(); }             \
      case at::ScalarType::Half: { using scalar_t = __half; return __VA_ARGS__(); }             \
      case at::ScalarType::BFloat16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }  \
      default: TORCH_CHECK(false, name ": unsupported dtype ", dtype, " (float32, float16 or bfloat16)"); \
    }                                                                                           \
  }()

// Runs __VA_ARGS__ with `constexpr bool CONST_NAME = cond`.
#define QN_BOOL_SWITCH(cond, CONST_NAME, ...)  \
  [&] {                                        \
    if (cond) {                                \
      constexpr bool CONST_NAME = true;        \
      return __VA_ARGS__();                    \
    } else {                                   \
      constexpr bool CONST_NAME = false;       \
      return __VA_ARGS__();                    \
    }                                          \
  }()
