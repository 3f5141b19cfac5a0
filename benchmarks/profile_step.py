"""Where a graph-replayed decode step's time goes: each kernel's GPU time (torch profiler over replays), summed
by kernel, beside the step's wall time, so that the gap between them (launch gaps, host work) shows too.

    python -m benchmarks.profile_step [--layers 4] [--batch 1] [--context 1024]

The model: the published widths with random weights, as in bench_e2e.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_e2e import our_decode
from qwen3next_cuda import Qwen3NextCUDA, graphs
from qwen3next_cuda.sampling import GenerationConfig
from qwen3next_cuda.tools.make_checkpoint import preset_config, random_weights

REPLAYS = 20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args(argv)
    config = preset_config("slice", layers=args.layers, mtp=False)
    model = Qwen3NextCUDA(config, random_weights(config, device="cuda"), None, GenerationConfig(eos_token_ids=()))
    step_us = our_decode(model, args.batch, args.context, cuda_graph=True)

    cache = model.new_cache(args.batch, args.context + REPLAYS + 8)
    slots = [cache.allocate(cache.max_len) for _ in range(args.batch)]
    for slot in slots:
        cache.lengths[slot] = args.context - 1
    decode = graphs.DecodeGraphs(model, cache, buckets=(args.batch,)).decode
    tokens = torch.zeros(args.batch, dtype=torch.long, device="cuda")
    decode(tokens, slots)  # warm-up
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            decode(tokens, slots)
        torch.cuda.synchronize()
    total = sum(e.device_time_total for e in kernel_times(prof)) / REPLAYS
    print(f"step {step_us:.1f} µs wall (graph replay), kernels {total:.1f} µs, gaps and host {step_us - total:.1f} µs")
    print_kernel_times(prof, REPLAYS)


def kernel_times(prof) -> list:
    """The profiler's GPU activities by kernel, the longest in total first."""
    return sorted((e for e in prof.key_averages() if e.device_time_total > 0), key=lambda e: -e.device_time_total)


def profile_calls(title: str, call, calls: int, warmup: int = 3) -> None:
    """Prints each kernel's GPU time per call of ``call()`` over ``calls`` profiled calls, after a warm-up."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    print(f"== {title}, per call")
    print_kernel_times(prof, calls)


def print_kernel_times(prof, calls: int) -> None:
    """Each kernel's GPU time and launches per call over ``calls`` profiled calls."""
    for e in kernel_times(prof):
        print(f"{e.device_time_total / calls:9.2f} µs  x{e.count / calls:<4.0f} {e.key[:100]}")


if __name__ == "__main__":
    main()
