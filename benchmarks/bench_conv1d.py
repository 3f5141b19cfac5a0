"""conv1d_fwd: the DeltaNet causal conv1d + SiLU of a prefill, [q | k | v] channels read in place from the
in_proj output rows, the sequence's conv state read and written back.

ours: the varlen kernel (cache layout). fla: flash-linear-attention's Triton causal_conv1d (its own
state layout, final state returned). torch: the reference (F.conv1d in fp32). All graph-replayed.
"""

from __future__ import annotations

import torch

from benchmarks.timing import input_sets, time_graph
from qwen3next_cuda import ops, reference

KEY_DIM, VALUE_DIM, WIDTH = 2048, 4096, 4
CHANNELS, ROW = 2 * KEY_DIM + VALUE_DIM, 2 * KEY_DIM + 2 * VALUE_DIM  # conv channels; in_proj row [q|k|v|z]
TOKENS = (4096, 32768)


def _fla():
    try:
        from fla.modules.causal_conv1d.ops import causal_conv1d
    except ImportError:
        return None
    return causal_conv1d


def run(record) -> None:
    fla_conv = _fla()
    weight = (torch.randn(CHANNELS, WIDTH, device="cuda") * 0.5).bfloat16()
    for tokens in TOKENS:
        nbytes = 2 * tokens * CHANNELS * 2 + 2 * (WIDTH - 1) * CHANNELS * 2 + CHANNELS * WIDTH * 2
        cu_seqlens = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        slots = torch.zeros(1, dtype=torch.int32, device="cuda")

        def make():
            return dict(x=torch.randn(tokens, ROW, device="cuda").bfloat16()[:, :CHANNELS],
                        state=torch.randn(1, WIDTH - 1, CHANNELS, device="cuda").bfloat16(),
                        out=torch.empty(tokens, CHANNELS, device="cuda", dtype=torch.bfloat16))

        sets = input_sets(make, nbytes)

        def ours(s):
            ops.causal_conv1d_varlen(s["x"], weight, s["state"], slots, cu_seqlens, out=s["out"])

        record("conv1d_fwd", "ours", {"tokens": tokens, "seqs": 1}, time_graph(ours, sets), nbytes=nbytes)

        def torch_conv(s):
            reference.causal_conv1d(s["x"].unsqueeze(0), weight, s["state"].transpose(1, 2))

        record("conv1d_fwd", "torch", {"tokens": tokens, "seqs": 1}, time_graph(torch_conv, sets), nbytes=nbytes)
        if fla_conv is None:
            continue
        fla_states = [torch.randn(1, CHANNELS, WIDTH, device="cuda").bfloat16() for _ in sets]

        def fla(item):
            s, state = item
            fla_conv(s["x"].unsqueeze(0), weight, initial_state=state, output_final_state=True, activation="silu",
                     backend="triton")

        record("conv1d_fwd", "fla", {"tokens": tokens, "seqs": 1}, time_graph(fla, list(zip(sets, fla_states))),
               nbytes=nbytes)
        del sets, fla_states
