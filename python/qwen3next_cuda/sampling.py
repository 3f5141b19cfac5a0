"""Next-token selection from logits: repetition and presence penalties, then greedy, or sampling with
temperature, top-k, top-p and min-p.

The penalties come first, in greedy decoding too (transformers' repetition penalty over the prompt and the
generated tokens; the presence penalty of OpenAI's API and vLLM over the generated tokens only). The filters
apply in transformers' order (temperature, top-k, top-p, min-p) and keep the same tokens it keeps. Everything
stays on the logits' device with fixed shapes and no host sync: the draw is an exponential race (argmax of
p / E with E ~ Exp(1)), which samples from p exactly. ``Sampler`` keeps the penalties' masks per cache slot,
so that a decode step's whole choice, masks included, can run inside a CUDA graph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. ``do_sample=False`` is greedy and ignores the filters (not the penalties).

    top_k = 0, top_p = 1 and min_p = 0 switch their filter off; repetition_penalty = 1 and presence_penalty = 0
    switch the penalties off.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not -2 <= self.presence_penalty <= 2:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults for ``generate``: the checkpoint's generation_config.json, or greedy without stop tokens."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> GenerationConfig:
        """Reads ``directory/generation_config.json``; absent file -> the defaults."""
        path = os.path.join(os.fspath(directory), GENERATION_CONFIG_FILE)
        if not os.path.isfile(path):
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable JSON file ({error})") from error
        sampling_names = {f.name for f in fields(SamplingParams)}
        try:
            sampling = SamplingParams(**{k: v for k, v in raw.items() if k in sampling_names and v is not None})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error
        eos = raw.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        return cls(sampling, eos, raw.get("pad_token_id"))

    def updated(self, **sampling_overrides) -> SamplingParams:
        """The sampling parameters with the given (non-None) fields replaced."""
        return replace(self.sampling, **{k: v for k, v in sampling_overrides.items() if v is not None})


def apply_penalties(logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor,
                    params: SamplingParams) -> torch.Tensor:
    """fp32 logits [B, V] with the penalties applied. ``seen`` [B, V] (bool): the tokens of each row's prompt and
    output, divided (positive logits) or multiplied (negative) by repetition_penalty; ``generated`` [B, V]
    (bool): the tokens of each row's output, lowered by presence_penalty."""
    logits = logits.float()
    if params.repetition_penalty != 1:
        penalized = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
        logits = torch.where(seen, penalized, logits)
    if params.presence_penalty != 0:
        logits = logits - params.presence_penalty * generated.float()
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """fp32 logits [B, V] -> the temperature-scaled logits with filtered-out tokens at -inf."""
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1:
        # drop the tokens whose higher-ranked mass already reaches top_p (the top token always stays)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, mass_before >= params.top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    if params.min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < params.min_p * probs.amax(-1, keepdim=True), float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] (int64) from logits [B, V]."""
    if not params.do_sample:
        return logits.argmax(-1)
    probs = filter_logits(logits, params).softmax(-1)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(-1)


class Sampler:
    """Chooses the next token of each sequence of a step, by cache slot: the penalties from the slot's masks, then
    ``sample``, then the chosen tokens marked in the masks. Device tensors only, no host sync, shapes fixed by the
    batch: a CUDA graph can capture a call (graph and eager steps then do the same math).

    With penalties, ``seen`` and ``generated`` (``apply_penalties``' masks) are bool [slots + 1, vocab]: a row per
    cache slot, kept as the batch shrinks, and a spare last row, which a graph bucket's padding rows (slot -1)
    index, so that they need no masking; only padding reads or writes it.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, slots: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None):
        self.params, self.generator = params, generator
        self.seen = self.generated = None
        if params.penalized:
            self.seen = torch.zeros(slots + 1, vocab_size, dtype=torch.bool, device=device)
            self.generated = torch.zeros_like(self.seen)

    def start(self, slot: int, prompt: Sequence[int]) -> None:
        """Empties ``slot``'s masks for a new sequence, its prompt tokens seen."""
        if self.seen is not None:
            self.seen[slot] = False
            self.generated[slot] = False
            self.seen[slot, torch.tensor(prompt, device=self.seen.device)] = True

    def __call__(self, logits: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Next tokens [B] (int64) from logits [B, V] of the sequences in ``slots`` [B] (a device tensor; -1 on
        padding rows, whose tokens are meaningless)."""
        if self.seen is None:
            return sample(logits, self.params, self.generator)
        rows = slots.long()  # slot -1 wraps to the spare last row
        logits = apply_penalties(logits, self.seen[rows], self.generated[rows], self.params)
        tokens = sample(logits, self.params, self.generator)
        marks = torch.ones_like(tokens, dtype=torch.bool)  # on the device: a graph cannot capture a host value's copy
        self.seen.index_put_((rows, tokens), marks)
        self.generated.index_put_((rows, tokens), marks)
        return tokens
