"""The two measured ceilings every result is compared against."""

from __future__ import annotations

import torch

from benchmarks.timing import time_graph


def copy_GBps() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written."""
    n = 2**30
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = time_graph(lambda s: dst.copy_(s), [src], replays=30)
    return 2 * n / us / 1e3


def bf16_mm_TFLOPs() -> float:
    """An 8192^3 bf16 matrix product on random data through torch (cuBLAS)."""
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    us = time_graph(lambda ab: torch.mm(ab[0], ab[1], out=out), [(a, b)], replays=30)
    return 2 * n**3 / us / 1e6
