"""Qwen3NextCUDA: load a checkpoint, compute logits, generate.

The layers are composed by ``reference.Qwen3NextReference`` over ``qwen3next_cuda.ops``, so each op runs
its CUDA kernel where one is built and the inputs are on a GPU, and the PyTorch reference elsewhere (CPU
included).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import ops
from .config import Qwen3NextConfig
from .reference import Qwen3NextReference
from .sampling import GenerationConfig, SamplingParams, sample
from .tokenizer import TOKENIZER_FILE, Qwen3Tokenizer
from .weights import load_weights

Prompt = list[int]


class Qwen3NextCUDA:
    """A Qwen3-Next causal LM on one device.

    ``weights`` are in the in-memory layout of ``qwen3next_cuda.weights``; ``tokenizer`` (optional) enables
    chat messages as prompts; ``generation_config`` gives generate()'s defaults.
    """

    def __init__(self, config: Qwen3NextConfig, weights: dict[str, torch.Tensor],
                 tokenizer: Qwen3Tokenizer | None = None, generation_config: GenerationConfig | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.generation_config = generation_config or GenerationConfig(eos_token_ids=tuple(config.eos_token_ids))
        self._model = Qwen3NextReference(config, weights, ops=ops)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, progress: bool = True) -> Qwen3NextCUDA:
        """Load a checkpoint directory: config.json, the safetensors weights, and when present the tokenizer
        files and generation_config.json.

        ``device`` defaults to the current CUDA device if there is one, else the CPU; ``dtype`` to bfloat16 on
        a GPU and float32 on the CPU.
        """
        device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        config = Qwen3NextConfig.from_pretrained(path)
        weights = load_weights(path, config, device, dtype, progress)
        has_tokenizer = os.path.isfile(os.path.join(os.fspath(path), TOKENIZER_FILE))
        tokenizer = Qwen3Tokenizer.from_pretrained(path) if has_tokenizer else None
        return cls(config, weights, tokenizer, GenerationConfig.from_pretrained(path))

    @property
    def device(self) -> torch.device:
        return self._model.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self._model.embed.dtype

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] (fp32) of every position of ``input_ids`` [B, T] (or [T])."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() not in (1, 2) or input_ids.numel() == 0 \
                or input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise ValueError("input_ids must be a non-empty integer tensor [B, T] or [T]")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        vocab, limit = self.config.vocab_size, self.config.max_position_embeddings
        if bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            raise ValueError(f"input_ids hold values outside the vocabulary [0, {vocab})")
        if input_ids.shape[1] > limit:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the model's {limit} positions")
        return self._model.forward(input_ids.to(self.device, torch.long))

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | Sequence[Mapping[str, Any]]
        | Sequence[Sequence[Mapping[str, Any]]],
        max_new_tokens: int = 128,
        *,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        seed: int | None = None,
        enable_thinking: bool | None = None,
        streamer: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Generate up to ``max_new_tokens`` after each prompt; returns token ids [B, T + new] (int64, on CPU).

        ``inputs``: token ids [B, T] or [T] (tensor or lists; prompts may differ in length), or chat messages
        (one conversation as a list of {"role", "content"} dicts, or a list of conversations), rendered with
        the tokenizer's chat template and a generation prompt (``enable_thinking`` passed to the template).
        Sampling arguments left None come from generation_config.json; ``eos_token_id`` (default: the
        checkpoint's) ends a sequence, which is then padded with the pad token. Prompts shorter than the
        longest are left-padded, as transformers returns them. ``seed`` makes sampling reproducible.
        ``streamer(prompt_index, token_id)`` is called for every generated token as it is chosen.
        """
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        prompts = self._prompts(inputs, enable_thinking)
        self._check_prompts(prompts, max_new_tokens)
        params = self.generation_config.updated(do_sample=do_sample, temperature=temperature, top_p=top_p,
                                                top_k=top_k, min_p=min_p)
        if eos_token_id is None:
            eos = list(self.generation_config.eos_token_ids)
        else:
            eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        pad = self._pad_token_id(eos)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)

        # prompts of one length share a cache and run as one batch
        by_length: dict[int, list[int]] = {}
        for index, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(index)
        new_tokens: list[list[int]] = [[] for _ in prompts]
        for indices in by_length.values():
            batch = torch.tensor([prompts[i] for i in indices], device=self.device)
            rows = self._generate_batch(batch, max_new_tokens, params, eos, pad, generator,
                                        None if streamer is None else lambda row, tok: streamer(indices[row], tok))
            for i, row in zip(indices, rows):
                new_tokens[i] = row

        width = max(map(len, prompts)) + max(map(len, new_tokens))
        out = torch.full((len(prompts), width), pad, dtype=torch.long)
        for i, (prompt, new) in enumerate(zip(prompts, new_tokens)):
            start = width - max(map(len, new_tokens)) - len(prompt)
            out[i, start:start + len(prompt) + len(new)] = torch.tensor(prompt + new)
        return out

    def _generate_batch(self, input_ids: torch.Tensor, max_new_tokens: int, params: SamplingParams,
                        eos: list[int], pad: int, generator: torch.Generator | None,
                        streamer: Callable[[int, int], None] | None) -> list[list[int]]:
        """Prefill equal-length prompts [B, T], then decode until every row has hit eos or the limit."""
        batch = input_ids.shape[0]
        cache = self._model.new_cache(batch, input_ids.shape[1] + max_new_tokens)
        eos_ids = torch.tensor(eos, dtype=torch.long, device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        logits = self._model.forward(input_ids, cache, last_only=True)
        steps = []
        for step in range(max_new_tokens):
            tokens = sample(logits[:, -1], params, generator).masked_fill(finished, pad)
            steps.append(tokens)
            if streamer is not None:
                for row, (tok, done) in enumerate(zip(tokens.tolist(), finished.tolist())):
                    if not done:
                        streamer(row, tok)
            finished |= torch.isin(tokens, eos_ids)
            if step + 1 == max_new_tokens or bool(finished.all()):
                break
            logits = self._model.forward(tokens.unsqueeze(1), cache, last_only=True)
        table = torch.stack(steps, dim=1).tolist()
        return [_until_eos(row, eos) for row in table]

    def _prompts(self, inputs, enable_thinking: bool | None) -> list[Prompt]:
        """Normalise generate()'s inputs to a list of token-id lists."""
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() not in (1, 2) or inputs.dtype.is_floating_point or inputs.dtype.is_complex \
                    or inputs.dtype == torch.bool:
                raise ValueError(f"input_ids must be an integer tensor [B, T] or [T], got {inputs.dtype} "
                                 f"{tuple(inputs.shape)}")
            return [inputs.tolist()] if inputs.dim() == 1 else inputs.tolist()
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)) or not inputs:
            raise ValueError("inputs must be token ids or chat messages, and not empty "
                             "(to generate from text, tokenize it first)")
        first = inputs[0]
        if isinstance(first, Mapping) or (isinstance(first, Sequence) and first and isinstance(first[0], Mapping)):
            conversations = [inputs] if isinstance(first, Mapping) else list(inputs)
            if self.tokenizer is None:
                raise ValueError("chat messages need a tokenizer, and this model was loaded without one "
                                 "(no tokenizer.json in the checkpoint)")
            return [self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       enable_thinking=enable_thinking)
                    for messages in conversations]
        return [list(inputs)] if isinstance(first, int) else [list(p) for p in inputs]

    def _check_prompts(self, prompts: list[Prompt], max_new_tokens: int) -> None:
        vocab, limit = self.config.vocab_size, self.config.max_position_embeddings
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {i} is empty")
            if not all(isinstance(t, int) and 0 <= t < vocab for t in prompt):
                bad = next(t for t in prompt if not (isinstance(t, int) and 0 <= t < vocab))
                raise ValueError(f"prompt {i} holds {bad!r}, not a token id in [0, {vocab})")
            if len(prompt) + max_new_tokens > limit:
                raise ValueError(f"prompt {i}: {len(prompt)} tokens + {max_new_tokens} new exceed the model's "
                                 f"{limit} positions")

    def _pad_token_id(self, eos: list[int]) -> int:
        if self.generation_config.pad_token_id is not None:
            return self.generation_config.pad_token_id
        return eos[0] if eos else 0


def _until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    """The tokens up to and including the first eos token."""
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[:position + 1]
    return tokens
