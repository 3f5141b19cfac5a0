// Kernels launched chained (launch_chained in launch.h: programmatic dependent launch) start while the kernel before
// them in the stream still runs. Each calls await_previous_kernel() once (or its two halves, below); before that call
// it may read only weights and what kernels two or more launches back wrote, and it writes nothing: the previous
// kernel lets it launch only from its own await, when the one before that has finished. A CTA that exits before its
// await counts as having awaited: in every chained grid at least one CTA must await.
#pragma once

namespace qwen3next {

// The two halves of await_previous_kernel (below). A kernel that learns by counters in memory (further below) when
// the previous kernel's results it needs are ready may call them apart: it lets the next kernel launch early and waits
// for the previous grid only at its end, so that its own end still implies the end of every kernel before it. The next
// kernel's prologue then may read only what three or more launches back wrote, or what a counter tells it is ready.
// Before sm90 chained launches run one after the other and both do nothing.
__device__ __forceinline__ void wait_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void let_next_kernel_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Waits until the previous kernel in the stream has finished and its writes are visible, then lets the next chained
// kernel launch.
__device__ __forceinline__ void await_previous_kernel() {
  wait_previous_kernel();
  let_next_kernel_launch();
}

// Counters between CTAs of chained kernels. A CTA publishes its writes by a CTA barrier and then one thread's
// count_done; a CTA waits for `target` publications with wait_for_count, after which all its threads see them. Every
// CTA that counts must be resident before any that waits (a chained kernel launches only when every CTA of the one
// before it has started), so the waiting cannot starve them.
__device__ __forceinline__ void count_done(int* counter) {
  asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(counter) : "memory");
}
__device__ __forceinline__ void wait_for_count(const int* counter, int target) {
  if (threadIdx.x == 0) {
    int count;
    while (true) {
      asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(count) : "l"(counter) : "memory");
      if (count >= target) break;
      __nanosleep(32);
    }
  }
  __syncthreads();
}

}  // namespace qwen3next
