"""Gated DeltaNet prefill (varlen conv + chunked delta rule + gated norm): the reference against decoding every
token (CPU), the kernels against the fp32 step-by-step reference (GPU): outputs and both states, lengths around
the 64-token chunk, a varlen batch with permuted and padded slots, non-zero initial states, prefill followed by
decode steps, CUDA-graph replay, bad inputs."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda import ops, reference
from test_gdn_decode import DIM, EPS, make_layer
from utils import assert_close, nan_like

cuda = pytest.mark.cuda
PADDING_ROW = 1.5  # what `out` holds in rows of padding sequences before a call


def make_batch(gen, lengths, num_slots, key_heads=2, value_heads=4, device="cpu"):
    """qkvz, ba rows of a varlen batch, random conv and recurrent states, cu_seqlens, permuted slots with every
    third sequence padding."""
    channels = 2 * key_heads * DIM + value_heads * DIM
    tokens = sum(lengths)
    qkvz = torch.randn(tokens, channels + value_heads * DIM, generator=gen).to(device, torch.bfloat16)
    ba = torch.randn(tokens, 2 * value_heads, generator=gen).to(device, torch.bfloat16)
    conv_state = torch.randn(num_slots, 3, channels, generator=gen).to(device, torch.bfloat16)
    recurrent = (torch.randn(num_slots, value_heads, DIM, DIM, generator=gen) * 0.1).to(device)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    slots = torch.randperm(num_slots, generator=gen)[:len(lengths)].int()
    slots[1::3] = -1
    return qkvz, ba, conv_state, recurrent, slots.to(device), cu_seqlens


def valid_rows(slots, cu_seqlens):
    """Rows of the sequences that are not padding."""
    rows = torch.zeros(int(cu_seqlens[-1]), dtype=torch.bool, device=slots.device)
    for seq, slot in enumerate(slots.tolist()):
        if slot >= 0:
            rows[int(cu_seqlens[seq]):int(cu_seqlens[seq + 1])] = True
    return rows


def test_reference_matches_decode_steps():
    gen = torch.Generator().manual_seed(0)
    layer = make_layer(gen)
    lengths = [5, 2, 0, 9, 1]
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, lengths, 7)
    step_conv, step_recurrent = conv_state.clone(), recurrent.clone()
    expected = torch.zeros(sum(lengths), 4 * DIM, dtype=torch.bfloat16)
    for seq, slot in enumerate(slots.tolist()):
        for t in range(int(cu_seqlens[seq]), int(cu_seqlens[seq + 1])):
            expected[t] = reference.gdn_decode(qkvz[None, t:t + 1], ba[None, t:t + 1], step_conv, step_recurrent,
                                               torch.tensor([slot], dtype=torch.int32), eps=EPS, **layer)[0, 0]
    out = reference.gdn_prefill(qkvz, ba, conv_state, recurrent, slots, cu_seqlens, eps=EPS, **layer)
    assert_close(out, expected, atol=2e-2, rtol=2e-2)  # bf16 outputs, summation orders differ
    assert torch.equal(conv_state, step_conv)
    assert_close(recurrent, step_recurrent, atol=1e-5, rtol=1e-5, name="recurrent state")


def run_both(lengths, key_heads=2, value_heads=4, seed=0, kernel="sm90a"):
    """The kernels and the reference on the same inputs: (out, conv, recurrent) of each, the slots and rows.
    ``kernel``: "portable" runs the mma.sync state kernel where the wgmma one would (sm90, a build with 90a)."""
    gen = torch.Generator().manual_seed(seed)
    layer = make_layer(gen, key_heads, value_heads, "cuda")
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, lengths, len(lengths) + 3, key_heads,
                                                                     value_heads, "cuda")
    ref_conv, ref_recurrent = conv_state.clone(), recurrent.clone()
    expected = reference.gdn_prefill(qkvz, ba, ref_conv, ref_recurrent, slots, cu_seqlens, eps=EPS, **layer)
    rows = valid_rows(slots, cu_seqlens)
    out = nan_like(torch.empty(sum(lengths), value_heads * DIM, dtype=torch.bfloat16, device="cuda"))
    out[~rows] = PADDING_ROW  # finite: a norm over a row of padding would change it (a NaN row it would keep)
    ops.gdn_prefill(qkvz, ba, conv_state, recurrent, slots, cu_seqlens, eps=EPS, out=out, portable=kernel == "portable",
                    **layer)
    return (out, conv_state, recurrent), (expected, ref_conv, ref_recurrent), slots, rows


def check_against_reference(ours, expected, slots, rows):
    (out, conv_state, recurrent), (ref_out, ref_conv, ref_recurrent) = ours, expected
    assert (out[~rows] == PADDING_ROW).all(), "rows of padding sequences must be left as they are"
    # bf16 tensor-core products (K S, Q S, T R, P V', K^T V') against fp32 token by token
    assert_close(out[rows], ref_out[rows], atol=6e-2, rtol=6e-2, max_rel_err=1.5e-2)
    assert torch.equal(conv_state, ref_conv), "conv state"
    used = slots[slots >= 0].long()
    unused = torch.ones(recurrent.shape[0], dtype=torch.bool, device="cuda")
    unused[used] = False
    assert torch.equal(recurrent[unused], ref_recurrent[unused]), "slots of no sequence must be left as they are"
    assert_close(recurrent[used], ref_recurrent[used], atol=2e-2, rtol=5e-2, max_rel_err=1e-2, name="recurrent state")


KERNELS = pytest.mark.parametrize("kernel", ["portable", "sm90a"])  # sm90a: the wgmma state kernel where it runs


@cuda
@KERNELS
@pytest.mark.parametrize("length", [1, 15, 63, 64, 65, 300, 4097])
def test_kernel_matches_fp32_reference(length, kernel):
    ours, expected, slots, rows = run_both([length], seed=length, kernel=kernel)
    check_against_reference(ours, expected, slots, rows)


@cuda
@KERNELS
def test_varlen_batch_matches_fp32_reference(kernel):
    """Lengths 1, 63, 64, 1000, 4097, with an empty sequence and a padding one (every third) among them."""
    ours, expected, slots, rows = run_both([1, 0, 63, 64, 50, 1000, 4097], seed=1, kernel=kernel)
    check_against_reference(ours, expected, slots, rows)


@cuda
@KERNELS
def test_model_heads_match_fp32_reference(kernel):
    """The model's 16 key and 32 value heads."""
    ours, expected, slots, rows = run_both([130, 77], key_heads=16, value_heads=32, seed=2, kernel=kernel)
    check_against_reference(ours, expected, slots, rows)


@cuda
def test_prefill_then_decode_matches_decoding_every_token():
    gen = torch.Generator().manual_seed(3)
    layer = make_layer(gen, device="cuda")
    prompt, steps = 150, 6
    qkvz, ba, conv_state, recurrent, _, _ = make_batch(gen, [prompt + steps], 1, device="cuda")
    slot = torch.zeros(1, dtype=torch.int32, device="cuda")
    ref_conv, ref_recurrent = conv_state.clone(), recurrent.clone()
    expected = torch.cat([reference.gdn_decode(qkvz[None, t:t + 1], ba[None, t:t + 1], ref_conv, ref_recurrent, slot,
                                               eps=EPS, **layer)[0] for t in range(prompt + steps)])
    cu_seqlens = torch.tensor([0, prompt], dtype=torch.int32, device="cuda")
    prefill = ops.gdn_prefill(qkvz[:prompt], ba[:prompt], conv_state, recurrent, slot, cu_seqlens, eps=EPS, **layer)
    decode = ops.gdn_decode(qkvz[None, prompt:], ba[None, prompt:], conv_state, recurrent, slot, eps=EPS, **layer)[0]
    assert_close(torch.cat([prefill, decode]), expected, atol=6e-2, rtol=6e-2, max_rel_err=1.5e-2)
    assert torch.equal(conv_state, ref_conv), "conv state"
    assert_close(recurrent, ref_recurrent, atol=2e-2, rtol=5e-2, max_rel_err=1e-2, name="recurrent state")


@cuda
def test_cuda_graph_replay_matches_eager():
    gen = torch.Generator().manual_seed(4)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, [70, 5, 200], 5, device="cuda")
    eager_conv, eager_recurrent = conv_state.clone(), recurrent.clone()
    eager = ops.gdn_prefill(qkvz, ba, eager_conv, eager_recurrent, slots, cu_seqlens, eps=EPS, **layer)
    out = torch.zeros_like(eager)  # the padding sequence's rows stay as they are
    ops.gdn_prefill(qkvz, ba, conv_state.clone(), recurrent.clone(), slots, cu_seqlens, eps=EPS, out=out,
                    max_seqlen=200, **layer)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.gdn_prefill(qkvz, ba, conv_state, recurrent, slots, cu_seqlens, eps=EPS, out=out, max_seqlen=200,
                        **layer)
    graph.replay()
    assert torch.equal(out, eager) and torch.equal(conv_state, eager_conv) and torch.equal(recurrent, eager_recurrent)


@cuda
def test_small_max_seqlen_hint_is_still_correct():
    """max_seqlen only sizes the grid: a hint below the longest sequence changes nothing."""
    gen = torch.Generator().manual_seed(6)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, [300, 64], 3, device="cuda")
    exact_conv, exact_recurrent = conv_state.clone(), recurrent.clone()
    exact = ops.gdn_prefill(qkvz, ba, exact_conv, exact_recurrent, slots, cu_seqlens, eps=EPS, **layer)
    hinted = ops.gdn_prefill(qkvz, ba, conv_state, recurrent, slots, cu_seqlens, eps=EPS, max_seqlen=1, **layer)
    assert torch.equal(hinted, exact) and torch.equal(recurrent, exact_recurrent)


@cuda
def test_short_sequences_match_fp32_reference():
    """Sequences shorter than the conv's window (their new conv state keeps rows of the old one), at odd offsets."""
    ours, expected, slots, rows = run_both([2, 1, 3, 70, 2, 1, 5], seed=4)
    check_against_reference(ours, expected, slots, rows)


@cuda
def test_bad_inputs_raise():
    gen = torch.Generator().manual_seed(8)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, [10, 20], 3, device="cuda")
    out = torch.empty(30, 512, dtype=torch.bfloat16, device="cuda")
    args = dict(out=out, conv_state=conv_state, recurrent_state=recurrent, qkvz=qkvz, ba=ba, cu_seqlens=cu_seqlens,
                slots=slots, conv_weight=layer["conv_weight"], A_log=layer["A_log"], dt_bias=layer["dt_bias"],
                norm_weight=layer["norm_weight"], eps=EPS, max_seqlen=20)

    def call(**changes):
        torch.ops.qwen3next.gdn_prefill(**dict(args, **changes))

    with pytest.raises(RuntimeError, match="recurrent_state must have dtype"):
        call(recurrent_state=recurrent.bfloat16())
    with pytest.raises(RuntimeError, match="qkvz must be"):
        call(qkvz=qkvz[:, :1024 + 256])
    with pytest.raises(RuntimeError, match="conv_state must have shape"):
        call(conv_state=conv_state[:, :2].contiguous())
    with pytest.raises(RuntimeError, match="conv_weight must have shape"):
        call(conv_weight=layer["conv_weight"][:512].contiguous())
    with pytest.raises(RuntimeError, match="cu_seqlens must have shape"):
        call(cu_seqlens=cu_seqlens[:2])
    with pytest.raises(RuntimeError, match="2 value heads per key head"):
        call(recurrent_state=recurrent[:, :3].contiguous())
    with pytest.raises(RuntimeError, match="max_seqlen must be >= 0"):
        call(max_seqlen=-1)
    with pytest.raises(RuntimeError, match="must be bfloat16"):
        call(qkvz=qkvz.half())
    with pytest.raises(RuntimeError, match="16-byte boundaries"):
        call(qkvz=torch.zeros(30, 1537, dtype=torch.bfloat16, device="cuda")[:, 1:])
    with pytest.raises(RuntimeError, match="norm_weight must start on 16-byte"):
        call(norm_weight=torch.ones(DIM + 1, dtype=torch.bfloat16, device="cuda")[1:])


@pytest.mark.skipif(not ops.HAS_KERNELS, reason="extension not built")
def test_fake_implementation_traces_on_meta():
    def meta(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, device="meta", dtype=dtype)

    torch.ops.qwen3next.gdn_prefill(meta(30, 512), meta(5, 3, 1024), meta(5, 4, 128, 128, dtype=torch.float32),
                                    meta(30, 1536), meta(30, 8), meta(3, dtype=torch.int32), meta(2, dtype=torch.int32),
                                    meta(1024, 4), meta(4, dtype=torch.float32), meta(4, dtype=torch.float32),
                                    meta(128), EPS, 20)


@cuda
def test_opcheck():
    gen = torch.Generator().manual_seed(9)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent, slots, cu_seqlens = make_batch(gen, [10, 20], 3, device="cuda")
    out = torch.empty(30, 512, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops.qwen3next.gdn_prefill.default,
                          (out, conv_state, recurrent, qkvz, ba, cu_seqlens, slots, layer["conv_weight"],
                           layer["A_log"], layer["dt_bias"], layer["norm_weight"], EPS, 20))
