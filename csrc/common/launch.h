#pragma once

#include <c10/cuda/CUDAException.h>

// After every kernel launch: report launch errors at the launch site (no device sync).
#define QN_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
