// Vectorised register tiles: N elements of T moved as one aligned load/store, converted to float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace qwen3next {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to T and back: where the unfused model stores an intermediate in T.
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

// N contiguous elements of T, aligned so that one instruction moves them (up to 16 bytes).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ void load_float(float (&dst)[N], const T* src) {
  const Vec<T, N> raw = *reinterpret_cast<const Vec<T, N>*>(src);
#pragma unroll
  for (int i = 0; i < N; ++i) dst[i] = to_float(raw.v[i]);
}

template <typename T, int N>
__device__ __forceinline__ void store_float(T* dst, const float (&src)[N]) {
  Vec<T, N> raw;
#pragma unroll
  for (int i = 0; i < N; ++i) raw.v[i] = from_float<T>(src[i]);
  *reinterpret_cast<Vec<T, N>*>(dst) = raw;
}

// Sum over groups of kLanes consecutive lanes of a warp (kLanes a power of two <= 32).
template <int kLanes>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

}  // namespace qwen3next
