"""Pure-PyTorch reference of every Qwen3-Next op and of the whole model (CPU or GPU, fp32 or bf16).

The ground truth our kernels are tested against; it matches ``transformers.Qwen3NextForCausalLM``.
``qwen3next_cuda.ops`` exposes the same op names, so the model composition runs on either namespace.
"""

from .attention import append_kv, attention, attention_prepass, attention_varlen
from .conv import causal_conv1d, causal_conv1d_update, causal_conv1d_varlen
from .linear import linear
from .gdn import gated_delta_rule_chunked, gated_delta_rule_recurrent, gdn_decode, gdn_gating, gdn_prefill
from .model import HybridCache, Qwen3NextReference
from .moe import (GATE_UP_BLOCK, MoEWeights, gate_up_halves, interleave_gate_up, mix_experts, moe, router_topk,
                  split_gate_up)
from .norm import rmsnorm, rmsnorm_add, rmsnorm_gated
from .rope import apply_partial_rope, rope_cos_sin, rope_inv_freq

__all__ = [
    "append_kv",
    "attention",
    "attention_prepass",
    "attention_varlen",
    "causal_conv1d",
    "causal_conv1d_update",
    "causal_conv1d_varlen",
    "gated_delta_rule_chunked",
    "gated_delta_rule_recurrent",
    "gdn_decode",
    "gdn_gating",
    "gdn_prefill",
    "linear",
    "GATE_UP_BLOCK",
    "MoEWeights",
    "gate_up_halves",
    "interleave_gate_up",
    "moe",
    "mix_experts",
    "router_topk",
    "split_gate_up",
    "rmsnorm",
    "rmsnorm_add",
    "rmsnorm_gated",
    "apply_partial_rope",
    "rope_cos_sin",
    "rope_inv_freq",
    "HybridCache",
    "Qwen3NextReference",
]
