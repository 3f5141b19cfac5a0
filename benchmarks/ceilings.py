"""The two measured ceilings every result is compared against."""

from __future__ import annotations

import torch

from benchmarks.timing import time_graph


def copy_GBps() -> float:
    """Best device-to-device copy of 1 GiB, counting bytes read plus bytes written: the copy engine
    path (``copy_``, a memcpy) and an elementwise kernel moving 16-byte vectors (``neg`` of fp32)."""
    n = 2**28
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    # warm up long enough for the clocks to leave idle before the first timed replay
    times = [time_graph(fn, [src], replays=50, warmup=200)
             for fn in (lambda s: dst.copy_(s), lambda s: torch.neg(s, out=dst))]
    return 2 * src.nbytes / min(times) / 1e3


def bf16_mm_TFLOPs() -> float:
    """An 8192^3 bf16 matrix product on random data through torch (cuBLAS)."""
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    us = time_graph(lambda ab: torch.mm(ab[0], ab[1], out=out), [(a, b)], replays=30)
    return 2 * n**3 / us / 1e6
