"""rmsnorm_add and rmsnorm_gated at the model's shapes: ours vs the torch expression."""

from __future__ import annotations

import torch

from benchmarks.timing import input_sets, time_graph
from qwen3next_cuda import ops, reference

HIDDEN, VALUE_HEADS, HEAD_DIM, EPS = 2048, 32, 128, 1e-6
TOKENS = (1, 32, 4096, 32768)
IMPLS = {"ours": ops, "torch": reference}


def _rand(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)


def run(record) -> None:
    for tokens in TOKENS:
        weight = _rand(HIDDEN) * 0.1
        nbytes = (4 * tokens * HIDDEN + HIDDEN) * 2  # read x, residual, w; write residual, out
        sets = input_sets(lambda: (_rand(tokens, HIDDEN), _rand(tokens, HIDDEN)), nbytes)
        for impl, lib in IMPLS.items():
            us = time_graph(lambda s: lib.rmsnorm_add(s[0], s[1], weight, EPS), sets)
            record("rmsnorm_add", impl, {"tokens": tokens}, us, nbytes=nbytes)

        weight = 1 + 0.1 * _rand(HEAD_DIM)
        nbytes = (3 * tokens * VALUE_HEADS * HEAD_DIM + HEAD_DIM) * 2  # read x, z, w; write out
        shape = (tokens, VALUE_HEADS, HEAD_DIM)
        sets = input_sets(lambda: (_rand(*shape), _rand(*shape)), nbytes)
        for impl, lib in IMPLS.items():
            us = time_graph(lambda s: lib.rmsnorm_gated(s[0], s[1], weight, EPS), sets)
            record("rmsnorm_gated", impl, {"tokens": tokens}, us, nbytes=nbytes)
