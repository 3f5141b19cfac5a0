// Asynchronous 16-byte copies global -> shared (cp.async, sm80+): the copy runs while the thread works on,
// and a thread that reads back only what it copied itself needs no barrier, only wait_group.
#pragma once

namespace qwen3next {

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(gmem) : "memory");
}

// As cp_async_16, but fills the 16 bytes with zeros instead of reading when `valid` is false (gmem must
// still be a valid address).
__device__ __forceinline__ void cp_async_16_or_zero(void* smem, const void* gmem, bool valid) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(gmem), "r"(valid ? 16 : 0)
               : "memory");
}

// Closes the group of this thread's copies issued since the last commit (an empty group is fine).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `kPending` of this thread's most recent groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Asks L2 to fetch `bytes` (a multiple of 16) from global memory starting at `gmem` (16-byte aligned), one
// instruction for the whole range (sm90+; a no-op before). Only a hint: it reads nothing into the thread.
__device__ __forceinline__ void prefetch_l2(const void* gmem, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(gmem), "r"(bytes) : "memory");
#endif
}

}  // namespace qwen3next
