"""Sampling: the filters keep exactly what transformers' warpers keep, draws follow the filtered
distribution, seeds reproduce, the penalties' masks follow cache slots, bad parameters and generation configs are
rejected."""

from __future__ import annotations

import json

import pytest
import torch

from qwen3next_cuda.sampling import (GenerationConfig, Sampler, SamplingParams, apply_penalties, filter_logits,
                                     sample)

FILTERS = [
    dict(temperature=0.7),
    dict(temperature=0.7, top_k=20, top_p=0.8),  # Qwen3-Next Instruct
    dict(temperature=0.6, top_k=20, top_p=0.95),  # Qwen3-Next Thinking
    dict(top_k=1),
    dict(top_p=0.3),
    dict(min_p=0.05),
    dict(temperature=1.3, top_k=50, top_p=0.9, min_p=0.1),
]


@pytest.mark.parametrize("kwargs", FILTERS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_filters_match_transformers(kwargs):
    warpers = pytest.importorskip("transformers.generation.logits_process")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1000, generator=gen) * 3
    params = SamplingParams(do_sample=True, **kwargs)
    chain = [warpers.TemperatureLogitsWarper(params.temperature)]
    if params.top_k:
        chain.append(warpers.TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        chain.append(warpers.TopPLogitsWarper(params.top_p))
    if params.min_p:
        chain.append(warpers.MinPLogitsWarper(params.min_p))
    expected = logits.clone()
    for warper in chain:
        expected = warper(None, expected)
    ours = filter_logits(logits, params)
    assert torch.equal(ours.isinf(), expected.isinf()), "different tokens kept"
    kept = ~ours.isinf()
    assert kept.sum(-1).min() >= 1
    torch.testing.assert_close(ours[kept], expected[kept])


def test_greedy_is_argmax():
    logits = torch.randn(7, 301, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample(logits, SamplingParams()), logits.argmax(-1))
    # do_sample=False ignores the filters and the generator
    assert torch.equal(sample(logits, SamplingParams(temperature=0.1, top_k=3)), logits.argmax(-1))


def test_draws_follow_filtered_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -3.0])
    params = SamplingParams(do_sample=True, temperature=0.8, top_k=5, top_p=0.9)
    probs = filter_logits(logits[None], params).softmax(-1)[0]
    draws = sample(logits.expand(200_000, -1), params, torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=logits.numel()).double() / draws.numel()
    assert freq[probs == 0].sum() == 0, "a filtered-out token was drawn"
    assert (freq - probs).abs().max() < 0.005, f"frequencies {freq.tolist()} vs probabilities {probs.tolist()}"


def test_seeded_draws_reproduce():
    logits = torch.randn(4, 5000, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(do_sample=True, top_p=0.99)
    first = [sample(logits, params, torch.Generator().manual_seed(9)) for _ in range(2)]
    repeated = sample(logits[:1].expand(64, -1), params, torch.Generator().manual_seed(10))
    assert torch.equal(first[0], first[1])
    assert len(repeated.unique()) > 1, "identical rows must draw independently"


def test_penalties_match_transformers_and_openai():
    processors = pytest.importorskip("transformers.generation.logits_process")
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 500, generator=gen) * 3
    prompt = torch.randint(0, 500, (3, 20), generator=gen)
    output = torch.randint(0, 500, (3, 6), generator=gen)
    seen = torch.zeros(3, 500, dtype=torch.bool).scatter_(1, torch.cat([prompt, output], 1), True)
    generated = torch.zeros(3, 500, dtype=torch.bool).scatter_(1, output, True)
    params = SamplingParams(repetition_penalty=1.3)
    expected = processors.RepetitionPenaltyLogitsProcessor(1.3)(torch.cat([prompt, output], 1), logits.clone())
    torch.testing.assert_close(apply_penalties(logits, seen, generated, params), expected)
    params = SamplingParams(presence_penalty=0.5)
    torch.testing.assert_close(apply_penalties(logits, seen, generated, params), logits - 0.5 * generated.float())
    before = logits.clone()
    assert torch.equal(apply_penalties(logits, seen, generated, SamplingParams()), before)
    assert torch.equal(logits, before)  # the input is not modified in place


def test_sampler_marks_the_chosen_tokens_of_the_step_slots():
    """The masks are per cache slot: a step penalises and marks the rows of its slots, in any order; the other
    slots are left alone, and the padding rows (slot -1) touch only the spare last row, which no slot reads."""
    sampler = Sampler(SamplingParams(repetition_penalty=2.0, presence_penalty=1.0), vocab_size=8, slots=3)
    sampler.start(0, [1])
    sampler.start(2, [5, 6])

    def marked(mask):
        return [mask[row].nonzero().flatten().tolist() for row in range(mask.shape[0])]

    # slot 2's prompt token 5 (4 / 2 < 3) loses to 3; the padding row picks 7
    logits = torch.tensor([[0, 0, 0, 3, 0, 4, 0, 0], [0, 0, 0, 0, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 9.0]])
    tokens = sampler(logits, torch.tensor([2, 0, -1], dtype=torch.int32))
    assert tokens.tolist() == [3, 4, 7]
    assert marked(sampler.seen) == [[1, 4], [], [3, 5, 6], [7]]
    assert marked(sampler.generated) == [[4], [], [3], [7]]

    # slot 0's output 4 (5 / 2 - 1 < 4.5) loses to 7; slot 1 keeps 7, which only the spare row holds
    logits = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 5, 0, 0, 4.5]])
    tokens = sampler(logits, torch.tensor([1, 0], dtype=torch.int32))
    assert tokens.tolist() == [7, 7]
    assert marked(sampler.seen)[:3] == [[1, 4, 7], [7], [3, 5, 6]]
    assert marked(sampler.generated)[:3] == [[4, 7], [7], [3]]

    sampler.start(0, [2])  # a new sequence in slot 0 starts from its prompt alone
    assert marked(sampler.seen)[0] == [2] and marked(sampler.generated)[0] == []


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"), (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(min_p=1.0), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(presence_penalty=2.5), "presence_penalty"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_generation_config_file(tmp_path):
    assert GenerationConfig.from_pretrained(tmp_path) == GenerationConfig()
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "eos_token_id": [151645, 151643],
         "pad_token_id": 151643, "bos_token_id": 151643}))
    config = GenerationConfig.from_pretrained(tmp_path)
    assert config.sampling == SamplingParams(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    assert config.eos_token_ids == (151645, 151643) and config.pad_token_id == 151643
    assert config.updated(temperature=1.0, top_k=None) == SamplingParams(do_sample=True, temperature=1.0,
                                                                         top_p=0.8, top_k=20)


@pytest.mark.parametrize("text,match", [("{", "not a readable JSON"), ('{"temperature": -1}', "temperature")])
def test_bad_generation_config_file(tmp_path, text, match):
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(ValueError, match=match) as error:
        GenerationConfig.from_pretrained(tmp_path)
    assert "generation_config.json" in str(error.value)
