"""Gated DeltaNet decode mixer: the reference against token-by-token reference ops (CPU), the kernel against
the fp32 reference (GPU): outputs and both states, odd batches, permuted and padded slots, T = 1..8, no state
writes for verification, 1000 steps of drift, CUDA-graph replay, bad inputs."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda import ops, reference
from utils import assert_close, nan_like

cuda = pytest.mark.cuda
DIM, WIDTH, EPS = 128, 4, 1e-6


def make_layer(gen, key_heads=2, value_heads=4, device="cpu", dtype=torch.bfloat16):
    """Random weights of one DeltaNet layer with 128-wide heads: conv [C, 4], A_log, dt_bias (fp32), norm [128]."""
    channels = 2 * key_heads * DIM + value_heads * DIM

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device)

    return dict(conv_weight=randn(channels, WIDTH, scale=0.5).to(dtype),
                A_log=(torch.rand(value_heads, generator=gen) * 4 + 0.05).log().to(device),
                dt_bias=randn(value_heads), norm_weight=(1 + randn(DIM, scale=0.1)).to(dtype))


def make_inputs(gen, batch, tokens, num_slots, key_heads=2, value_heads=4, device="cpu", dtype=torch.bfloat16):
    """qkvz, ba [B, T, ...]; non-zero conv and recurrent states for num_slots slots."""
    channels = 2 * key_heads * DIM + value_heads * DIM
    qkvz = torch.randn(batch, tokens, channels + value_heads * DIM, generator=gen).to(device, dtype)
    ba = torch.randn(batch, tokens, 2 * value_heads, generator=gen).to(device, dtype)
    conv_state = torch.randn(num_slots, WIDTH - 1, channels, generator=gen).to(device, dtype)
    recurrent = (torch.randn(num_slots, value_heads, DIM, DIM, generator=gen) * 0.1).to(device)
    return qkvz, ba, conv_state, recurrent


def padded_slots(gen, batch, num_slots, device="cpu"):
    """A permutation of slots with every third row padding (-1)."""
    slots = torch.randperm(num_slots, generator=gen)[:batch].int()
    slots[1::3] = -1
    return slots.to(device)


def step_by_step(qkvz, ba, conv_state, recurrent, slots, layer):
    """The unfused decode path, one token at a time, on the reference's own layouts; returns out, states."""
    conv_state, recurrent = conv_state.clone(), recurrent.clone()
    channels = layer["conv_weight"].shape[0]
    value_heads = recurrent.shape[1]
    key_dim = (channels - value_heads * DIM) // 2
    out = torch.zeros(*qkvz.shape[:2], value_heads * DIM, dtype=qkvz.dtype)
    for row, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        conv = conv_state[slot].t().unsqueeze(0).contiguous()  # [1, C, K-1]
        state = recurrent[slot].transpose(-1, -2).unsqueeze(0)  # key-major [1, Hv, dk, dv]
        for t in range(qkvz.shape[1]):
            qkv, z = qkvz[row:row + 1, t].split([channels, value_heads * DIM], dim=-1)
            qkv = reference.causal_conv1d_update(qkv, layer["conv_weight"], conv)
            q, k, v = qkv.split([key_dim, key_dim, value_heads * DIM], dim=-1)
            b, a = ba[row:row + 1, t:t + 1].chunk(2, dim=-1)
            g, beta = reference.gdn_gating(a, b, layer["A_log"], layer["dt_bias"])
            o, state = reference.gated_delta_rule_recurrent(
                q.view(1, 1, -1, DIM), k.view(1, 1, -1, DIM), v.view(1, 1, -1, DIM), g, beta, state)
            out[row, t] = reference.rmsnorm_gated(o, z.view(1, 1, -1, DIM), layer["norm_weight"], EPS).flatten()
        conv_state[slot] = conv[0].t()
        recurrent[slot] = state[0].transpose(-1, -2)
    return out, conv_state, recurrent


@pytest.mark.parametrize("tokens", [1, 3, 8])
def test_reference_matches_step_by_step(tokens):
    gen = torch.Generator().manual_seed(tokens)
    layer = make_layer(gen)
    qkvz, ba, conv_state, recurrent = make_inputs(gen, 5, tokens, 7)
    slots = padded_slots(gen, 5, 7)
    expected, expected_conv, expected_recurrent = step_by_step(qkvz, ba, conv_state, recurrent, slots, layer)
    out = reference.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, **layer)
    assert_close(out, expected, atol=2e-2, rtol=2e-2)  # bf16 outputs, summation orders differ
    assert torch.equal(conv_state, expected_conv)
    assert_close(recurrent, expected_recurrent, atol=1e-5, rtol=1e-5, name="recurrent state")


def _fp32(*tensors):
    return [t.float() if t.is_floating_point() else t for t in tensors]


# (150, 1) and (70, 3): more sequences than clusters fit at once, so each walks several (prefetching).
SHAPES = [(1, 1), (3, 1), (17, 1), (5, 2), (4, 5), (3, 8), (150, 1), (70, 3)]


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads", [(2, 4), (3, 3)])
@pytest.mark.parametrize("batch,tokens", SHAPES)
def test_kernel_matches_fp32_reference(dtype, heads, batch, tokens):
    gen = torch.Generator().manual_seed(batch * 10 + tokens)
    key_heads, value_heads = heads
    layer = make_layer(gen, key_heads, value_heads, "cuda", dtype)
    num_slots = batch + 4
    qkvz, ba, conv_state, recurrent = make_inputs(gen, batch, tokens, num_slots, key_heads, value_heads, "cuda", dtype)
    slots = padded_slots(gen, batch, num_slots, "cuda")
    same_conv, same_recurrent = conv_state.clone(), recurrent.clone()  # the reference on the same inputs
    same = reference.gdn_decode(qkvz, ba, same_conv, same_recurrent, slots, eps=EPS, **layer)
    fp32_conv, fp32_recurrent = conv_state.float(), recurrent.clone()  # and with every rounding removed
    fp32 = reference.gdn_decode(*_fp32(qkvz, ba, fp32_conv, fp32_recurrent, slots), eps=EPS,
                                **dict(zip(layer, _fp32(*layer.values()))))
    # without an output buffer (a fresh one; states left as they are): padding rows zeroed, as the reference's
    fresh = ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, update_state=False, **layer)
    out = nan_like(torch.empty(batch, tokens, value_heads * DIM, dtype=dtype, device="cuda"))
    ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, out=out, **layer)

    valid = slots >= 0
    assert out[~valid].isnan().all(), "padding rows must be left as they are"
    assert (fresh[~valid] == 0).all() and torch.equal(fresh[valid], out[valid]), "a fresh output's rows"
    assert_close(out[valid], same[valid], atol=2e-2, rtol=2e-2)
    assert torch.equal(conv_state, same_conv), "conv state"
    # elementwise loose: a conv output rounded to 16 bits the other way moves a few state entries
    assert_close(recurrent, same_recurrent, atol=1e-4, rtol=1e-2, max_rel_err=1e-5, name="recurrent state")
    # against fp32 throughout, the differences are the model's own roundings of activations to 16 bits
    assert_close(out[valid], fp32[valid], atol=5e-2, rtol=5e-2, max_rel_err=1e-2, name="output vs fp32")
    assert_close(recurrent, fp32_recurrent, atol=2e-2, rtol=2e-2, max_rel_err=5e-3, name="state vs fp32")


@cuda
@pytest.mark.parametrize("batch,tokens", [(1, 1), (17, 1), (4, 5), (150, 1)])
def test_bf16_state_matches_reference(batch, tokens):
    """A bf16 recurrent state: the kernel against the reference on the same bf16 state, and against fp32."""
    gen = torch.Generator().manual_seed(batch + tokens)
    layer = make_layer(gen, device="cuda")
    num_slots = batch + 3
    qkvz, ba, conv_state, fp32_recurrent = make_inputs(gen, batch, tokens, num_slots, device="cuda")
    recurrent = fp32_recurrent.bfloat16()
    slots = padded_slots(gen, batch, num_slots, "cuda")
    same_conv, same_recurrent = conv_state.clone(), recurrent.clone()
    same = reference.gdn_decode(qkvz, ba, same_conv, same_recurrent, slots, eps=EPS, **layer)
    reference.gdn_decode(qkvz, ba, conv_state.clone(), fp32_recurrent, slots, eps=EPS, **layer)
    out = nan_like(torch.empty(batch, tokens, 4 * DIM, dtype=torch.bfloat16, device="cuda"))
    ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, out=out, **layer)

    valid = slots >= 0
    assert out[~valid].isnan().all(), "padding rows must be left as they are"
    assert_close(out[valid], same[valid], atol=2e-2, rtol=2e-2)
    assert torch.equal(conv_state, same_conv), "conv state"
    # the same fp32 math up to summation order: at most a rounding flip of the stored bf16
    assert_close(recurrent.float(), same_recurrent.float(), atol=1e-3, rtol=8e-3, max_rel_err=1e-3,
                 name="bf16 recurrent state")
    assert_close(recurrent.float(), fp32_recurrent, atol=1e-3, rtol=8e-3, max_rel_err=4e-3, name="state vs fp32")


@cuda
def test_verification_leaves_states_and_matches_update():
    gen = torch.Generator().manual_seed(7)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent = make_inputs(gen, 6, 4, 9, device="cuda")
    slots = padded_slots(gen, 6, 9, "cuda")
    conv_before, recurrent_before = conv_state.clone(), recurrent.clone()
    verify = ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, update_state=False, **layer)
    assert torch.equal(conv_state, conv_before) and torch.equal(recurrent, recurrent_before)
    # accept the first 2 tokens: rerun them with state updates, then decode the rest from there
    accepted = ops.gdn_decode(qkvz[:, :2], ba[:, :2], conv_state, recurrent, slots, eps=EPS, **layer)
    rest = ops.gdn_decode(qkvz[:, 2:], ba[:, 2:], conv_state, recurrent, slots, eps=EPS, **layer)
    assert torch.equal(torch.cat([accepted, rest], dim=1), verify)


@cuda
def test_back_to_back_calls_on_the_same_slots_see_each_others_states():
    """Launched chained, a call starts while the one before still runs: with preallocated outputs (no kernel
    between) the second of two single-token calls must still read the states the first wrote."""
    gen = torch.Generator().manual_seed(13)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent = make_inputs(gen, 3, 2, 5, device="cuda")
    slots = torch.tensor([4, 0, 2], dtype=torch.int32, device="cuda")
    ref_conv, ref_recurrent = conv_state.clone(), recurrent.clone()
    expected = reference.gdn_decode(qkvz, ba, ref_conv, ref_recurrent, slots, eps=EPS, **layer)
    steps = [qkvz[:, t:t + 1].contiguous() for t in range(2)], [ba[:, t:t + 1].contiguous() for t in range(2)]
    outs = [nan_like(torch.empty(3, 1, 4 * DIM, dtype=torch.bfloat16, device="cuda")) for _ in range(2)]
    for _ in range(20):  # the hazard is a timing one: several tries, from the same states
        conv, rec = conv_state.clone(), recurrent.clone()
        for t in range(2):
            ops.gdn_decode(steps[0][t], steps[1][t], conv, rec, slots, eps=EPS, out=outs[t], **layer)
        assert_close(torch.cat(outs, dim=1), expected, atol=2e-2, rtol=2e-2)
        assert torch.equal(conv, ref_conv), "conv state"
        assert_close(rec, ref_recurrent, atol=1e-4, rtol=1e-2, max_rel_err=1e-5, name="recurrent state")


@cuda
@pytest.mark.parametrize("state_dtype,limit", [(torch.float32, 1e-3), (torch.bfloat16, 4e-3)])
def test_1000_steps_state_drift(state_dtype, limit):
    """The same bf16 inputs into the kernel and the reference (fp32 state, the model's roundings) for 1000 steps.
    A bf16 state stays within a few bf16 roundings (about 2e-3): each step's decay forgets old errors."""
    gen = torch.Generator().manual_seed(11)
    layer = make_layer(gen, device="cuda")
    _, _, conv_state, ref_recurrent = make_inputs(gen, 2, 1, 2, device="cuda")
    slots = torch.tensor([1, 0], dtype=torch.int32, device="cuda")
    ref_conv, recurrent = conv_state.clone(), ref_recurrent.to(state_dtype, copy=True)
    worst = 0.0
    for step in range(1000):
        qkvz = torch.randn(2, 1, 2 * 2 * DIM + 2 * 4 * DIM, device="cuda").bfloat16()
        ba = torch.randn(2, 1, 8, device="cuda").bfloat16()
        ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, **layer)
        reference.gdn_decode(qkvz, ba, ref_conv, ref_recurrent, slots, eps=EPS, **layer)
        if step % 100 == 99:
            worst = max(worst, float((recurrent.float() - ref_recurrent).norm() / ref_recurrent.norm()))
    assert worst < limit, f"state relative error {worst:.3g} after up to 1000 steps"


@cuda
def test_cuda_graph_replay_matches_eager():
    gen = torch.Generator().manual_seed(5)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent = make_inputs(gen, 8, 1, 8, device="cuda")
    slots = torch.arange(8, dtype=torch.int32, device="cuda").flip(0)
    eager_conv, eager_recurrent = conv_state.clone(), recurrent.clone()
    eager = ops.gdn_decode(qkvz, ba, eager_conv, eager_recurrent, slots, eps=EPS, **layer)
    out = torch.empty_like(eager)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.gdn_decode(qkvz, ba, conv_state, recurrent, slots, eps=EPS, out=out, **layer)
    graph.replay()
    assert torch.equal(out, eager) and torch.equal(conv_state, eager_conv) and torch.equal(recurrent, eager_recurrent)


@cuda
def test_bad_inputs():
    gen = torch.Generator().manual_seed(1)
    layer = make_layer(gen, device="cuda")
    qkvz, ba, conv_state, recurrent = make_inputs(gen, 2, 1, 3, device="cuda")
    slots = torch.tensor([0, 1], dtype=torch.int32, device="cuda")
    out = torch.empty(2, 1, 4 * DIM, dtype=torch.bfloat16, device="cuda")
    args = dict(out=out, conv_state=conv_state, recurrent_state=recurrent, qkvz=qkvz, ba=ba, slots=slots, eps=EPS,
                update_state=True, **layer)

    def call(**changes):
        a = {**args, **changes}
        torch.ops.qwen3next.gdn_decode(a["out"], a["conv_state"], a["recurrent_state"], a["qkvz"], a["ba"], a["slots"],
                                       a["conv_weight"], a["A_log"], a["dt_bias"], a["norm_weight"], a["eps"],
                                       a["update_state"], False)

    long = torch.zeros(2, 9, qkvz.shape[-1], dtype=torch.bfloat16, device="cuda")
    for changes, match in [
        (dict(qkvz=long), "1 to 8 tokens"),
        (dict(slots=slots.long()), "dtype"),
        (dict(recurrent_state=recurrent.half()), "float32 or bfloat16"),
        (dict(ba=ba[:, :, :6]), "ba must have shape"),
        (dict(conv_state=conv_state[:, :2]), "conv_state must have shape"),
        (dict(conv_weight=layer["conv_weight"][:100]), "do not make"),
        (dict(A_log=layer["A_log"].cpu()), "must be on"),
        (dict(eps=0.0), "eps must be positive"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            call(**changes)
