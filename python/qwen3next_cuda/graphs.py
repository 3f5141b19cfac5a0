"""CUDA graphs of the decode step (one new token per sequence), one per batch bucket.

The buckets are captured largest first into one memory pool. A replay runs the whole step, embedding to
logits (and, with a sampler, the next tokens), from static input buffers: the token ids, the slots (-1 on the
bucket's padding rows, which every kernel skips), the positions and the context lengths. Batches above the largest
bucket run eagerly. The cache's tensors (and a sampler's) are updated in place, so a graph stays valid as long as
they live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import ops
from .cache import HybridCache

# Powers of two up to the few-token MoE kernels' limit (256): a larger batch would leave them for the grouped path.
BUCKETS = tuple(1 << i for i in range(ops.MOE_DECODE_MAX_TOKENS.bit_length()))


def capturable(model) -> bool:
    """Whether every op of the model's decode step has a graph-safe kernel at its shapes and dtype: the built
    extension, bf16 on an sm90+ GPU (the DeltaNet decode kernel's clusters), 128-wide DeltaNet heads, 256-wide
    attention heads with at most 64 query heads per KV head, and the few-token MoE kernels' limits (a multiple of 16
    experts up to 512, top-k <= 16, hidden size a multiple of 128, widths of 32). Elsewhere the step runs reference
    ops, which sync with the host."""
    config = model.config
    return (ops.HAS_KERNELS and model.device.type == "cuda" and model.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(model.device)[0] >= 9 and config.head_dim == 256
            and config.linear_key_head_dim == 128 and config.linear_value_head_dim == 128
            and config.num_attention_heads // config.num_key_value_heads <= 64
            and config.num_experts <= 512 and config.num_experts % 16 == 0 and config.num_experts_per_tok <= 16
            and config.hidden_size % 128 == 0
            and all(size % 32 == 0 for size in (config.hidden_size, config.moe_intermediate_size,
                                                 config.shared_expert_intermediate_size)))


class DecodeGraphs:
    """The decode step of ``model`` on ``cache``, captured per bucket (those of ``buckets``, the largest cut to the
    cache's batch). ``decode(tokens, slots)`` is ``model.decode(tokens, slots, cache)`` by replay; with a
    ``sampler`` (logits [B, V] and the step's slots [B], a device tensor with -1 on padding rows -> tokens [B];
    e.g. a ``sampling.Sampler``, penalties included) the graphs also choose the next tokens: ``decode_sample`` is
    ``model.decode(tokens, slots, cache, sampler)`` by replay. A ``generator`` the sampler draws from is
    registered with the graphs, so that replays advance it as eager calls would."""

    def __init__(self, model, cache: HybridCache, buckets: Sequence[int] = BUCKETS,
                 sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None):
        if not capturable(model):
            raise ValueError("CUDA-graph decode needs the model in bfloat16 on a GPU with kernel-sized heads "
                             "(128-wide DeltaNet heads, 256-wide attention heads)")
        self.model, self.cache, self._sampler = model, cache, sampler
        self.buckets = sorted({min(b, cache.max_batch) for b in buckets if b > 0})  # the cache's batch tops them
        largest, device = self.buckets[-1], model.device
        self._tokens = torch.zeros(largest, dtype=torch.long, device=device)
        # A bucket's slots, positions and context lengths: a [3, bucket] block at the front of one buffer, filled
        # by one copy from the pinned staging buffer laid out alike (each copy is a step of the replay's chain)
        self._inputs = torch.empty(3 * largest, dtype=torch.int32, device=device)
        self._staging = torch.empty(3 * largest, dtype=torch.int32).pin_memory()
        self._cu_seqlens = torch.arange(largest + 1, dtype=torch.int32, device=device)
        self._staged = torch.cuda.Event()  # the last copy out of the staging buffer is done
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}
        self._chosen: dict[int, torch.Tensor] = {}

        # Warm-up on a side stream (lazy initialisation, allocator growth; every slot is padding, so the cache and
        # the sampler's slot rows are untouched), then capture, largest first so the smaller graphs reuse the pool's
        # blocks. The generator's state is put back: only replays draw from it.
        rng_state = generator.get_state() if generator is not None else None
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for bucket in reversed(self.buckets):
                _set_padding(self._inputs[:3 * bucket].view(3, bucket))
                self._step(bucket)
        torch.cuda.current_stream(device).wait_stream(stream)
        pool = torch.cuda.graph_pool_handle()
        for bucket in reversed(self.buckets):
            graph = torch.cuda.CUDAGraph()
            if generator is not None:
                graph.register_generator_state(generator)
            with torch.cuda.graph(graph, pool=pool):
                self._logits[bucket], self._chosen[bucket] = self._step(bucket)
            self._graphs[bucket] = graph
        if generator is not None:
            generator.set_state(rng_state)

    def _step(self, bucket: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        from .model import _Batch

        slots, positions, context_lens = self._inputs[:3 * bucket].view(3, bucket).unbind(0)
        batch = _Batch(positions, self._cu_seqlens[:bucket + 1], slots, context_lens, max_length=1,
                       max_context=self.cache.max_len)
        logits = self.model._step(self._tokens[:bucket], batch, self.cache, all_logits=False)
        return logits, self._sampler(logits, slots) if self._sampler is not None else None

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
        """One new token per slot: ``tokens`` [B] -> fp32 logits [B, vocab] (a view of the graph's output, valid
        until the next replay of the same bucket)."""
        bucket, n = self._replay(tokens, slots)
        return self.model.decode(tokens, list(slots), self.cache) if bucket is None else self._logits[bucket][:n]

    @torch.no_grad()
    def decode_sample(self, tokens: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
        """As :meth:`decode`, then the sampler: the next tokens [B] (int64)."""
        if self._sampler is None:
            raise ValueError("decode_sample needs the graphs captured with a sampler")
        bucket, n = self._replay(tokens, slots)
        if bucket is None:
            return self.model.decode(tokens, list(slots), self.cache, self._sampler)
        return self._chosen[bucket][:n]

    def _replay(self, tokens: torch.Tensor, slots: Sequence[int]) -> tuple[int | None, int]:
        """Fills the buffers and replays the smallest bucket that holds the batch: (bucket, batch), or (None,
        batch) and nothing done when none does."""
        slots = list(slots)
        bucket = next((b for b in self.buckets if b >= len(slots)), None)
        if bucket is None:
            return None, len(slots)
        if tokens.dim() != 1 or tokens.numel() != len(slots):
            raise ValueError(f"decode needs one token per slot, got tokens {tuple(tokens.shape)} for {len(slots)} "
                             f"slots")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots {slots} repeat: each sequence needs its own slot")
        for slot in slots:
            self.cache.check_room(slot, 1)
        n = len(slots)
        self._staged.synchronize()  # the previous step's copy has left the staging buffer
        staged = self._staging[:3 * bucket].view(3, bucket)
        _set_padding(staged)
        lengths = [self.cache.lengths[slot] for slot in slots]
        staged[0, :n] = torch.tensor(slots, dtype=torch.int32)
        staged[1, :n] = torch.tensor(lengths, dtype=torch.int32)
        staged[2, :n] = staged[1, :n] + 1
        self._inputs[:3 * bucket].copy_(self._staging[:3 * bucket], non_blocking=True)
        self._staged.record()
        self._tokens[:n].copy_(tokens, non_blocking=True)
        self._graphs[bucket].replay()
        for slot in slots:
            self.cache.lengths[slot] += 1
        return bucket, n


def _set_padding(block: torch.Tensor) -> None:
    """A bucket's [3, bucket] inputs all padding: slot -1, position 0, context length 1."""
    block[0].fill_(-1)
    block[1].zero_()
    block[2].fill_(1)
