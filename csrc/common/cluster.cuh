// Thread-block cluster barrier halves (sm90+). Arrive publishes this thread's earlier memory accesses,
// wait returns once every thread of the cluster has arrived and acquires what they published.
#pragma once

namespace qwen3next {

// Release: this thread's earlier stores (remote shared memory too) are visible to whoever waits.
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
// Relaxed: publishes only that earlier reads are done (a read whose value is used is done), without
// waiting for the stores in flight as a release would.
__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

}  // namespace qwen3next
