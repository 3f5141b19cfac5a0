"""Kernel timing: CUDA-graph replay over rotated input sets, median of many replays."""

from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import torch

L2_FLUSH_BYTES = 256 * 2**20  # rotate through at least this much data: several times any L2
MAX_SETS = 64
# A replay at least this long (the graph passes over the sets as often as needed): the graph's own launch, a few
# µs, would otherwise be counted in the time of calls few enough (large inputs) to fit one short replay.
MIN_REPLAY_US = 1000.0


def set_count(bytes_per_call: int) -> int:
    """How many independent input sets make one pass over them too large for L2."""
    return max(1, min(MAX_SETS, -(-L2_FLUSH_BYTES // max(bytes_per_call, 1))))


def input_sets(make_inputs: Callable[[], object], bytes_per_call: int) -> list:
    """Enough independent input sets that one pass over them does not fit in L2."""
    return [make_inputs() for _ in range(set_count(bytes_per_call))]


def time_graph(call: Callable[[object], None], sets: Sequence, replays: int = 50, warmup: int = 5) -> float:
    """Median microseconds of one ``call(inputs)``: one graph runs the call once per input set, in as many passes
    over the sets as make a replay last MIN_REPLAY_US (each set is then still a pass over >= L2_FLUSH_BYTES old)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # eager warm-up: lazy init, autotuning, allocator growth; then a rough time
        for inputs in sets[:2]:
            call(inputs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for inputs in sets[:2]:
            call(inputs)
        end.record()
    end.synchronize()
    eager_us = start.elapsed_time(end) * 1e3 / len(sets[:2])
    torch.cuda.current_stream().wait_stream(stream)
    passes = max(1, math.ceil(MIN_REPLAY_US / (eager_us * len(sets))))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(passes):
            for inputs in sets:
                call(inputs)
    for _ in range(warmup):
        graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (passes * len(sets)))
    return statistics.median(times)
