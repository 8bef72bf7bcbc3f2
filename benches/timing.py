"""Timing helpers shared by the benchmarks (one way to time a GPU call, one way to time a proposer)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


class CudaTimer:
    """Median time of a callable with CUDA events, L2 flushed before each call (so a kernel that
    re-reads the same KV does not look faster than it is), after `warmup` untimed calls."""

    def __init__(self, iters: int, warmup: int = 3):
        import torch

        self.torch = torch
        self.iters, self.warmup = iters, warmup
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.flush = torch.empty(max(2 * l2, 1 << 20), dtype=torch.uint8, device="cuda")

    def __call__(self, fn: Callable[[], Any]) -> float:
        for _ in range(self.warmup):  # compilation, allocator, cuBLAS handles
            fn()
        times = []
        for _ in range(self.iters):
            self.flush.zero_()
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3)
        return statistics.median(times)


class FastestOfRepeats:
    """Wraps a :class:`suffixspec.proposer.Proposer`: each ``propose`` runs ``repeats`` times
    (speculation leaves the cache unchanged) and the fastest is recorded, so that preemptions on a
    loaded machine do not pollute the per-call times. The same for every library compared."""

    def __init__(self, inner: Any, repeats: int) -> None:
        self.inner, self.repeats = inner, repeats
        self.fastest_ns: list[int] = []

    def start(self, req_id: Any, prompt: Any) -> None:
        self.inner.start(req_id, prompt)

    def propose(self, *args: Any) -> Any:
        best = None
        for _ in range(self.repeats):
            t0 = time.perf_counter_ns()
            drafts = self.inner.propose(*args)
            elapsed = time.perf_counter_ns() - t0
            best = elapsed if best is None else min(best, elapsed)
        self.fastest_ns.append(best)
        return drafts

    def extend(self, req_id: Any, tokens: Any) -> None:
        self.inner.extend(req_id, tokens)

    def finish(self, req_id: Any) -> None:
        self.inner.finish(req_id)

    def memory_bytes(self) -> int:
        report = getattr(self.inner, "memory_bytes", None)  # 0 for proposers that report none
        return int(report()) if report is not None else 0
