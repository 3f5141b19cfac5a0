"""gdn_prefill: the Gated DeltaNet mixer between in_proj and out_proj for a prefill (conv1d + SiLU, gating, q/k
L2 norm, chunked gated delta rule from the slot's state, final states into the cache, gated RMSNorm).

ours: ops.gdn_prefill (three kernels: `prepare` with the conv inside, `state`, which computes the output too, and
the gated norm; on sm90a `state` is the wgmma kernel, and ours_portable times the mma.sync one that sm80 and
sm100 run). fla: the same mixer from flash-linear-attention at its fastest settings: its Triton causal_conv1d,
chunk_gated_delta_rule with the L2 norm, the gating and the beta sigmoid in its kernels (value-major state, as
ours), its fused gated RMSNorm.
fla_chunk_only: FLA's chunk_gated_delta_rule alone on prepared inputs (part of the work, not a peer). All
graph-replayed. Equal-length sequences run through FLA as a batch (its varlen path syncs with the host).

Bytes: the in_proj rows and ba read, the output written, both states read and written. FLOPs of the chunked
form per token and value head (64-token chunks, d = 128): K K^T, Q K^T, T K, T V, P V' (2 * 64 * d each) and
W S, Q S, K^T V' (2 * d * d each).
"""

from __future__ import annotations

import torch

from benchmarks.bench_gdn_decode import CHANNELS, DIM, EPS, KEY_HEADS, VALUE_DIM, VALUE_HEADS, WIDTH, random_layer
from benchmarks.timing import input_sets, time_graph
from qwen3next_cuda import ops

CHUNK = 64
CASES = ((4096, 1), (16384, 1), (65536, 1), (32768, 8))  # (tokens, seqs)


def _bytes(tokens: int, seqs: int) -> int:
    activations = tokens * (CHANNELS + VALUE_DIM + 2 * VALUE_HEADS + VALUE_DIM) * 2
    states = seqs * 2 * (VALUE_HEADS * DIM * DIM * 4 + (WIDTH - 1) * CHANNELS * 2)
    return activations + states


def _flops(tokens: int) -> int:
    return tokens * VALUE_HEADS * (5 * 2 * CHUNK * DIM + 3 * 2 * DIM * DIM)


def _fla():
    try:
        from fla.modules.causal_conv1d.ops import causal_conv1d
        from fla.modules.norm.fused_norm_gate import rms_norm_gated
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        return None
    return causal_conv1d, chunk_gated_delta_rule, rms_norm_gated


def make_inputs(randn, tokens: int, seqs: int) -> dict:
    """One input set of ``seqs`` sequences, ``tokens`` in all (``randn`` from ``random_layer``)."""
    return dict(qkvz=randn(tokens, CHANNELS + VALUE_DIM), ba=randn(tokens, 2 * VALUE_HEADS),
                conv=randn(seqs, WIDTH - 1, CHANNELS),
                state=randn(seqs, VALUE_HEADS, DIM, DIM, scale=0.05, dtype=torch.float32),
                out=torch.empty(tokens, VALUE_DIM, dtype=torch.bfloat16, device="cuda"))


def run_ours(s: dict, layer, slots: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
             portable: bool = False) -> None:
    """ops.gdn_prefill on an input set from make_inputs; ``layer`` from ``random_layer``."""
    conv_weight, A_log, dt_bias, norm_weight = layer
    ops.gdn_prefill(s["qkvz"], s["ba"], s["conv"], s["state"], slots, cu_seqlens, conv_weight, A_log, dt_bias,
                    norm_weight, EPS, out=s["out"], max_seqlen=max_seqlen, portable=portable)


def run(record) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    randn, layer = random_layer(gen)
    conv_weight, A_log, dt_bias, norm_weight = layer
    fla = _fla()

    for tokens, seqs in CASES:
        params = {"tokens": tokens, "seqs": seqs}
        length = tokens // seqs
        nbytes, flops = _bytes(tokens, seqs), _flops(tokens)
        cu_seqlens = torch.arange(0, tokens + 1, length, dtype=torch.int32, device="cuda")
        slots = torch.arange(seqs, dtype=torch.int32, device="cuda")

        sets = input_sets(lambda: make_inputs(randn, tokens, seqs), nbytes)

        def ours(s, portable=False):
            run_ours(s, layer, slots, cu_seqlens, length, portable)

        record("gdn_prefill", "ours", params, time_graph(ours, sets, replays=20), nbytes=nbytes, flops=flops)
        if ops.sm90a_kernels(torch.device("cuda")):  # the mma.sync state kernel that sm80 and sm100 run
            record("gdn_prefill", "ours_portable", params,
                   time_graph(lambda s: ours(s, portable=True), sets, replays=20), nbytes=nbytes, flops=flops)
        if fla is None:
            continue
        fla_conv, fla_chunk, fla_norm = fla
        fla_conv_states = [randn(seqs, CHANNELS, WIDTH) for _ in sets]

        def fla_mixer(item):
            s, conv_state = item
            qkvz = s["qkvz"].view(seqs, length, -1)
            qkv, _ = fla_conv(qkvz[..., :CHANNELS], conv_weight, initial_state=conv_state, output_final_state=True,
                              activation="silu", backend="triton")
            q, k, v = qkv.split([KEY_HEADS * DIM, KEY_HEADS * DIM, VALUE_DIM], dim=-1)
            b, a = s["ba"].view(seqs, length, -1).chunk(2, dim=-1)
            o, final = fla_chunk(q.unflatten(-1, (KEY_HEADS, DIM)), k.unflatten(-1, (KEY_HEADS, DIM)),
                                 v.unflatten(-1, (VALUE_HEADS, DIM)), a, b, initial_state=s["state"],
                                 output_final_state=True, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
                                 A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True, state_v_first=True)
            s["state"].copy_(final)
            z = qkvz[..., CHANNELS:].unflatten(-1, (VALUE_HEADS, DIM))
            s["out"].copy_(fla_norm(o, z, norm_weight, None, eps=EPS).view(tokens, VALUE_DIM))

        record("gdn_prefill", "fla", params, time_graph(fla_mixer, list(zip(sets, fla_conv_states)), replays=20),
               nbytes=nbytes, flops=flops)

        def prepared(s):
            qkvz = s["qkvz"].view(seqs, length, -1)
            q, k, v = (x.contiguous() for x in qkvz[..., :CHANNELS].split([KEY_HEADS * DIM, KEY_HEADS * DIM,
                                                                              VALUE_DIM], dim=-1))
            b, a = (x.contiguous() for x in s["ba"].view(seqs, length, -1).chunk(2, dim=-1))
            return (q.unflatten(-1, (KEY_HEADS, DIM)), k.unflatten(-1, (KEY_HEADS, DIM)),
                    v.unflatten(-1, (VALUE_HEADS, DIM)), a, b, s["state"])

        def fla_chunk_only(args):
            q, k, v, a, b, state = args
            fla_chunk(q, k, v, a, b, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True,
                      use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True,
                      state_v_first=True)

        record("gdn_prefill", "fla_chunk_only", params, time_graph(fla_chunk_only, [prepared(s) for s in sets],
                                                                   replays=20), flops=flops)
        del sets, fla_conv_states
