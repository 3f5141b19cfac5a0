"""linear_decode: the model's dense projections for a few tokens (decode), ours (ops.linear: the chained few-token
kernel) vs cuBLAS (F.linear), graph-replayed over (x, weight) sets rotated past L2. Back to back, each of our calls
streams its weights while the one before finishes (as behind the norm or mixer before it in the model); cuBLAS's
calls do not overlap. Bytes: the weight, x and out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.timing import input_sets, time_graph
from qwen3next_cuda import ops

# name -> (out_features, in_features) at the published sizes (hidden 2048)
SHAPES = {"deltanet_in_proj": (12352, 2048), "out_proj": (2048, 4096), "attention_qkv": (9216, 2048),
          "lm_head": (151936, 2048)}
TOKENS = (1, 2)  # 4 tokens: cuBLAS (see NOTES.md)
IMPLS = {"ours": ops.linear, "cublas": F.linear}


def run(record) -> None:
    for name, (rows, k) in SHAPES.items():
        for tokens in TOKENS:
            nbytes = (rows * k + tokens * k + tokens * rows) * 2

            def make():
                weight = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16) / k**0.5
                return torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16), weight

            sets = input_sets(make, nbytes)
            for impl, fn in IMPLS.items():
                us = time_graph(lambda s: fn(s[0], s[1]), sets)
                record("linear_decode", impl, {"shape": name, "tokens": tokens}, us, nbytes=nbytes)
            del sets
