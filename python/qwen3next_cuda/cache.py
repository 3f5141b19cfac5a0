"""The hybrid cache and its layouts, shared by the decode and prefill kernels, addressed by slot (one slot per
sequence).

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


class HybridCache:
    """Preallocated per-layer state of up to ``max_batch`` sequences of up to ``max_len`` tokens each,
    addressed by slot: a request takes a free slot for its lifetime and gives it back.

    key[i], value[i]: [slots, max_len, Hkv, D] (``dtype``) for each full-attention layer i, a sequence's
    tokens at their positions; conv[i], recurrent[i]: the layouts above (``new_deltanet_states``) for each
    DeltaNet layer i; ``lengths[slot]``: the tokens a slot holds.
    """

    def __init__(self, config: Qwen3NextConfig, max_batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str, state_dtype: torch.dtype = torch.float32):
        for name, value in (("max_batch", max_batch), ("max_len", max_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        kv_shape = (max_batch, max_len, config.num_key_value_heads, config.head_dim)
        self.key = {i: torch.zeros(kv_shape, dtype=dtype, device=device) for i in config.full_attention_layers}
        self.value = {i: torch.zeros(kv_shape, dtype=dtype, device=device) for i in config.full_attention_layers}
        self.conv, self.recurrent = {}, {}
        for i in config.linear_attention_layers:
            self.conv[i], self.recurrent[i] = new_deltanet_states(config, max_batch, dtype, device, state_dtype)
        self.max_batch, self.max_len = max_batch, max_len
        self.lengths = [0] * max_batch
        self._free = list(range(max_batch - 1, -1, -1))  # popped from the end: slot 0 first

    @staticmethod
    def bytes_per_sequence(config: Qwen3NextConfig, max_len: int, dtype: torch.dtype,
                           state_dtype: torch.dtype = torch.float32) -> int:
        """Bytes one slot takes: its KV rows in every attention layer and both states of every DeltaNet layer."""
        element, state_element = torch.empty(0, dtype=dtype).element_size(), \
            torch.empty(0, dtype=state_dtype).element_size()
        kv = 2 * max_len * config.num_key_value_heads * config.head_dim * element
        conv = (config.linear_conv_kernel_dim - 1) * config.linear_conv_dim * element
        recurrent = config.linear_num_value_heads * config.linear_value_head_dim * config.linear_key_head_dim \
            * state_element
        return len(config.full_attention_layers) * kv + len(config.linear_attention_layers) * (conv + recurrent)

    @classmethod
    def fitting(cls, config: Qwen3NextConfig, max_len: int, dtype: torch.dtype, device: torch.device | str,
                max_batch: int | None = None, state_dtype: torch.dtype = torch.float32,
                memory_fraction: float = 0.9, free_bytes: int | None = None) -> "HybridCache":
        """As many slots of ``max_len`` tokens as ``memory_fraction`` of the device's free memory holds (at most
        ``max_batch``). ``free_bytes`` defaults to what the CUDA device reports; on a CPU it must be given."""
        device = torch.device(device)
        if free_bytes is None:
            if device.type != "cuda":
                raise ValueError("sizing a cache from free memory needs a CUDA device (or free_bytes)")
            free_bytes = torch.cuda.mem_get_info(device)[0]
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        per_sequence = cls.bytes_per_sequence(config, max_len, dtype, state_dtype)
        fits = int(free_bytes * memory_fraction) // per_sequence
        if fits < 1:
            raise ValueError(f"one sequence of {max_len} tokens needs {per_sequence / 2**30:.2f} GiB of cache, but "
                             f"{memory_fraction:.0%} of the free {free_bytes / 2**30:.2f} GiB holds none: ask for "
                             f"fewer tokens")
        return cls(config, fits if max_batch is None else min(fits, max_batch), max_len, dtype, device, state_dtype)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def allocate(self, tokens: int) -> int:
        """A free slot, emptied, for a sequence that will hold up to ``tokens`` tokens."""
        if tokens > self.max_len:
            raise ValueError(f"a sequence of {tokens} tokens does not fit the cache's {self.max_len} per slot")
        if not self._free:
            raise ValueError(f"all {self.max_batch} cache slots are in use: free one or build a larger cache")
        slot = self._free.pop()
        for conv, recurrent in zip(self.conv.values(), self.recurrent.values()):
            conv[slot].zero_()
            recurrent[slot].zero_()
        self.lengths[slot] = 0
        return slot

    def free(self, slot: int) -> None:
        """Gives ``slot`` back (its contents are dropped)."""
        self._check_allocated(slot)
        self._free.append(slot)

    def check_room(self, slot: int, tokens: int) -> None:
        """Raises unless ``slot`` is allocated and can take ``tokens`` more tokens."""
        self._check_allocated(slot)
        if self.lengths[slot] + tokens > self.max_len:
            raise ValueError(f"slot {slot} holds {self.lengths[slot]} tokens: {tokens} more exceed its "
                             f"{self.max_len}")

    def _check_allocated(self, slot: int) -> None:
        if not 0 <= slot < self.max_batch or slot in self._free:
            raise ValueError(f"slot {slot} is not an allocated slot of this cache")
