// Warp-level tensor-core tiles (sm80+): mma.sync m16n8k16 with bf16 inputs and fp32 accumulators, fed
// from shared memory by ldmatrix. Tiles live in shared memory as row-major bf16 with a row stride `ld`
// (elements) whose byte size is an odd multiple of 16 (e.g. 136 for 128 columns), so the 8 rows an
// ldmatrix reads fall in different banks.
//
// Fragment layouts, with g = lane / 4 and t = lane % 4:
//   A 16x16 (m x k):  a[0] = (g, 2t..2t+1)  a[1] = (g+8, 2t..)  a[2] = (g, 2t+8..)  a[3] = (g+8, 2t+8..)
//   B 16x8  (k x n):  b[0] = (k 2t..2t+1, n g)  b[1] = (k 2t+8.., n g)
//   C 16x8  (m x n):  c[0] = (g, 2t)  c[1] = (g, 2t+1)  c[2] = (g+8, 2t)  c[3] = (g+8, 2t+1)
#pragma once

#include <cuda_bf16.h>

namespace qwen3next {

using FragA = unsigned[4];
using FragB2 = unsigned[4];  // two 16x8 B fragments side by side: n-tiles n0 and n0 + 8
using FragC = float[4];

__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_address(row)));
}

// A rows m0.., columns k0.. of a row-major [m][k] tile.
__device__ __forceinline__ void load_a(FragA& a, const __nv_bfloat16* tile, int ld, int m0, int k0, int lane) {
  ldmatrix_x4(a, tile + (m0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}
// A = X^T: A rows m0.., columns k0.. read from a row-major [k][m] tile X.
__device__ __forceinline__ void load_a_trans(FragA& a, const __nv_bfloat16* tile, int ld, int m0, int k0, int lane) {
  ldmatrix_x4_trans(a, tile + (k0 + (lane & 7) + (lane >> 4) * 8) * ld + m0 + ((lane >> 3) & 1) * 8);
}
// B = X^T: B rows (k) k0..k0+15, columns (n) n0..n0+15 read from a row-major [n][k] tile X.
__device__ __forceinline__ void load_b_nk(FragB2& b, const __nv_bfloat16* tile, int ld, int k0, int n0, int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
}
// B rows (k) k0..k0+15, columns (n) n0..n0+15 of a row-major [k][n] tile.
__device__ __forceinline__ void load_b_kn(FragB2& b, const __nv_bfloat16* tile, int ld, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}

// c += a * b for the n-tile `half` (0: n0.., 1: n0 + 8..) of a two-tile B fragment.
__device__ __forceinline__ void mma(FragC& c, const FragA& a, const FragB2& b, int half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[2 * half]), "r"(b[2 * half + 1]));
}

// acc (16 rows x kN columns: kN / 8 accumulator tiles) += A (rows m0.. of a row-major [m][k] tile) times B
// (columns n0.. of a row-major [k][n] tile), k over [0, k_end) in steps of 16 (at most kK; k_end a multiple of 16).
template <int kN, int kK>
__device__ __forceinline__ void mma_rows(float (&acc)[kN / 8][4], const __nv_bfloat16* a, int lda, int m0,
                                         const __nv_bfloat16* b, int ldb, int n0, int k_end, int lane) {
#pragma unroll
  for (int k0 = 0; k0 < kK; k0 += 16) {
    if (k0 < k_end) {
      FragA fa;
      load_a(fa, a, lda, m0, k0, lane);
#pragma unroll
      for (int np = 0; np < kN / 16; ++np) {
        FragB2 fb;
        load_b_kn(fb, b, ldb, k0, n0 + 16 * np, lane);
        mma(acc[2 * np], fa, fb, 0);
        mma(acc[2 * np + 1], fa, fb, 1);
      }
    }
  }
}

// tf32 products of fp32 tiles (m16n8k8, fp32 accumulators) where bf16 operands lose too much: row-major fp32
// tiles in shared memory with a row stride `ld` = 4 (mod 32) (e.g. 68), so a fragment's 32 reads of A hit 32 banks.
// Operands are rounded to nearest tf32 (10-bit mantissa) as they are loaded. Fragments, g = lane / 4, t = lane % 4:
//   A 16x8 (m x k):  a[0] = (g, t)  a[1] = (g+8, t)  a[2] = (g, t+4)  a[3] = (g+8, t+4)
//   B 8x8  (k x n):  b[0] = (k t, n g)  b[1] = (k t+4, n g)         C as above.
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// c += a * b, one 16x8 tile.
__device__ __forceinline__ void mma_tf32(FragC& c, const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// acc (16 rows x kN columns) += A (rows m0.., columns [k_begin, k_end) of a row-major fp32 [m][k] tile) times
// B (rows [k_begin, k_end), columns n0.. of a row-major fp32 [k][n] tile); k_begin and k_end multiples of 8.
template <int kN>
__device__ __forceinline__ void mma_rows_tf32(float (&acc)[kN / 8][4], const float* a, int lda, int m0,
                                              const float* b, int ldb, int n0, int k_begin, int k_end, int lane) {
  const int g = lane / 4, t = lane % 4;
  for (int k0 = k_begin; k0 < k_end; k0 += 8) {
    const float* ar = a + (m0 + g) * lda + k0 + t;
    const unsigned fa[4] = {to_tf32(ar[0]), to_tf32(ar[8 * lda]), to_tf32(ar[4]), to_tf32(ar[8 * lda + 4])};
    const float* br = b + (k0 + t) * ldb + n0 + g;
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt) {
      const unsigned fb[2] = {to_tf32(br[8 * nt]), to_tf32(br[4 * ldb + 8 * nt])};
      mma_tf32(acc[nt], fa, fb);
    }
  }
}

// Stores a 16 x kN accumulator (times `scale`) at rows m0.., columns n0.. of a row-major fp32 tile.
template <int kN>
__device__ __forceinline__ void store_rows(float* tile, int ld, int m0, int n0, const float (&acc)[kN / 8][4],
                                           float scale, int lane) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<float2*>(tile + (m0 + lane / 4 + 8 * half) * ld + n0 + 8 * nt + 2 * (lane % 4)) =
          make_float2(scale * acc[nt][2 * half], scale * acc[nt][2 * half + 1]);
    }
  }
}

// The 4 x 4 transpose of 32-bit words across a quad (lanes 4g..4g+3): lane t's w[j] becomes lane j's w[t]. For
// packed bf16 pairs of a 16 x 32 accumulator tile (w[nt]: row g's columns 8 nt + 2t, +1), lane t then holds columns
// 8t..8t+7 of the row: 16 contiguous bytes to store, where each n-tile's pair was 4 bytes.
__device__ __forceinline__ void quad_transpose(unsigned (&w)[4], int lane) {
#pragma unroll
  for (int bit = 1; bit <= 2; bit *= 2) {  // pairs (lo, lo | bit): a lane with `bit` set trades its lo for the other's hi
    const bool high = lane & bit;
#pragma unroll
    for (int lo = 0; lo < 4; ++lo) {
      if (lo & bit) continue;
      const int hi = lo | bit;
      const unsigned got = __shfl_xor_sync(0xffffffffu, high ? w[lo] : w[hi], bit);
      w[lo] = high ? got : w[lo];
      w[hi] = high ? w[hi] : got;
    }
  }
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}
__device__ __forceinline__ float2 unpack_bf16(unsigned w) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
}

}  // namespace qwen3next
