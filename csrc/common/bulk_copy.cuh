// Bulk copies global -> shared by the copy engine (cp.async.bulk, sm90+), completing on an mbarrier that also
// counts the bytes: one thread announces the bytes of a fill, any threads issue the copies, and the
// consumers wait on the barrier's phase parity.
#pragma once

#include <cstdint>

namespace qwen3next {

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// One arrival completes a phase (the announcing thread's), once the announced bytes have landed.
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(barrier)) : "memory");
}
// Makes initialised barriers and ordinary shared-memory writes visible to the copy engine (then barrier).
__device__ __forceinline__ void fence_for_bulk_copies() {
  asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}

// This thread's arrival for the phase, announcing `bytes` of copies that complete it.
__device__ __forceinline__ void mbarrier_arrive_expect(uint64_t* barrier, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(bytes)
               : "memory");
}

// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to this CTA's shared memory.
__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, unsigned bytes, uint64_t* barrier) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          shared_address(smem)),
      "l"(gmem), "r"(bytes), "r"(shared_address(barrier))
      : "memory");
}

// Returns once the phase with this parity (0 for the barrier's first phase, then alternating) completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait;\n"
      "}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}

}  // namespace qwen3next
