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

// 32-bit words <-> elements: vectors are moved as uint4/uint2/unsigned built from words, which compile to one
// vector instruction (a Vec copied as a struct may be split into one access per element).
__device__ __forceinline__ unsigned to_word(float a) { return __float_as_uint(a); }
__device__ __forceinline__ unsigned to_word(__half a, __half b) {
  return unsigned(__half_as_ushort(a)) | unsigned(__half_as_ushort(b)) << 16;
}
__device__ __forceinline__ unsigned to_word(__nv_bfloat16 a, __nv_bfloat16 b) {
  return unsigned(__bfloat16_as_ushort(a)) | unsigned(__bfloat16_as_ushort(b)) << 16;
}
template <typename T>
__device__ __forceinline__ T element_of(unsigned word, int half);
template <>
__device__ __forceinline__ float element_of<float>(unsigned word, int) { return __uint_as_float(word); }
template <>
__device__ __forceinline__ __half element_of<__half>(unsigned word, int half) {
  return __ushort_as_half(static_cast<unsigned short>(word >> (16 * half)));
}
template <>
__device__ __forceinline__ __nv_bfloat16 element_of<__nv_bfloat16>(unsigned word, int half) {
  return __ushort_as_bfloat16(static_cast<unsigned short>(word >> (16 * half)));
}

template <int kWords>
__device__ __forceinline__ void load_words(unsigned (&w)[kWords], const void* src) {
  if constexpr (kWords == 4) {
    const uint4 v = *static_cast<const uint4*>(src);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (kWords == 2) {
    const uint2 v = *static_cast<const uint2*>(src);
    w[0] = v.x, w[1] = v.y;
  } else {
    static_assert(kWords == 1, "vectors of 4, 8 or 16 bytes");
    w[0] = *static_cast<const unsigned*>(src);
  }
}
// Global memory only. Inline PTX: inside loops nvcc has been seen to split a plain uint4 store into four.
template <int kWords>
__device__ __forceinline__ void store_words(void* dst, const unsigned (&w)[kWords]) {
  if constexpr (kWords == 4) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else if constexpr (kWords == 2) {
    asm volatile("st.global.v2.b32 [%0], {%1, %2};\n" ::"l"(dst), "r"(w[0]), "r"(w[1]) : "memory");
  } else {
    static_assert(kWords == 1, "vectors of 4, 8 or 16 bytes");
    asm volatile("st.global.b32 [%0], %1;\n" ::"l"(dst), "r"(w[0]) : "memory");
  }
}

// N elements of T (16-byte aligned vectors; more than 16 bytes go as several).
template <typename T, int N>
__device__ __forceinline__ void load_float(float (&dst)[N], const T* src) {
  constexpr int kPer16 = 16 / sizeof(T);
  if constexpr (N > kPer16) {
#pragma unroll
    for (int c = 0; c < N / kPer16; ++c) load_float(reinterpret_cast<float(&)[kPer16]>(dst[c * kPer16]), src + c * kPer16);
  } else if constexpr (N * sizeof(T) < 4) {
    dst[0] = to_float(src[0]);
  } else {
    constexpr int kWords = N * sizeof(T) / 4, kPerWord = 4 / sizeof(T);
    unsigned w[kWords];
    load_words(w, src);
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] = to_float(element_of<T>(w[i / kPerWord], i % kPerWord));
  }
}

// Into global memory.
template <typename T, int N>
__device__ __forceinline__ void store_float(T* dst, const float (&src)[N]) {
  constexpr int kPer16 = 16 / sizeof(T);
  if constexpr (N > kPer16) {
#pragma unroll
    for (int c = 0; c < N / kPer16; ++c) {
      store_float(dst + c * kPer16, reinterpret_cast<const float(&)[kPer16]>(src[c * kPer16]));
    }
  } else if constexpr (N * sizeof(T) < 4) {
    dst[0] = from_float<T>(src[0]);
  } else {
    constexpr int kWords = N * sizeof(T) / 4;
    unsigned w[kWords];
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      if constexpr (sizeof(T) == 4) {
        w[i] = to_word(from_float<T>(src[i]));
      } else {
        w[i] = to_word(from_float<T>(src[2 * i]), from_float<T>(src[2 * i + 1]));
      }
    }
    store_words(dst, w);
  }
}

// Sum over groups of kLanes consecutive lanes of a warp (kLanes a power of two <= 32).
template <int kLanes>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

}  // namespace qwen3next
