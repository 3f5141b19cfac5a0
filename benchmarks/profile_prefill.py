"""Where a Gated DeltaNet prefill's time goes: each kernel's GPU time (torch profiler), per call, at the bench's sizes.

    python -m benchmarks.profile_prefill [--tokens 4096 16384] [--calls 10] [--portable]

One sequence per call, bench_gdn_prefill's random layer and inputs. Kernels chained to the one before them
(programmatic dependent launch) start before it ends, so their times overlap and may sum to more than the call.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from benchmarks.bench_gdn_decode import random_layer
from benchmarks.bench_gdn_prefill import make_inputs, run_ours
from benchmarks.profile_step import profile_calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--portable", action="store_true", help="the mma.sync state kernel where sm90a has wgmma")
    args = parser.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(0)
    randn, layer = random_layer(gen)
    slots = torch.zeros(1, dtype=torch.int32, device="cuda")
    for tokens in args.tokens:
        cu_seqlens = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        call = partial(run_ours, make_inputs(randn, tokens, 1), layer, slots, cu_seqlens, tokens, args.portable)
        profile_calls(f"gdn_prefill, {tokens} tokens, one sequence", call, args.calls)


if __name__ == "__main__":
    main()
