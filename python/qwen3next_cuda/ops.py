"""The one place that picks a CUDA kernel or the PyTorch reference for each op.

Every public function here has the signature and semantics of its namesake in
``qwen3next_cuda.reference``: model code calls ``ops.<name>`` and never branches on the device.
A kernel runs when the extension is built and the inputs are CUDA tensors of a supported dtype;
otherwise (CPU tensors, or no extension) the reference runs. Ops without a kernel yet are the
reference functions themselves.
"""

from __future__ import annotations

import functools
import json

import torch
import torch.nn.functional as F

from . import reference
from .reference import (  # noqa: F401  (ops without a kernel yet run the reference)
    append_kv,
    apply_partial_rope,
    attention,
    causal_conv1d,
    causal_conv1d_update,
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gdn_gating,
    router_topk,
)

try:
    from . import _C  # noqa: F401  (registers torch.ops.qwen3next.*)

    HAS_KERNELS = True
except ImportError:
    HAS_KERNELS = False

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _use_kernel(*tensors: torch.Tensor) -> bool:
    return HAS_KERNELS and all(t.is_cuda and t.dtype in _KERNEL_DTYPES for t in tensors)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The kernels read rows of contiguous elements (strided rows are fine): copy other layouts once."""
    return t if t.stride(-1) == 1 or t.size(-1) <= 1 else t.contiguous()


def build_info() -> dict | None:
    """Architectures and CUDA/CUTLASS versions of the built extension, or None if it is not built."""
    return json.loads(torch.ops.qwen3next.build_info()) if HAS_KERNELS else None


# ---- norms ------------------------------------------------------------------------------------


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _use_kernel(x, weight):
        return reference.rmsnorm(x, weight, eps)
    out = x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm(out, _rows(x), weight, eps)
    return out


def rmsnorm_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not _use_kernel(x, residual, weight):
        return reference.rmsnorm_add(x, residual, weight, eps)
    new_residual, out = x.new_empty(x.shape), x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm_add(new_residual, out, _rows(x), _rows(residual), weight, eps)
    return new_residual, out


def rmsnorm_gated(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _use_kernel(x, z, weight):
        return reference.rmsnorm_gated(x, z, weight, eps)
    out = x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm_gated(out, _rows(x), _rows(z), weight, eps)
    return out


# ---- Gated DeltaNet decode mixer -------------------------------------------------------------------

GDN_HEAD_DIM, GDN_MAX_TOKENS = 128, 8


def _gdn_decode_kernel_fits(qkvz: torch.Tensor, recurrent_state: torch.Tensor, slots: torch.Tensor) -> bool:
    """The kernel's scope: 16-bit activations, fp32 or bf16 state, 128-wide heads, up to 8 tokens, clusters (sm90+)."""
    return (HAS_KERNELS and qkvz.is_cuda and qkvz.dtype in (torch.bfloat16, torch.float16)
            and recurrent_state.dtype in (torch.float32, torch.bfloat16)
            and recurrent_state.shape[-2:] == (GDN_HEAD_DIM, GDN_HEAD_DIM) and qkvz.shape[1] <= GDN_MAX_TOKENS
            and slots.dtype == torch.int32 and torch.cuda.get_device_capability(qkvz.device)[0] >= 9)


def gdn_decode(qkvz: torch.Tensor, ba: torch.Tensor, conv_state: torch.Tensor, recurrent_state: torch.Tensor,
               slots: torch.Tensor, conv_weight: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
               norm_weight: torch.Tensor, eps: float, out: torch.Tensor | None = None,
               update_state: bool = True) -> torch.Tensor:
    if not _gdn_decode_kernel_fits(qkvz, recurrent_state, slots):
        return reference.gdn_decode(qkvz, ba, conv_state, recurrent_state, slots, conv_weight, A_log, dt_bias,
                                    norm_weight, eps, out, update_state)
    fresh = out is None  # its padding rows zeroed by the kernel (a fill would be one more launch in the chain)
    if fresh:
        out = qkvz.new_empty(qkvz.shape[0], qkvz.shape[1], recurrent_state.shape[1] * GDN_HEAD_DIM)
    torch.ops.qwen3next.gdn_decode(out, conv_state, recurrent_state, qkvz, ba, slots, conv_weight, A_log, dt_bias,
                                   norm_weight, eps, update_state, fresh)
    return out


# ---- causal conv1d over a varlen batch (prefill) -------------------------------------------------


def causal_conv1d_varlen(x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, slots: torch.Tensor,
                         cu_seqlens: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    if not (HAS_KERNELS and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
            and slots.dtype == torch.int32 and cu_seqlens.dtype == torch.int32):
        return reference.causal_conv1d_varlen(x, weight, conv_state, slots, cu_seqlens, out)
    if out is None:
        out = x.new_zeros(x.shape[0], weight.shape[0])
    torch.ops.qwen3next.causal_conv1d_varlen(out, conv_state, _rows(x), weight, cu_seqlens, slots)
    return out


# ---- Gated DeltaNet prefill (the conv, the chunked delta rule and the gated norm) -----------------------

GDN_PREFILL_SHARED_BYTES = 149504  # the state kernel's two stages (StateSmem<2>, csrc/gdn/gdn_prefill_kernel.cuh)


def _gdn_prefill_kernel_fits(qkvz: torch.Tensor, recurrent_state: torch.Tensor, slots: torch.Tensor,
                             cu_seqlens: torch.Tensor) -> bool:
    """The kernels' scope: bf16 activations, fp32 state, 128-wide heads, sm80+ with 146 KiB of shared memory per
    block (sm80, sm90, sm100; not sm86 / sm89)."""
    return (HAS_KERNELS and qkvz.is_cuda and qkvz.dtype == torch.bfloat16 and recurrent_state.dtype == torch.float32
            and recurrent_state.shape[-2:] == (GDN_HEAD_DIM, GDN_HEAD_DIM) and slots.dtype == torch.int32
            and cu_seqlens.dtype == torch.int32 and torch.cuda.get_device_capability(qkvz.device)[0] >= 8
            and torch.cuda.get_device_properties(qkvz.device).shared_memory_per_block_optin >= GDN_PREFILL_SHARED_BYTES)


def gdn_prefill(qkvz: torch.Tensor, ba: torch.Tensor, conv_state: torch.Tensor, recurrent_state: torch.Tensor,
                slots: torch.Tensor, cu_seqlens: torch.Tensor, conv_weight: torch.Tensor, A_log: torch.Tensor,
                dt_bias: torch.Tensor, norm_weight: torch.Tensor, eps: float, out: torch.Tensor | None = None,
                max_seqlen: int | None = None, portable: bool = False) -> torch.Tensor:
    """``max_seqlen``: the longest sequence, if the caller knows it (else read from cu_seqlens, a host sync);
    ``portable``: the mma.sync state kernel even on sm90 (where a 90a build runs the wgmma one)."""
    if not _gdn_prefill_kernel_fits(qkvz, recurrent_state, slots, cu_seqlens):
        return reference.gdn_prefill(qkvz, ba, conv_state, recurrent_state, slots, cu_seqlens, conv_weight, A_log,
                                     dt_bias, norm_weight, eps, out, max_seqlen)
    if qkvz.stride(0) % 8:  # the kernels read 16-byte rows; a slice of a fused projection (ba after it) may break that
        qkvz = qkvz.contiguous()
    if out is None:
        out = qkvz.new_zeros(qkvz.shape[0], recurrent_state.shape[1] * GDN_HEAD_DIM)
    if max_seqlen is None:
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if slots.numel() else 0
    torch.ops.qwen3next.gdn_prefill(out, conv_state, recurrent_state, qkvz, _rows(ba), cu_seqlens, slots, conv_weight,
                                    A_log, dt_bias, norm_weight, eps, max_seqlen, portable)
    return out


# ---- sparse MoE block -----------------------------------------------------------------------------

MOE_DECODE_MAX_TOKENS = 256  # the few-token kernels stream each selected expert once per 64 of its tokens


def _moe_decode_fits(x: torch.Tensor, weights: reference.MoEWeights, top_k: int) -> bool:
    """The few-token kernels' scope: bf16, up to MOE_DECODE_MAX_TOKENS tokens, a multiple of 16 experts up to 512,
    top_k <= 16, the hidden size a multiple of 128, the widths of 32."""
    experts, double_width, hidden = weights.gate_up.shape
    return (HAS_KERNELS and x.is_cuda and x.dim() == 2 and 0 < x.shape[0] <= MOE_DECODE_MAX_TOKENS
            and all(t.dtype == torch.bfloat16 for t in (x, *weights)) and experts <= 512 and experts % 16 == 0
            and 0 < top_k <= min(16, experts)
            and hidden % 128 == 0 and double_width % (2 * reference.GATE_UP_BLOCK) == 0
            and weights.shared_gate.shape[0] % 32 == 0)


def _moe_grouped_fits(x: torch.Tensor, weights: reference.MoEWeights) -> bool:
    """The many-token path's scope: bf16 on an sm80 or later GPU (our grouped GEMM kernels; torch._grouped_mm
    without them, on sm90), sizes in multiples of 16."""
    experts, double_width, hidden = weights.gate_up.shape
    capability = torch.cuda.get_device_capability(x.device) if x.is_cuda else (0, 0)
    return ((HAS_KERNELS and capability >= (8, 0) or capability == (9, 0) and hasattr(torch, "_grouped_mm"))
            and x.dim() == 2 and all(t.dtype == torch.bfloat16 for t in (x, *weights))
            and hidden % 16 == 0 and double_width % (2 * reference.GATE_UP_BLOCK) == 0)


@functools.cache
def _has_sm90a_kernels() -> bool:
    return HAS_KERNELS and "90a" in build_info()["cuda_archs"].split(",")


def sm90a_kernels(device: torch.device) -> bool:
    """Whether the wgmma kernels (the grouped GEMM's, the attention prefill's) run on ``device``: an sm90 GPU and a
    build with 90a."""
    return torch.cuda.get_device_capability(device) == (9, 0) and _has_sm90a_kernels()


def _grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """out[rows of group e] = a[rows of e] @ b[e]^T, group e's rows ending at offsets[e]: our grouped GEMM (the
    TMA + wgmma kernel on sm90 when built, the mma.sync one elsewhere), torch._grouped_mm without the extension."""
    if not (HAS_KERNELS and a.is_cuda):
        return torch._grouped_mm(a, b.transpose(1, 2), offs=offsets)
    out = a.new_empty(a.shape[0], b.shape[1])
    torch.ops.qwen3next.moe_grouped_gemm(out, a.contiguous(), b, offsets, not sm90a_kernels(a.device))
    return out


MOE_GROUPED_CHUNK = 8192  # tokens per pass of the many-token path: bounds its pair buffers (~1.5 GB at 8192)


def _moe_grouped(x: torch.Tensor, w: reference.MoEWeights, top_k: int, norm_topk_prob: bool) -> torch.Tensor:
    """Many tokens (prefill): the (token, expert) pairs sorted by expert on the device, the expert GEMMs grouped
    (`_grouped_mm`), each pair's activation scaled by its route weight (the down projection is linear, so the
    combine is a sum), the pairs summed back per token in a fixed order (deterministic). No host sync. Our kernels
    on a GPU (on sm90a the gate_up GEMM with SiLU·up in its epilogue, elsewhere moe_swiglu after it; moe_combine),
    torch ops on the CPU."""
    tokens, hidden = x.shape
    experts = w.gate_up.shape[0]
    kernels = HAS_KERNELS and x.is_cuda
    router_weights, ids = reference.router_topk(F.linear(x, w.router), top_k, norm_topk_prob)
    order = ids.flatten().argsort(stable=True)
    counts = torch.zeros(experts, dtype=torch.int32, device=x.device).scatter_add_(
        0, ids.flatten(), torch.ones_like(ids.flatten(), dtype=torch.int32))
    offsets = counts.cumsum(0, dtype=torch.int32)
    pair_x = x[order // top_k]
    scale = router_weights.flatten()[order]
    if kernels and sm90a_kernels(x.device):
        act = x.new_empty(pair_x.shape[0], w.gate_up.shape[1] // 2)
        torch.ops.qwen3next.moe_grouped_gemm_swiglu(act, pair_x, w.gate_up, offsets, scale)
    elif kernels:
        gate_up = _grouped_mm(pair_x, w.gate_up, offsets)
        act = gate_up.new_empty(gate_up.shape[0], gate_up.shape[1] // 2)
        torch.ops.qwen3next.moe_swiglu(act, gate_up, scale)
    else:
        gate, up = reference.split_gate_up(_grouped_mm(pair_x, w.gate_up, offsets), dim=-1)
        act = F.silu(gate) * up * scale[:, None].to(x.dtype)
    expert_out = _grouped_mm(act, w.down, offsets)
    pair_of = torch.empty_like(order)
    pair_of[order] = torch.arange(order.numel(), device=x.device)  # (token, k) -> its row in the sorted order
    shared = F.linear(F.silu(F.linear(x, w.shared_gate)) * F.linear(x, w.shared_up), w.shared_down)
    gate = F.linear(x, w.shared_expert_gate)
    if kernels:
        out = torch.empty_like(x)
        torch.ops.qwen3next.moe_combine(out, expert_out, pair_of.view(tokens, top_k), shared, gate)
        return out
    routed = expert_out[pair_of].view(tokens, top_k, hidden).sum(1, dtype=torch.float32)
    return (routed + torch.sigmoid(gate.float()) * shared.float()).to(x.dtype)


def moe(x: torch.Tensor, weights: reference.MoEWeights, top_k: int, norm_topk_prob: bool) -> torch.Tensor:
    if not _moe_decode_fits(x, weights, top_k):
        if _moe_grouped_fits(x, weights):
            return torch.cat([_moe_grouped(chunk, weights, top_k, norm_topk_prob)
                              for chunk in x.split(MOE_GROUPED_CHUNK)])
        return reference.moe(x, weights, top_k, norm_topk_prob)
    x = x.contiguous()
    out = torch.empty_like(x)
    torch.ops.qwen3next.moe_decode(out, x, weights.router, weights.gate_up, weights.down, weights.shared_gate,
                                   weights.shared_up, weights.shared_down, weights.shared_expert_gate, top_k,
                                   norm_topk_prob)
    return out


# ---- gated attention ------------------------------------------------------------------------------

ATTENTION_HEAD_DIM = 256


@functools.cache
def attention_decode_fits(device: torch.device, rows: int) -> bool:
    """Whether the split-context decode kernel takes ``rows`` query rows per KV head (query heads per KV head x tokens
    per sequence) on ``device``: at most 64, and its shared memory fits (on an A100, 5-8 tokens per sequence at 8 query
    heads per KV head do not; the prefill kernel takes those)."""
    device = torch.device(device)
    return torch.ops.qwen3next.attention_decode_fits(
        torch.cuda.current_device() if device.index is None else device.index, rows)


def attention_prepass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      q_norm_weight: torch.Tensor, k_norm_weight: torch.Tensor, eps: float, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slots: torch.Tensor, cu_seqlens: torch.Tensor,
                      context_lens: torch.Tensor) -> torch.Tensor:
    rotary_dim = cos.shape[-1]
    kernel = (HAS_KERNELS and q.is_cuda and q.shape[-1] == ATTENTION_HEAD_DIM and q.shape[0] > 0
              and all(t.dtype == torch.bfloat16
                      for t in (q, k, v, q_norm_weight, k_norm_weight, key_cache, value_cache))
              and cos.dtype == sin.dtype == torch.float32 and rotary_dim % 16 == 0 and rotary_dim <= q.shape[-1]
              and (rotary_dim // 16) & (rotary_dim // 16 - 1) == 0 and slots.dtype == torch.int32
              and cu_seqlens.dtype == torch.int32 and context_lens.dtype == torch.int32)
    if not kernel:
        return reference.attention_prepass(q, k, v, cos, sin, q_norm_weight, k_norm_weight, eps, key_cache,
                                           value_cache, slots, cu_seqlens, context_lens)
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    torch.ops.qwen3next.attention_prepass(q_out, key_cache, value_cache, _rows(q), _rows(k), _rows(v),
                                          cos.contiguous(), sin.contiguous(), q_norm_weight, k_norm_weight, slots,
                                          cu_seqlens, context_lens, eps)
    return q_out


def attention_varlen(q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slots: torch.Tensor,
                     cu_seqlens: torch.Tensor, context_lens: torch.Tensor, scale: float | None = None,
                     gate: torch.Tensor | None = None, max_seqlen: int | None = None,
                     max_context: int | None = None, portable: bool = False) -> torch.Tensor:
    """The kernels run for bf16 with a gate and ``max_seqlen`` given: the split-context decode kernel when every
    sequence has ``max_seqlen`` tokens and the head group's rows fit it (``max_context``, default the cache's
    length, sizes its split), the flash prefill kernel otherwise (on wgmma where ``sm90a_kernels``, unless
    ``portable``: then on mma.sync, as on sm80 and sm100)."""
    batch = slots.shape[0]
    kernel = (HAS_KERNELS and q.is_cuda and gate is not None and max_seqlen is not None and batch > 0
              and q.shape[-1] == ATTENTION_HEAD_DIM
              and all(t.dtype == torch.bfloat16 for t in (q, gate, key_cache, value_cache))
              and slots.dtype == torch.int32 and cu_seqlens.dtype == torch.int32
              and context_lens.dtype == torch.int32 and q.shape[1] % key_cache.shape[2] == 0)
    if not kernel:
        return reference.attention_varlen(q, key_cache, value_cache, slots, cu_seqlens, context_lens, scale, gate)
    q = q.contiguous()
    out = torch.empty_like(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if (q.shape[0] == max_seqlen * batch
            and attention_decode_fits(q.device, q.shape[1] // key_cache.shape[2] * max_seqlen)):
        torch.ops.qwen3next.attention_decode(out.view(q.shape[0], -1), q, _rows(gate), key_cache, value_cache, slots,
                                             context_lens, scale, max_context or key_cache.shape[1])
    else:
        torch.ops.qwen3next.attention_prefill(out.view(q.shape[0], -1), q, _rows(gate), key_cache, value_cache,
                                              slots, cu_seqlens, context_lens, scale, max_seqlen, portable)
    return out


# ---- projections ------------------------------------------------------------------------------


# The few-token kernel's limits (csrc/linear/decode_linear.h): rows (at 4, cuBLAS is the faster: benchmarks/NOTES.md),
# and rows x K, x's rows in fp32 in 64 KiB of shared memory.
DECODE_LINEAR_MAX_TOKENS, DECODE_LINEAR_MAX_ELEMENTS = 2, 16384


def _decode_linear_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The few-token kernel's cases: bf16, its limits above, K whole 16-byte vectors, 16-byte aligned rows."""
    tokens, k = x.shape
    return (_use_kernel(x, weight) and x.dtype == weight.dtype == torch.bfloat16
            and 0 < tokens <= DECODE_LINEAR_MAX_TOKENS and k % 8 == 0 and tokens * k <= DECODE_LINEAR_MAX_ELEMENTS
            and x.stride(-1) == 1 and weight.is_contiguous()
            and (tokens == 1 or x.stride(0) % 8 == 0) and x.data_ptr() % 16 == 0 and weight.data_ptr() % 16 == 0)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x[..., K] weight[M, K]^T: one or two bf16 rows (decode) on our chained kernel, anything else through
    cuBLAS."""
    flat = x.reshape(-1, x.shape[-1])
    if not _decode_linear_fits(flat, weight):
        return F.linear(x, weight)
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    torch.ops.qwen3next.decode_linear(out.view(flat.shape[0], -1), flat, weight)
    return out


# ---- RoPE tables ----------------------------------------------------------------------------------


def rope_cos_sin(positions: torch.Tensor, config, frequencies: tuple[torch.Tensor, float] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    if frequencies is None or not (HAS_KERNELS and positions.is_cuda and frequencies[0].is_cuda
                                   and positions.dtype in (torch.int32, torch.int64)
                                   and frequencies[0].dtype == torch.float32):
        return reference.rope_cos_sin(positions, config, frequencies)
    inv_freq, scale = frequencies
    cos = torch.empty(*positions.shape, 2 * inv_freq.shape[0], dtype=torch.float32, device=positions.device)
    sin = torch.empty_like(cos)
    torch.ops.qwen3next.rope_cos_sin(cos.view(-1, cos.shape[-1]), sin.view(-1, cos.shape[-1]),
                                     positions.contiguous().view(-1), inv_freq.contiguous(), scale)
    return cos, sin


# ---- fake (meta) implementations: the ops only write their preallocated outputs ------------------

if HAS_KERNELS:

    @torch.library.register_fake("qwen3next::rmsnorm")
    def _(out, x, weight, eps):
        return None

    @torch.library.register_fake("qwen3next::rmsnorm_add")
    def _(residual_out, out, x, residual, weight, eps):
        return None

    @torch.library.register_fake("qwen3next::rmsnorm_gated")
    def _(out, x, z, weight, eps):
        return None

    @torch.library.register_fake("qwen3next::gdn_decode")
    def _(out, conv_state, recurrent_state, qkvz, ba, slots, conv_weight, A_log, dt_bias, norm_weight, eps,
          update_state, zero_padding):
        return None

    @torch.library.register_fake("qwen3next::gdn_prefill")
    def _(out, conv_state, recurrent_state, qkvz, ba, cu_seqlens, slots, conv_weight, A_log, dt_bias, norm_weight, eps,
          max_seqlen, portable=False):
        return None

    @torch.library.register_fake("qwen3next::causal_conv1d_varlen")
    def _(out, conv_state, x, weight, cu_seqlens, slots):
        return None

    @torch.library.register_fake("qwen3next::moe_decode")
    def _(out, x, router, gate_up, down, shared_gate, shared_up, shared_down, shared_expert_gate, top_k,
          norm_topk_prob):
        return None

    @torch.library.register_fake("qwen3next::moe_grouped_gemm")
    def _(out, a, b, offsets, portable):
        return None

    @torch.library.register_fake("qwen3next::moe_swiglu")
    def _(act, gate_up, scale):
        return None

    @torch.library.register_fake("qwen3next::moe_combine")
    def _(out, routed, pair_of, shared, gate):
        return None

    @torch.library.register_fake("qwen3next::decode_linear")
    def _(out, x, weight):
        return None

    @torch.library.register_fake("qwen3next::rope_cos_sin")
    def _(cos, sin, positions, inv_freq, scale):
        return None

    @torch.library.register_fake("qwen3next::attention_prepass")
    def _(q_out, key_cache, value_cache, q, k, v, cos, sin, q_norm_weight, k_norm_weight, slots, cu_seqlens,
          context_lens, eps):
        return None

    @torch.library.register_fake("qwen3next::attention_prefill")
    def _(out, q, gate, key_cache, value_cache, slots, cu_seqlens, context_lens, scale, max_seqlen, portable=False):
        return None

    @torch.library.register_fake("qwen3next::moe_grouped_gemm_swiglu")
    def _(out, a, b, offsets, scale):
        return None

    @torch.library.register_fake("qwen3next::attention_decode")
    def _(out, q, gate, key_cache, value_cache, slots, context_lens, scale, max_context):
        return None

