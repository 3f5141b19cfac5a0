// Kernels launched chained (launch_chained in launch.h: programmatic dependent launch) start while the kernel before
// them in the stream still runs. Each calls await_previous_kernel() once; before that call it may read only weights
// and what kernels two or more launches back wrote, and it writes nothing: the previous kernel lets it launch only
// from its own await, when the one before that has finished. A CTA that exits before its await counts as having
// awaited: in every chained grid at least one CTA must await.
#pragma once

namespace qwen3next {

// Waits until the previous kernel in the stream has finished and its writes are visible, then lets the next chained
// kernel launch. Before sm90 chained launches run one after the other and this does nothing.
__device__ __forceinline__ void await_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace qwen3next
