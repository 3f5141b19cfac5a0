"""Qwen3NextCUDA: load a checkpoint, compute logits, generate.

The forward runs a varlen batch of sequences, each continuing in its slot of a ``HybridCache``
(``qwen3next_cuda.cache``): the tokens of all sequences are one flat batch through the norms, projections and
MoE, the DeltaNet mixers run on the cache layouts (``ops.gdn_prefill`` / ``ops.gdn_decode``), attention per
sequence over its cached keys and values. Every op goes through ``qwen3next_cuda.ops``: its CUDA kernel where
one is built and the inputs are on a GPU, the PyTorch reference elsewhere (CPU included).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from . import graphs, ops
from .cache import HybridCache
from .config import FULL_ATTENTION, LINEAR_ATTENTION, Qwen3NextConfig
from .reference import Qwen3NextReference, rope_inv_freq
from .sampling import GenerationConfig, Sampler, SamplingParams
from .tokenizer import TOKENIZER_FILE, Qwen3Tokenizer
from .weights import load_weights

Prompt = list[int]


class Qwen3NextCUDA:
    """A Qwen3-Next causal LM on one device.

    ``weights`` are in the in-memory layout of ``qwen3next_cuda.weights``; ``tokenizer`` (optional) enables
    chat messages as prompts; ``generation_config`` gives generate()'s defaults. The in-projection entries of
    ``weights`` (DeltaNet ``in_proj_qkvz``/``in_proj_ba``, attention ``q_proj``/``k_proj``/``v_proj``) are replaced
    by equal views of one fused weight per layer.
    """

    _IN_PROJS = {LINEAR_ATTENTION: ("linear_attn.in_proj_qkvz", "linear_attn.in_proj_ba"),
                 FULL_ATTENTION: ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")}

    def __init__(self, config: Qwen3NextConfig, weights: dict[str, torch.Tensor],
                 tokenizer: Qwen3Tokenizer | None = None, generation_config: GenerationConfig | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.generation_config = generation_config or GenerationConfig(eos_token_ids=tuple(config.eos_token_ids))
        self._model = Qwen3NextReference(config, weights, ops=ops)  # holds the weights (embed, lm_head, MoE)
        # the projections of a mixer's input as one GEMM (at batch 1 each is a launch-bound GEMV): per layer the
        # fused weight and its row counts, to split the output
        self._in_proj = {}
        for i, layer_type in enumerate(config.layer_types):
            names = [f"model.layers.{i}.{proj}.weight" for proj in self._IN_PROJS[layer_type]]
            self._in_proj[i] = _fuse_rows(weights, names)
        inv_freq, scale = rope_inv_freq(config)
        self._rope = (inv_freq.to(self.device), scale)

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
        batch, num_tokens = input_ids.shape
        cache = self.new_cache(batch, num_tokens)
        slots = [cache.allocate(num_tokens) for _ in range(batch)]
        return self.prefill(input_ids.tolist(), slots, cache, all_logits=True).view(batch, num_tokens, -1)

    def weight_bytes(self, tokens: int) -> int:
        """The weights a forward pass over ``tokens`` tokens reads at least once: every weight, of the experts those
        the tokens select (expected count under uniform routing), of the embeddings one row per token."""
        experts = self.config.num_experts
        selected = experts * (1 - (1 - self.config.num_experts_per_tok / experts) ** tokens)
        total = 0
        for name, weight in self._model.weights.items():
            if name.startswith("mtp."):  # the multi-token-prediction layer: not read by a decode step
                continue
            if name == "model.embed_tokens.weight":
                total += tokens * weight[0].nbytes
            elif ".mlp.experts." in name:
                total += int(weight.nbytes * selected / experts)
            else:
                total += weight.nbytes
        return total

    def decode_step_bytes(self, batch: int, context: int) -> int:
        """What a decode step of ``batch`` sequences of ``context`` tokens reads at least (its floor): the weights
        (`weight_bytes`), each sequence's DeltaNet states read and written, its keys and values."""
        config = self.config
        state = config.linear_num_value_heads * config.linear_value_head_dim * config.linear_key_head_dim * 4
        kv = 2 * context * config.num_key_value_heads * config.head_dim * self.dtype.itemsize
        return self.weight_bytes(batch) + batch * (2 * state * len(config.linear_attention_layers)
                                                   + kv * len(config.full_attention_layers))

    def new_cache(self, max_batch: int, max_len: int, state_dtype: torch.dtype = torch.float32) -> HybridCache:
        """An empty cache of ``max_batch`` slots of ``max_len`` tokens on the model's device and dtype."""
        return HybridCache(self.config, max_batch, max_len, self.dtype, self.device, state_dtype)

    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]], slots: Sequence[int], cache: HybridCache,
                all_logits: bool = False, sampler: Sampler | None = None) -> torch.Tensor:
        """Run each prompt (token ids) after the tokens its slot of ``cache`` already holds, as one varlen batch.

        Returns fp32 logits of each prompt's last token [S, vocab], or of every token [sum of lengths, vocab]
        when ``all_logits``; with a ``sampler`` (logits [S, V] and the slots as a device tensor [S] -> tokens [S],
        e.g. a ``sampling.Sampler``), each prompt's next token [S] instead.
        """
        if len(prompts) != len(slots) or not prompts or not all(prompts):
            raise ValueError("prefill needs one non-empty prompt per slot")
        if all_logits and sampler is not None:
            raise ValueError("prefill samples from each prompt's last logits: all_logits and a sampler exclude "
                             "each other")
        ids = torch.tensor([token for prompt in prompts for token in prompt], dtype=torch.long, device=self.device)
        return self._forward(ids, [len(prompt) for prompt in prompts], list(slots), cache, all_logits, sampler)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, slots: Sequence[int], cache: HybridCache,
               sampler: Sampler | None = None) -> torch.Tensor:
        """One new token per slot: ``tokens`` [B] -> fp32 logits [B, vocab]; with a ``sampler`` (as for
        :meth:`prefill`), the next tokens [B] instead: the eager twin of ``DecodeGraphs.decode_sample``."""
        if tokens.dim() != 1 or tokens.numel() != len(slots):
            raise ValueError(f"decode needs one token per slot, got tokens {tuple(tokens.shape)} for {len(slots)} "
                             f"slots")
        return self._forward(tokens.to(self.device, torch.long), [1] * len(slots), list(slots), cache, False, sampler)

    def _forward(self, ids: torch.Tensor, lengths: list[int], slots: list[int], cache: HybridCache,
                 all_logits: bool, sampler: Sampler | None = None) -> torch.Tensor:
        """ids [N]: the new tokens of each sequence in turn (lengths[s] for slot slots[s]); logits, or with a
        sampler the next tokens, chosen by the batch's own slot tensor."""
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots {slots} repeat: each sequence needs its own slot")
        for slot, length in zip(slots, lengths):
            cache.check_room(slot, length)
        batch = _Batch.of(slots, [cache.lengths[slot] for slot in slots], lengths, cache.max_len, self.device)
        out = self._step(ids, batch, cache, all_logits)
        if sampler is not None:
            out = sampler(out, batch.slot_tensor)
        for slot, length in zip(slots, lengths):
            cache.lengths[slot] += length
        return out

    def _step(self, ids: torch.Tensor, batch: _Batch, cache: HybridCache, all_logits: bool) -> torch.Tensor:
        """The forward on device tensors only (no host sync, no copy from the host): what a CUDA graph captures.
        The caller keeps ``cache.lengths``."""
        config, weights, eps = self.config, self._model.weights, self.config.rms_norm_eps
        cos, sin = ops.rope_cos_sin(batch.positions, config, self._rope)

        residual = F.embedding(ids, self._model.embed)
        hidden = ops.rmsnorm(residual, weights["model.layers.0.input_layernorm.weight"], eps)
        for i, layer_type in enumerate(config.layer_types):
            if layer_type == LINEAR_ATTENTION:
                mixer_out = self._gated_deltanet(i, hidden, cache, batch)
            else:
                mixer_out = self._gated_attention(i, hidden, cache, batch, cos, sin)
            prefix = f"model.layers.{i}."
            residual, hidden = ops.rmsnorm_add(mixer_out, residual, weights[prefix + "post_attention_layernorm.weight"],
                                               eps)
            moe_out = ops.moe(hidden, self._model.moe_weights[i], config.num_experts_per_tok, config.norm_topk_prob)
            last = i + 1 == config.num_hidden_layers
            next_norm = weights["model.norm.weight" if last else f"model.layers.{i + 1}.input_layernorm.weight"]
            residual, hidden = ops.rmsnorm_add(moe_out, residual, next_norm, eps)
        if not all_logits and batch.max_length > 1:  # with one token per sequence every row is a last token
            hidden = hidden[batch.cu_seqlens[1:].long() - 1]
        return ops.linear(hidden, self._model.lm_head).float()

    def _gated_deltanet(self, i: int, x: torch.Tensor, cache: HybridCache, batch: _Batch) -> torch.Tensor:
        """DeltaNet mixer of layer i on the flat batch x [N, H]; both states of each slot are updated."""
        eps = self.config.rms_norm_eps

        def weight(name):
            return self._model.weights[f"model.layers.{i}.linear_attn.{name}"]

        fused, sizes = self._in_proj[i]
        # column slices of the fused output: the ops take rows with a stride (the prefill kernels need them
        # 16-byte aligned, which ops.gdn_prefill sees to)
        qkvz, ba = ops.linear(x, fused).split(sizes, dim=-1)
        layer = dict(conv_weight=weight("conv1d.weight").squeeze(1), A_log=weight("A_log"),
                     dt_bias=weight("dt_bias"), norm_weight=weight("norm.weight"), eps=eps)
        if batch.max_length == 1:  # decode: one token per sequence
            out = ops.gdn_decode(qkvz.unsqueeze(1), ba.unsqueeze(1), cache.conv[i], cache.recurrent[i],
                                 batch.slot_tensor, **layer).squeeze(1)
        else:
            out = ops.gdn_prefill(qkvz, ba, cache.conv[i], cache.recurrent[i], batch.slot_tensor, batch.cu_seqlens,
                                  max_seqlen=batch.max_length, **layer)
        return ops.linear(out, weight("out_proj.weight"))

    def _gated_attention(self, i: int, x: torch.Tensor, cache: HybridCache, batch: _Batch, cos: torch.Tensor,
                         sin: torch.Tensor) -> torch.Tensor:
        """Gated attention mixer of layer i on the flat batch x [N, H]; cos, sin [N, rotary_dim] at each token's
        position. Writes the new keys and values into each slot at their positions."""
        eps, head_dim = self.config.rms_norm_eps, self.config.head_dim

        def weight(name):
            return self._model.weights[f"model.layers.{i}.self_attn.{name}"]

        fused, sizes = self._in_proj[i]
        q, k, v = ops.linear(x, fused).split(sizes, dim=-1)  # strided views: the attention kernels take them
        q, gate = q.unflatten(-1, (-1, 2 * head_dim)).chunk(2, dim=-1)
        k, v = (t.unflatten(-1, (-1, head_dim)) for t in (k, v))
        q = ops.attention_prepass(q, k, v, cos, sin, weight("q_norm.weight"), weight("k_norm.weight"), eps,
                                  cache.key[i], cache.value[i], batch.slot_tensor, batch.cu_seqlens,
                                  batch.context_lens)
        out = ops.attention_varlen(q, cache.key[i], cache.value[i], batch.slot_tensor, batch.cu_seqlens,
                                   batch.context_lens, gate=gate, max_seqlen=batch.max_length,
                                   max_context=batch.max_context)
        return ops.linear(out.flatten(-2), weight("o_proj.weight"))

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
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        seed: int | None = None,
        enable_thinking: bool | None = None,
        streamer: Callable[[int, int], None] | None = None,
        cuda_graphs: bool | None = None,
    ) -> torch.Tensor:
        """Generate up to ``max_new_tokens`` after each prompt; returns token ids [B, T + new] (int64, on CPU).

        ``inputs``: token ids [B, T] or [T] (tensor or lists; prompts may differ in length), or chat messages
        (one conversation as a list of {"role", "content"} dicts, or a list of conversations), rendered with
        the tokenizer's chat template and a generation prompt (``enable_thinking`` passed to the template).
        Sampling arguments left None come from generation_config.json (``repetition_penalty`` as transformers
        applies it, over prompt and output; ``presence_penalty`` as OpenAI's API and vLLM, over the output; both
        in greedy decoding too); ``eos_token_id`` (default: the
        checkpoint's) ends a sequence, which is then padded with the pad token. Prompts shorter than the
        longest are left-padded, as transformers returns them. ``seed`` makes sampling reproducible.
        ``streamer(prompt_index, token_id)`` is called for every generated token as it is chosen.
        ``cuda_graphs``: decode steps, penalties and sampling included, by CUDA-graph replay
        (``qwen3next_cuda.graphs``); default: when every op of the step has a graph-safe kernel for this model
        (:func:`qwen3next_cuda.graphs.capturable`).
        """
        prompts, params, eos, generator = self._request(
            inputs, max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
            min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
            eos_token_id=eos_token_id, seed=seed, enable_thinking=enable_thinking)
        pad = self._pad_token_id(eos)
        new_tokens: list[list[int]] = [[] for _ in prompts]
        for index, token in self._tokens(prompts, max_new_tokens, params, eos, generator, cuda_graphs):
            new_tokens[index].append(token)
            if streamer is not None:
                streamer(index, token)

        width = max(map(len, prompts)) + max(map(len, new_tokens))
        out = torch.full((len(prompts), width), pad, dtype=torch.long)
        for i, (prompt, new) in enumerate(zip(prompts, new_tokens)):
            start = width - max(map(len, new_tokens)) - len(prompt)
            out[i, start:start + len(prompt) + len(new)] = torch.tensor(prompt + new)
        return out

    def stream(self, inputs, max_new_tokens: int = 128, *, skip_special_tokens: bool = True,
               **options) -> Iterator[str]:
        """The reply to one prompt or conversation as text deltas, each yielded as soon as its tokens are chosen.

        ``inputs`` and ``options`` (sampling arguments, ``eos_token_id``, ``seed``, ``enable_thinking``) as for
        :meth:`generate`; special tokens (the end token) are left out unless ``skip_special_tokens`` is False.
        """
        prompts, params, eos, generator = self._request(inputs, max_new_tokens, **options)
        if len(prompts) != 1:
            raise ValueError(f"stream takes one prompt or conversation, got {len(prompts)}")
        if self.tokenizer is None:
            raise ValueError("streaming text needs a tokenizer, and this model was loaded without one")
        decoder = self.tokenizer.incremental_decoder(skip_special_tokens=skip_special_tokens)
        for _, token in self._tokens(prompts, max_new_tokens, params, eos, generator):
            text = decoder.push(token)
            if text:
                yield text
        tail = decoder.finish()
        if tail:
            yield tail

    def _request(self, inputs, max_new_tokens: int, do_sample: bool | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                 repetition_penalty: float | None = None, presence_penalty: float | None = None,
                 eos_token_id: int | Sequence[int] | None = None, seed: int | None = None,
                 enable_thinking: bool | None = None):
        """generate()'s arguments checked and resolved: (prompts, sampling parameters, stop ids, generator)."""
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        prompts = self._prompts(inputs, enable_thinking)
        self._check_prompts(prompts, max_new_tokens)
        params = self.generation_config.updated(do_sample=do_sample, temperature=temperature, top_p=top_p,
                                                top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty,
                                                presence_penalty=presence_penalty)
        if eos_token_id is None:
            eos = list(self.generation_config.eos_token_ids)
        else:
            eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        return prompts, params, eos, generator

    def _tokens(self, prompts: list[Prompt], max_new_tokens: int, params: SamplingParams, eos: list[int],
                generator: torch.Generator | None, cuda_graphs: bool | None = None) -> Iterator[tuple[int, int]]:
        """(prompt index, token) of every generated token, in the order they are chosen."""
        # every prompt in one varlen prefill, then one decode step per token for the sequences still running
        cache = self.new_cache(len(prompts), max(map(len, prompts)) + max_new_tokens)
        slots = [cache.allocate(len(prompt) + max_new_tokens) for prompt in prompts]
        sampler = Sampler(params, self.config.vocab_size, cache.max_batch, self.device, generator)
        for slot, prompt in zip(slots, prompts):
            sampler.start(slot, prompt)
        tokens = self.prefill(prompts, slots, cache, sampler=sampler)

        # the next tokens from the last ones, by a graph replay that samples too or eagerly; the graphs are captured
        # at the first decode step, so the first tokens come out after the prefill alone
        if cuda_graphs is None:
            cuda_graphs = graphs.capturable(self) and max_new_tokens > 1

        def make_step():
            if cuda_graphs:
                return graphs.DecodeGraphs(self, cache, sampler=sampler, generator=generator).decode_sample
            return functools.partial(self.decode, cache=cache, sampler=sampler)
        step = None
        running = list(range(len(prompts)))
        for step_index in range(max_new_tokens):
            still_running = []
            for index, token in zip(running, tokens.tolist()):
                yield index, token
                if token in eos:
                    cache.free(slots[index])
                else:
                    still_running.append(index)
            if not still_running or step_index + 1 == max_new_tokens:
                break
            if len(still_running) < len(running):
                keep = torch.tensor([running.index(index) for index in still_running], device=self.device)
                tokens = tokens[keep]
            running = still_running
            step = step or make_step()
            tokens = step(tokens, [slots[index] for index in running])

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


def _fuse_rows(weights: dict[str, torch.Tensor], names: list[str]) -> tuple[torch.Tensor, list[int]]:
    """The weights ``names`` stacked by rows into one tensor, and their row counts; their dict entries are replaced
    by its row slices (the old tensors are freed once nothing else holds them)."""
    sizes = [weights[name].shape[0] for name in names]
    fused = torch.cat([weights[name] for name in names])
    weights.update(zip(names, fused.split(sizes)))
    return fused, sizes


class _Batch:
    """The device tensors the ops take for a varlen forward: each token's position, sequence bounds in the flat
    batch, slots, and each sequence's length with its new tokens; with host bounds of the longest sequence and
    of the contexts (sizes for the kernels' grids: the cache's length, so that an eager decode step splits its
    attention as the captured one does)."""

    def __init__(self, positions: torch.Tensor, cu_seqlens: torch.Tensor, slot_tensor: torch.Tensor,
                 context_lens: torch.Tensor, max_length: int, max_context: int):
        self.positions, self.cu_seqlens, self.slot_tensor, self.context_lens = (positions, cu_seqlens, slot_tensor,
                                                                                context_lens)
        self.max_length, self.max_context = max_length, max_context

    @classmethod
    def of(cls, slots: list[int], starts: list[int], lengths: list[int], max_context: int,
           device: torch.device) -> _Batch:
        """The batch of sequences continuing at ``starts`` with ``lengths`` new tokens each."""
        ends = [start + length for start, length in zip(starts, lengths)]
        positions = torch.cat([torch.arange(start, end) for start, end in zip(starts, ends)]).to(device)
        cu_seqlens = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
        return cls(positions, cu_seqlens, torch.tensor(slots, dtype=torch.int32, device=device),
                   torch.tensor(ends, dtype=torch.int32, device=device), max(lengths), max_context)
