"""HybridCache (slots of preallocated per-layer state) and the varlen forward on it: allocation, reuse, sizing
from free memory, clear errors; prefill of prompts of different lengths, continued prefill and decode steps
against the reference model run on each whole sequence."""

from __future__ import annotations

import pytest
import torch

from qwen3next_cuda.cache import HybridCache
from qwen3next_cuda.reference import Qwen3NextReference
from qwen3next_cuda.tools.make_checkpoint import preset_config
from qwen3next_cuda.weights import load_weights
from utils import assert_close, prompts

CONFIG = preset_config("tiny")


@pytest.fixture(scope="module")
def reference(tiny, model) -> Qwen3NextReference:
    return Qwen3NextReference(model.config, load_weights(tiny, model.config, dtype=torch.float32, progress=False))


def test_slots_are_allocated_emptied_and_freed():
    cache = HybridCache(CONFIG, 3, 16, torch.float32, "cpu")
    slots = [cache.allocate(10) for _ in range(3)]
    assert sorted(slots) == [0, 1, 2] and cache.free_slots == 0
    layer = CONFIG.linear_attention_layers[0]
    cache.recurrent[layer][slots[1]].fill_(1.0)
    cache.conv[layer][slots[1]].fill_(1.0)
    cache.lengths[slots[1]] = 7
    with pytest.raises(ValueError, match="all 3 cache slots are in use"):
        cache.allocate(4)
    cache.free(slots[1])
    again = cache.allocate(16)
    assert again == slots[1] and cache.lengths[again] == 0
    assert not cache.recurrent[layer][again].any() and not cache.conv[layer][again].any()
    cache.free(again)
    with pytest.raises(ValueError, match="does not fit the cache's 16 per slot"):
        cache.allocate(17)
    with pytest.raises(ValueError, match="slot 5 is not an allocated slot"):
        cache.free(5)
    with pytest.raises(ValueError, match="is not an allocated slot"):
        cache.free(again)  # already given back above
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        HybridCache(CONFIG, 2, 0, torch.float32, "cpu")


def test_bytes_per_sequence_counts_every_tensor():
    cache = HybridCache(CONFIG, 2, 24, torch.bfloat16, "cpu")
    tensors = [*cache.key.values(), *cache.value.values(), *cache.conv.values(), *cache.recurrent.values()]
    total = sum(t.numel() * t.element_size() for t in tensors)
    assert HybridCache.bytes_per_sequence(CONFIG, 24, torch.bfloat16) * 2 == total


def test_sized_from_free_memory():
    per_sequence = HybridCache.bytes_per_sequence(CONFIG, 32, torch.float32)
    cache = HybridCache.fitting(CONFIG, 32, torch.float32, "cpu", free_bytes=5 * per_sequence, memory_fraction=0.9)
    assert cache.max_batch == 4 and cache.max_len == 32
    assert HybridCache.fitting(CONFIG, 32, torch.float32, "cpu", max_batch=2, free_bytes=10 * per_sequence).max_batch == 2
    with pytest.raises(ValueError, match="holds none: ask for fewer tokens"):
        HybridCache.fitting(CONFIG, 32, torch.float32, "cpu", free_bytes=per_sequence // 2)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        HybridCache.fitting(CONFIG, 32, torch.float32, "cpu")


def test_varlen_prefill_matches_reference(model, reference):
    batch = prompts([5, 1, 9, 64], seed=4)
    cache = model.new_cache(4, 70)
    slots = [cache.allocate(70) for _ in batch]
    logits = model.prefill(batch, slots, cache)
    for prompt, row in zip(batch, logits):
        assert_close(row, reference.forward(torch.tensor([prompt]))[0, -1], atol=1e-4, rtol=1e-4)
    assert [cache.lengths[slot] for slot in slots] == [5, 1, 9, 64]


def test_continued_prefill_and_decode_match_reference(model, reference):
    """A slot continued by a second prefill and by decode steps (beside a sequence that ends early and whose slot
    a new prompt then takes) gives the logits of the whole sequence."""
    first, second, late = prompts([7, 12, 6], seed=5)
    cache = model.new_cache(2, 40)
    a, b = cache.allocate(40), cache.allocate(40)
    model.prefill([first[:4], second], [a, b], cache)
    continued = model.prefill([first[4:]], [a], cache)
    tokens = [first, second]
    expected = reference.forward(torch.tensor([first]))[0, -1]
    assert_close(continued[0], expected, atol=1e-4, rtol=1e-4, name="continued prefill")
    steps = prompts([3, 3], seed=6)
    for step in range(3):
        logits = model.decode(torch.tensor([steps[0][step], steps[1][step]]), [a, b], cache)
        for row, seq in enumerate(tokens):
            seq.append(steps[row][step])
            assert_close(logits[row], reference.forward(torch.tensor([seq]))[0, -1], atol=1e-4, rtol=1e-4,
                         name=f"decode step {step}, sequence {row}")
    cache.free(b)
    c = cache.allocate(40)
    assert c == b
    fresh = model.prefill([late], [c], cache)
    assert_close(fresh[0], reference.forward(torch.tensor([late]))[0, -1], atol=1e-4, rtol=1e-4, name="reused slot")


def test_forward_errors(model):
    cache = model.new_cache(2, 8)
    slot = cache.allocate(8)
    with pytest.raises(ValueError, match="holds 0 tokens: 9 more exceed its 8"):
        model.prefill([list(range(9))], [slot], cache)
    with pytest.raises(ValueError, match="slot 1 is not an allocated slot"):
        model.prefill([[1, 2]], [1], cache)
    with pytest.raises(ValueError, match="repeat"):
        model.decode(torch.tensor([1, 2]), [slot, slot], cache)
    with pytest.raises(ValueError, match="one non-empty prompt per slot"):
        model.prefill([[]], [slot], cache)
