"""Where a Gated DeltaNet prefill's time goes: each kernel's GPU time (torch profiler), per call, at the bench's sizes.

    python -m benchmarks.profile_prefill [--tokens 4096 16384] [--calls 10]

One sequence per call, bench_gdn_prefill's random layer and inputs. Kernels chained to the one before them
(programmatic dependent launch) start before it ends, so their times overlap and may sum to more than the call.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_gdn_decode import CHANNELS, DIM, EPS, VALUE_DIM, VALUE_HEADS, WIDTH, random_layer
from benchmarks.profile_step import profile_calls
from qwen3next_cuda import ops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(0)
    randn, (conv_weight, A_log, dt_bias, norm_weight) = random_layer(gen)
    slots = torch.zeros(1, dtype=torch.int32, device="cuda")
    for tokens in args.tokens:
        cu_seqlens = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        qkvz, ba = randn(tokens, CHANNELS + VALUE_DIM), randn(tokens, 2 * VALUE_HEADS)
        conv = randn(1, WIDTH - 1, CHANNELS)
        state = randn(1, VALUE_HEADS, DIM, DIM, scale=0.05, dtype=torch.float32)
        out = torch.empty(tokens, VALUE_DIM, dtype=torch.bfloat16, device="cuda")

        def call():
            ops.gdn_prefill(qkvz, ba, conv, state, slots, cu_seqlens, conv_weight, A_log, dt_bias, norm_weight, EPS,
                            out=out, max_seqlen=tokens)

        profile_calls(f"gdn_prefill, {tokens} tokens, one sequence", call, args.calls)


if __name__ == "__main__":
    main()
