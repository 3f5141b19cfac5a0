"""Cache layouts shared by the decode and prefill kernels, addressed by slot (one slot per sequence).

Gated DeltaNet layer (per layer):
  * conv state ``[slots, K-1, C]`` in the activation dtype: the last K-1 inputs of the causal conv, oldest
    first, channels contiguous (C = 8192: ``[q 2048 | k 2048 | v 4096]``), so a token's channels are one
    contiguous row as the in_proj output is.
  * recurrent state ``[slots, Hv, dv, dk]`` fp32, value-major: row ``v`` of head ``h`` holds
    ``S[:, v]`` (128 contiguous keys). A thread group owning a value row reduces ``S^T k`` and ``S^T q``
    over its own registers and a few lanes, and a head's 64 KiB is one contiguous block.
    (``S^T`` of the reference's key-major ``[dk, dv]``.) Optionally bf16 (``state_dtype``): half the
    bytes per decode step; the math stays fp32 and the state is rounded once per call when stored. Its
    error does not accumulate (each step's decay forgets old rounding): about 2e-3 relative to the fp32
    state after 1000 steps, the size of one bf16 rounding.

Speculative verification (T tokens per sequence) does not write states: the decode mixer runs with
``update_state=False``, and once n tokens are accepted it runs again on those n tokens with
``update_state=True``. Rolling back is free; accepting costs one more pass over the state (2 x 2 MiB per
sequence per layer), the same as one decode step, instead of keeping T copies of the state.
"""

from __future__ import annotations

import torch

from .config import Qwen3NextConfig


def new_deltanet_states(config: Qwen3NextConfig, slots: int, dtype: torch.dtype, device: torch.device | str,
                        state_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed (conv_state in ``dtype``, recurrent_state in ``state_dtype``) of one DeltaNet layer."""
    if state_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"state_dtype must be torch.float32 or torch.bfloat16, got {state_dtype}")
    conv = torch.zeros(slots, config.linear_conv_kernel_dim - 1, config.linear_conv_dim, dtype=dtype, device=device)
    recurrent = torch.zeros(slots, config.linear_num_value_heads, config.linear_value_head_dim,
                            config.linear_key_head_dim, dtype=state_dtype, device=device)
    return conv, recurrent
