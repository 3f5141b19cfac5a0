"""Where the few-token MoE block's time goes: each kernel's GPU time (torch profiler), per call, at decode sizes.

    python -m benchmarks.profile_moe [--tokens 1 8 32 128] [--calls 20]

The published sizes with random weights (bench_moe's). Kernels chained to the one before them (programmatic
dependent launch) start before it ends, so their times overlap and may sum to more than the call. Under ncu, run
few calls: `ncu --clock-control none -k regex:moe_route -s 5 -c 1 --page source --print-source sass
python -m benchmarks.profile_moe --tokens 1 --calls 8 > route.txt; python -m benchmarks.ncu_stalls route.txt`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_moe import HIDDEN, TOP_K, random_weights
from benchmarks.profile_step import profile_calls
from qwen3next_cuda import ops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(0)
    weights = random_weights(gen)
    for tokens in args.tokens:
        x = torch.randn(tokens, HIDDEN, device="cuda", generator=gen).bfloat16()
        profile_calls(f"moe, {tokens} tokens", lambda: ops.moe(x, weights, TOP_K, True), args.calls)


if __name__ == "__main__":
    main()
