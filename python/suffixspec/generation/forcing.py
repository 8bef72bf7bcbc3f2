"""Trace-forced acceptance: replaying recorded outputs through the real decoding loop.

Benchmarks run suffixspec on random-weight models of real architectures (no model hub), which
never produce the traced outputs. :class:`TraceForcedAcceptance` is an
:class:`~suffixspec.generation.loop.AcceptancePolicy` (the loop's public seam) that makes the
model "choose" the traced tokens: every block row's target is the traced token at that row's
depth past the request's emitted tokens, so greedy acceptance walks exactly the draft path equal
to the traced continuation and its bonus token is the next traced token. The loop does all its
real work (drafting, tree build, forward, compaction); only the choice of tokens is forced.
Results are labelled trace-forced wherever they are reported.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["TraceForcedAcceptance"]


class TraceForcedAcceptance:
    """Forces each request's output to ``outputs[req_id]`` (set before the request runs)."""

    def __init__(self) -> None:
        self.outputs: dict[Hashable, np.ndarray] = {}
        #: Seconds spent forcing (the benchmark's own work, to take out of suffixspec's time).
        self.elapsed_s = 0.0

    def __call__(self, requests: Sequence[Any], trees: Sequence[Any], targets: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        forced = np.empty(targets.shape, dtype=np.int64)
        for b, (request, tree) in enumerate(zip(requests, trees, strict=True)):
            future = self.outputs[request.req_id][request.length - request.prompt_len :]
            depth = np.zeros(targets.shape[1], dtype=np.int64)  # row 0 (the root) and padding: 0
            depth[1 : len(tree) + 1] = tree.depths
            forced[b] = future[np.minimum(depth, future.size - 1)]
        self.elapsed_s += time.perf_counter() - t0
        return forced
