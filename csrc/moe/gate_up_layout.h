// The experts' gate_up rows in memory (python/qwen3next_cuda/weights.py): gate and up interleaved in blocks of
// kGateUpBlock ([g 0-31 | u 0-31 | g 32-63 | u 32-63 | ...]), so that a GEMM tile of an expert's output holds matching
// gate and up columns. The same order holds for the columns of a product with those rows.
#pragma once

namespace qwen3next {

constexpr int kGateUpBlock = 32;

// The row (or product column) of hidden unit `unit`'s gate value; its up value is kGateUpBlock further.
__host__ __device__ constexpr int gate_up_gate_row(int unit) {
  return unit / kGateUpBlock * 2 * kGateUpBlock + unit % kGateUpBlock;
}

}  // namespace qwen3next
