"""gdn_decode: the Gated DeltaNet mixer between in_proj and out_proj for one token per sequence.

ours: the fused kernel (fp32 state); ours_bf16_state: the same with the optional bf16 state. fla: the same mixer from flash-linear-attention's fused recurrent kernel (fp32 state,
q/k L2 norm in the kernel, state updated in place as serving engines run it) plus torch ops for the conv
update, the gating and the gated norm. fla_recurrent_only: FLA's recurrent kernel alone (part of the work:
not a peer for the speed-up). All graph-replayed, each
call on its own cache slots so that no state is still in L2.
"""

from __future__ import annotations

import torch

from benchmarks.timing import set_count, time_graph
from qwen3next_cuda import ops, reference
from qwen3next_cuda.cache import new_deltanet_states
from qwen3next_cuda.config import Qwen3NextConfig

KEY_HEADS, VALUE_HEADS, DIM, WIDTH, EPS = 16, 32, 128, 4, 1e-6  # the published Qwen3NextConfig()
CHANNELS, VALUE_DIM = 2 * KEY_HEADS * DIM + VALUE_HEADS * DIM, VALUE_HEADS * DIM
BATCHES = (1, 8, 32, 128, 512)


def _bytes(batch: int, state_bytes: int = 4) -> int:
    """State read + write, conv state read + write, inputs, outputs, weights (bf16 activations)."""
    state = 2 * batch * VALUE_HEADS * DIM * DIM * state_bytes
    conv_state = 2 * batch * (WIDTH - 1) * CHANNELS * 2
    activations = batch * (CHANNELS + VALUE_DIM + 2 * VALUE_HEADS + VALUE_DIM) * 2 + batch * 4
    weights = CHANNELS * WIDTH * 2 + DIM * 2 + 2 * VALUE_HEADS * 4
    return state + conv_state + activations + weights


def _fla():
    try:
        from fla.ops.gated_delta_rule.fused_recurrent import fused_recurrent_gated_delta_rule_fwd_kernel
    except ImportError:
        return None
    return fused_recurrent_gated_delta_rule_fwd_kernel


def _fla_recurrent_in_place(kernel, q, k, v, g, beta, state):
    """FLA's fused recurrent kernel with the final state written over the initial one (each program owns its
    [K, BV] block, so in place is safe): the launch of fused_recurrent_gated_delta_rule_fwd, minus the copy."""
    batch, tokens, key_heads, key_dim = k.shape
    value_heads, value_dim = v.shape[2:]
    block_v = 8
    out = torch.empty_like(v)
    grid = (value_dim // block_v * batch * value_heads,)
    kernel[grid](q=q, k=k, v=v, g=g, gk=None, gv=None, beta=beta, A_log=None, dt_bias=None, o=out, h0=state, ht=state,
                 cu_seqlens=None, scale=key_dim**-0.5, T=tokens, H=key_heads, HV=value_heads, K=key_dim, V=value_dim,
                 BK=key_dim, BV=block_v, IS_BETA_HEADWISE=True, USE_QK_L2NORM_IN_KERNEL=True,
                 APPLY_BETA_SIGMOID=False, ALLOW_NEG_EIGVAL=False, STATE_V_FIRST=False, num_warps=1, num_stages=3)
    return out


def random_layer(gen: torch.Generator):
    """randn(*shape, scale, dtype) on the GPU from `gen`, and one DeltaNet layer's conv weight, A_log, dt_bias and
    norm weight drawn with it."""

    def randn(*shape, scale=1.0, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(dtype)

    A_log = (torch.rand(VALUE_HEADS, generator=gen, device="cuda") * 4 + 0.05).log()
    return randn, (randn(CHANNELS, WIDTH, scale=0.5), A_log, randn(VALUE_HEADS, dtype=torch.float32),
                   1 + randn(DIM, scale=0.1))


def run(record) -> None:
    kernel = _fla()
    gen = torch.Generator(device="cuda").manual_seed(0)
    randn, (conv_weight, A_log, dt_bias, norm_weight) = random_layer(gen)

    for batch in BATCHES:
        nbytes = _bytes(batch)
        count = set_count(nbytes)
        slots_total = batch * count
        conv_state, recurrent = new_deltanet_states(Qwen3NextConfig(), slots_total, torch.bfloat16, "cuda")
        conv_state.normal_(generator=gen)
        recurrent.normal_(std=0.05, generator=gen)
        sets = [dict(qkvz=randn(batch, 1, CHANNELS + VALUE_DIM), ba=randn(batch, 1, 2 * VALUE_HEADS),
                     slots=torch.arange(i * batch, (i + 1) * batch, dtype=torch.int32, device="cuda"),
                     out=torch.empty(batch, 1, VALUE_DIM, dtype=torch.bfloat16, device="cuda"))
                for i in range(count)]

        def ours(s):
            ops.gdn_decode(s["qkvz"], s["ba"], conv_state, recurrent, s["slots"], conv_weight, A_log, dt_bias,
                           norm_weight, EPS, out=s["out"])

        record("gdn_decode", "ours", {"batch": batch}, time_graph(ours, sets), nbytes=nbytes)

        bf16_state = recurrent.bfloat16()

        def ours_bf16_state(s):
            ops.gdn_decode(s["qkvz"], s["ba"], conv_state, bf16_state, s["slots"], conv_weight, A_log, dt_bias,
                           norm_weight, EPS, out=s["out"])

        record("gdn_decode", "ours_bf16_state", {"batch": batch}, time_graph(ours_bf16_state, sets),
               nbytes=_bytes(batch, state_bytes=2))
        del bf16_state
        if kernel is None:
            continue

        # the peer's own layouts: conv state [B, C, K-1] (transformers'), state [B, Hv, K, V] per set
        fla_conv = [randn(batch, CHANNELS, WIDTH - 1) for _ in range(count)]
        fla_state = recurrent.view(count, batch, VALUE_HEADS, DIM, DIM)

        def split(s, i):
            qkv, z = s["qkvz"][:, 0].split([CHANNELS, VALUE_DIM], dim=-1)
            qkv = reference.causal_conv1d_update(qkv, conv_weight, fla_conv[i])
            q, k, v = qkv.split([KEY_HEADS * DIM, KEY_HEADS * DIM, VALUE_DIM], dim=-1)
            b, a = s["ba"].chunk(2, dim=-1)
            g, beta = reference.gdn_gating(a, b, A_log, dt_bias)
            # the kernel reads [B, T, H, D] contiguous, as FLA's wrapper makes them
            return (q.reshape(batch, 1, KEY_HEADS, DIM).contiguous(), k.reshape(batch, 1, KEY_HEADS, DIM).contiguous(),
                    v.reshape(batch, 1, VALUE_HEADS, DIM).contiguous(), g, beta, z.reshape(batch, 1, VALUE_HEADS, DIM))

        fla_sets = [(s, i) for i, s in enumerate(sets)]

        def fla_mixer(item):
            s, i = item
            q, k, v, g, beta, z = split(s, i)
            o = _fla_recurrent_in_place(kernel, q, k, v, g, beta, fla_state[i])
            s["out"].copy_(reference.rmsnorm_gated(o, z, norm_weight, EPS).view(batch, 1, VALUE_DIM))

        record("gdn_decode", "fla", {"batch": batch}, time_graph(fla_mixer, fla_sets), nbytes=nbytes)

        prepared = [(split(s, i)[:5], i) for s, i in fla_sets]

        def fla_kernel(item):
            args, i = item
            _fla_recurrent_in_place(kernel, *args, fla_state[i])

        record("gdn_decode", "fla_recurrent_only", {"batch": batch}, time_graph(fla_kernel, prepared),
               nbytes=2 * batch * VALUE_HEADS * DIM * DIM * 4)
