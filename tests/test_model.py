"""Qwen3NextCUDA: loading, logits, generate (batching, padding, stop tokens, sampling, chat, streaming),
bad inputs; on a GPU the bf16 kernel path against the fp32 CPU model."""

from __future__ import annotations

import os

import pytest
import torch

from qwen3next_cuda import Qwen3NextCUDA, ops
from qwen3next_cuda.config import Qwen3NextConfig
from qwen3next_cuda.reference import Qwen3NextReference
from qwen3next_cuda.tools.make_checkpoint import make_checkpoint
from qwen3next_cuda.weights import load_weights
from utils import assert_close, calc_diff, prompts

cuda = pytest.mark.cuda
PAD = 151643  # generation_config.json pad_token_id of the tiny checkpoint


def test_from_pretrained(tiny, model):
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert model.config == Qwen3NextConfig.from_pretrained(tiny)
    assert model.tokenizer is not None and model.tokenizer.eos_token_id == 151645
    assert model.generation_config.eos_token_ids == (151645, 151643) and model.generation_config.sampling.top_k == 20
    bf16 = Qwen3NextCUDA.from_pretrained(tiny, device="cpu", dtype=torch.bfloat16, progress=False)
    assert bf16.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        Qwen3NextCUDA.from_pretrained(tiny, device="cpu", dtype=torch.int8, progress=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        Qwen3NextCUDA.from_pretrained(os.path.join(tiny, "missing"), device="cpu")


def test_logits_match_reference(tiny, model):
    ids = torch.tensor(prompts([13, 13], seed=1))
    logits = model(ids)
    assert logits.shape == (2, 13, model.config.vocab_size) and logits.dtype == torch.float32
    config = model.config
    reference = Qwen3NextReference(config, load_weights(tiny, config, dtype=torch.float32, progress=False))
    assert_close(logits, reference.forward(ids), atol=1e-5, rtol=1e-5)
    assert_close(model(ids[0]), logits[:1], atol=1e-5, rtol=1e-5, name="1-D input")


def test_in_projections_are_views_of_one_fused_weight(tiny):
    """Each layer's in-projections become row slices of one fused weight, equal to the checkpoint's; the
    reference model on the same (now view) weights, with its separate GEMMs, gives the model's logits."""
    config = Qwen3NextConfig.from_pretrained(tiny)
    loaded = load_weights(tiny, config, dtype=torch.float32, progress=False)
    weights = dict(loaded)
    model = Qwen3NextCUDA(config, weights)
    for i, layer_type in enumerate(config.layer_types):
        names = [f"model.layers.{i}.{proj}.weight" for proj in Qwen3NextCUDA._IN_PROJS[layer_type]]
        fused, sizes = model._in_proj[i]
        assert torch.equal(fused, torch.cat([loaded[name] for name in names]))
        row = 0
        for name, size in zip(names, sizes):
            assert weights[name] is not loaded[name] and torch.equal(weights[name], loaded[name])
            assert weights[name].untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
            assert weights[name].data_ptr() == fused[row].data_ptr()
            row += size
        assert row == fused.shape[0]
    ids = torch.tensor(prompts([7, 7], seed=8))
    assert_close(model(ids), Qwen3NextReference(config, weights).forward(ids), atol=1e-5, rtol=1e-5)


def test_greedy_generate_matches_reference(tiny, model):
    ids = torch.tensor(prompts([9, 9], seed=2))
    out = model.generate(ids, 12, do_sample=False, eos_token_id=[])
    config = model.config
    reference = Qwen3NextReference(config, load_weights(tiny, config, dtype=torch.float32, progress=False))
    assert out.shape == (2, 21) and torch.equal(out[:, :9], ids)
    assert torch.equal(out[:, 9:], reference.generate(ids, 12))


def test_greedy_generate_with_penalties_matches_reference_steps(tiny, model):
    """Penalties in greedy decoding, two prompts of different lengths: each step the argmax of the reference
    model's last logits after transformers' repetition penalty and the presence penalty of the output."""
    processors = pytest.importorskip("transformers.generation.logits_process")
    batch = prompts([6, 3], seed=7)
    out = model.generate(batch, 8, do_sample=False, repetition_penalty=1.5, presence_penalty=1.0, eos_token_id=[])
    config = model.config
    reference = Qwen3NextReference(config, load_weights(tiny, config, dtype=torch.float32, progress=False))
    for row, prompt in enumerate(batch):
        sequence = list(prompt)
        for _ in range(8):
            logits = reference.forward(torch.tensor([sequence]))[:, -1]
            logits = processors.RepetitionPenaltyLogitsProcessor(1.5)(torch.tensor([sequence]), logits)
            output = torch.tensor(sequence[len(prompt):], dtype=torch.long)
            logits[0, output.unique()] -= 1.0
            sequence.append(int(logits.argmax()))
        assert out[row, -len(sequence):].tolist() == sequence


def test_prompts_of_different_lengths_are_left_padded(model):
    batch = prompts([5, 11, 5], seed=3)
    out = model.generate(batch, 6, do_sample=False, eos_token_id=[])
    assert out.shape == (3, 17)
    for row, prompt in zip(out, batch):
        alone = model.generate(prompt, 6, do_sample=False, eos_token_id=[])[0]
        assert torch.equal(row[11 - len(prompt):], alone)
        assert (row[:11 - len(prompt)] == PAD).all()


def test_stops_at_eos_and_pads(model):
    batch = prompts([7, 7], seed=4)
    free = model.generate(batch, 10, do_sample=False, eos_token_id=[])
    stop = int(free[0, 7 + 3])  # row 0 emits this token at its 4th step
    stopped = model.generate(batch, 10, do_sample=False, eos_token_id=stop)
    first = (free[0, 7:] == stop).nonzero()[0].item()
    assert torch.equal(stopped[0, :7 + first + 1], free[0, :7 + first + 1])
    assert (stopped[0, 7 + first + 1:] == PAD).all()
    if not (free[1, 7:] == stop).any():  # the other row runs to the limit unless it meets the token too
        assert torch.equal(stopped[1], free[1, :stopped.shape[1]])


def test_sampling_is_seeded(model):
    batch = prompts([6, 6], seed=5)
    a = model.generate(batch, 8, do_sample=True, temperature=1.5, top_k=0, top_p=1.0, seed=11, eos_token_id=[])
    b = model.generate(batch, 8, do_sample=True, temperature=1.5, top_k=0, top_p=1.0, seed=11, eos_token_id=[])
    c = model.generate(batch, 8, do_sample=True, temperature=1.5, top_k=0, top_p=1.0, seed=12, eos_token_id=[])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_chat_messages_and_streaming(model):
    messages = [{"role": "user", "content": "Hello!"}]
    prompt = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
    streamed = []
    out = model.generate(messages, 5, enable_thinking=False, seed=0, eos_token_id=[],
                         streamer=lambda index, token: streamed.append((index, token)))
    assert out[0, :len(prompt)].tolist() == prompt
    assert streamed == [(0, t) for t in out[0, len(prompt):].tolist()]
    two = model.generate([messages, messages + [{"role": "assistant", "content": "Hi"}, *messages]], 3, seed=0)
    assert two.shape[0] == 2


@pytest.mark.parametrize("inputs,match", [
    ([], "not empty"), ("hello", "tokenize it first"), ([[1, 2], []], "prompt 1 is empty"),
    ([1, -1], "not a token id"), ([1, 151936], "not a token id"), (torch.zeros(2, 3), "integer tensor"),
])
def test_bad_generate_inputs(model, inputs, match):
    with pytest.raises(ValueError, match=match):
        model.generate(inputs, 4)


def test_stream_yields_the_reply_as_text(model):
    messages = [{"role": "user", "content": "Hello"}]
    deltas = list(model.stream(messages, 9, enable_thinking=False, seed=3, do_sample=True, eos_token_id=[]))
    ids = model.generate(messages, 9, enable_thinking=False, seed=3, do_sample=True, eos_token_id=[])[0]
    prompt_len = len(model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False))
    assert deltas and all(deltas)
    assert "".join(deltas) == model.tokenizer.decode(ids[prompt_len:].tolist(), skip_special_tokens=True)
    with pytest.raises(ValueError, match="one prompt or conversation, got 2"):
        next(model.stream([[1, 2], [3]], 2))
    with pytest.raises(TypeError, match="streamer"):
        next(model.stream([1, 2], 2, streamer=print))


def test_bad_generate_arguments(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([1, 2], 0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate([1, 2], 2, temperature=0.0)
    with pytest.raises(ValueError, match="positions"):
        model.generate([1, 2], model.config.max_position_embeddings)
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.tensor([[1, 151936]]))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3))


def test_chat_without_tokenizer(tmp_path):
    make_checkpoint(tmp_path, "tiny", layers=2, tokenizer=False, progress=False)
    model = Qwen3NextCUDA.from_pretrained(tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate([{"role": "user", "content": "hi"}], 2)


@cuda
def test_bf16_gpu_matches_fp32_cpu(tiny, model):
    """The GPU model in bf16 (norm kernels, reference ops elsewhere) tracks the fp32 CPU model."""
    assert ops.HAS_KERNELS, "the extension is not built"
    gpu = Qwen3NextCUDA.from_pretrained(tiny, progress=False)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    ids = torch.tensor(prompts([40, 40], seed=6))
    logits, expected = gpu(ids).cpu(), model(ids)
    assert calc_diff(logits, expected) < 2e-3
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9
    out = gpu.generate(ids, 8, do_sample=False, eos_token_id=[])
    assert out.shape == (2, 48) and out.device.type == "cpu"
