"""Causal conv1d + SiLU over a varlen batch (prefill): the reference against the decode step token by token
(CPU), the kernel against the reference (GPU): outputs and conv states, lengths shorter than the window,
empty and padded sequences, strided input rows, NaN-poisoned outputs, CUDA-graph replay, bad inputs."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda import ops, reference
from utils import assert_close, nan_like

cuda = pytest.mark.cuda
WIDTH = 4


def make_batch(gen, lengths, channels, num_slots, device="cpu", dtype=torch.bfloat16, row_extra=0):
    """x as the first `channels` columns of wider rows, weight, random conv states, cu_seqlens, permuted slots
    (every third sequence padding)."""
    tokens = sum(lengths)
    rows = torch.randn(tokens, channels + row_extra, generator=gen).to(device, dtype)
    weight = (torch.randn(channels, WIDTH, generator=gen) * 0.5).to(device, dtype)
    conv_state = torch.randn(num_slots, WIDTH - 1, channels, generator=gen).to(device, dtype)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    slots = torch.randperm(num_slots, generator=gen)[:len(lengths)].int()
    slots[1::3] = -1
    return rows[:, :channels], weight, conv_state, slots.to(device), cu_seqlens


def test_reference_matches_decode_steps():
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 1, 0, 2, 9]
    x, weight, conv_state, slots, cu_seqlens = make_batch(gen, lengths, 16, 7)
    expected_state = conv_state.clone()
    expected = torch.zeros_like(x)
    for seq, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        state = expected_state[slot].t().unsqueeze(0).contiguous()  # [1, C, K-1]
        for t in range(cu_seqlens[seq], cu_seqlens[seq + 1]):
            expected[t] = reference.causal_conv1d_update(x[t:t + 1], weight, state)[0]
        expected_state[slot] = state[0].t()
    out = reference.causal_conv1d_varlen(x, weight, conv_state, slots, cu_seqlens)
    assert torch.equal(out, expected)
    assert torch.equal(conv_state, expected_state)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
# The last list starts sequences 6 and 7 tokens into the kernel's blocks of 8 (at 7, 14 and 39), so that their first
# tokens, which read the old conv state, run past the block.
@pytest.mark.parametrize("lengths", [[1], [2], [63], [4097], [1, 63, 64, 1000, 4097], [3, 0, 2, 33, 1, 0, 70],
                                     [6, 1, 2, 5, 0, 3, 15, 7, 50]])
def test_kernel_matches_reference(dtype, lengths):
    gen = torch.Generator().manual_seed(len(lengths) * 7 + lengths[0])
    x, weight, conv_state, slots, cu_seqlens = make_batch(gen, lengths, 8192 + 64, len(lengths) + 2, "cuda",
                                                          dtype, row_extra=24)
    expected_state = conv_state.clone()
    expected = reference.causal_conv1d_varlen(x, weight, expected_state, slots, cu_seqlens,
                                              out=nan_like(torch.empty(x.shape, dtype=dtype, device="cuda")))
    out = nan_like(torch.empty(x.shape, dtype=dtype, device="cuda"))
    ops.causal_conv1d_varlen(x, weight, conv_state, slots, cu_seqlens, out=out)
    assert torch.equal(out.isnan(), expected.isnan()), "padding rows must be left as they are"
    valid = ~expected.isnan()
    assert_close(out[valid], expected[valid], atol=1e-2, rtol=1e-2, max_rel_err=4e-3)  # one rounding apart
    assert torch.equal(conv_state, expected_state), "conv state"


@cuda
def test_cuda_graph_replay_matches_eager():
    gen = torch.Generator().manual_seed(3)
    x, weight, conv_state, slots, cu_seqlens = make_batch(gen, [40, 7, 100], 512, 4, "cuda")
    eager_state = conv_state.clone()
    eager = ops.causal_conv1d_varlen(x, weight, eager_state, slots, cu_seqlens)
    out = torch.zeros_like(eager)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.causal_conv1d_varlen(x, weight, conv_state, slots, cu_seqlens, out=out)
    graph.replay()
    assert torch.equal(out, eager) and torch.equal(conv_state, eager_state)


@cuda
def test_bad_inputs():
    gen = torch.Generator().manual_seed(1)
    x, weight, conv_state, slots, cu_seqlens = make_batch(gen, [4, 5], 64, 3, "cuda", row_extra=8)
    out = torch.empty(x.shape, dtype=x.dtype, device="cuda")
    args = dict(out=out, conv_state=conv_state, x=x, weight=weight, cu_seqlens=cu_seqlens, slots=slots)

    def call(**changes):
        a = {**args, **changes}
        torch.ops.qwen3next.causal_conv1d_varlen(a["out"], a["conv_state"], a["x"], a["weight"], a["cu_seqlens"],
                                                 a["slots"])

    wide = torch.zeros(9, 70, dtype=x.dtype, device="cuda")
    for changes, match in [
        (dict(cu_seqlens=cu_seqlens.long()), "dtype"),
        (dict(cu_seqlens=cu_seqlens[:2]), "cu_seqlens must have shape"),
        (dict(weight=weight[:, :3].contiguous()), "weight must be"),
        (dict(x=x.float()), "bfloat16 or float16"),
        (dict(conv_state=conv_state[:, :2].contiguous()), "conv_state must be"),
        (dict(x=wide[:, 2:66], out=out), "16-byte boundaries"),
        (dict(weight=weight[:60].contiguous(), x=x[:, :60], out=out[:, :60]), "multiple of 8"),
        (dict(slots=slots.cpu()), "must be on"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            call(**changes)
