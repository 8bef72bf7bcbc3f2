"""The replay loop: what a speculation method would have accepted on a recorded trace.

Requests run one after another, in file order. At each step the method proposes a draft tree from
the context (prompt + output so far); the longest root path that matches the real continuation is
accepted, and the step emits the accepted tokens plus one (the token the model produces after
them, unless the output already ended). The emitted tokens are fed back to the method, so finished
requests populate its global cache as they would in serving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from suffixspec.proposer import Proposer, fit_tree
from suffixspec.replay.methods import Method
from suffixspec.replay.tokenize import TokenizedTrace

__all__ = ["ReplayResult", "accepted_length", "replay", "replay_all", "warm_up"]

_CHAIN = np.arange(-1, 4095, dtype=np.int64)
_EMPTY = np.zeros(0, dtype=np.int32)

TokenArray = npt.NDArray[np.int32]


def accepted_length(tokens: npt.ArrayLike, parents: npt.ArrayLike, truth: npt.NDArray[np.integer]) -> int:
    """Length of the longest root path of the draft tree ``(tokens, parents)`` that equals a
    prefix of ``truth``."""
    tokens = np.asarray(tokens)
    k = len(tokens)
    if k == 0 or len(truth) == 0:
        return 0
    parents = np.asarray(parents)
    if k <= len(_CHAIN) and np.array_equal(parents, _CHAIN[:k]):  # a path: compare in one go
        m = min(k, len(truth))
        mismatches = np.flatnonzero(tokens[:m] != truth[:m])
        return int(mismatches[0]) if mismatches.size else m
    # A tree: follow every node matching the truth so far (siblings may repeat a token).
    frontier, depth = np.array([-1]), 0
    while depth < len(truth):
        frontier = np.flatnonzero(np.isin(parents, frontier) & (tokens == truth[depth]))
        if frontier.size == 0:
            break
        depth += 1
    return depth


@dataclass(frozen=True)
class ReplayResult:
    """Per-step records of one method on one trace."""

    method: str
    workload: str
    #: Per step: draft nodes proposed, tokens accepted, tokens emitted (accepted + bonus).
    drafted: npt.NDArray[np.int32]
    accepted: npt.NDArray[np.int32]
    emitted: npt.NDArray[np.int32]
    #: Per step: time of the ``propose`` call and of the ``observe`` call, in nanoseconds.
    propose_ns: npt.NDArray[np.int64]
    observe_ns: npt.NDArray[np.int64]
    #: Per request: number of steps, and time of the ``start`` call (prompt ingestion) in ns.
    request_steps: npt.NDArray[np.int64]
    start_ns: npt.NDArray[np.int64]
    #: Memory the method holds once the trace is done, and the output tokens it was fed
    #: (warm-up included).
    memory_bytes: int
    cached_tokens: int


class _Recorder:
    """Accumulates the per-step records of one proposer (plain lists: cheap appends)."""

    def __init__(self, method: Method, cached: int) -> None:
        self.method = method
        self.proposer = method.proposer
        self.cached = cached
        self.drafted: list[int] = []
        self.accepted: list[int] = []
        self.emitted: list[int] = []
        self.propose_ns: list[int] = []
        self.observe_ns: list[int] = []
        self.request_steps: list[int] = []
        self.start_ns: list[int] = []

    def run_request(self, req_id: int, prompt: TokenArray, output: TokenArray, seq: TokenArray) -> None:
        """One request, step by step; ``seq`` is prompt + output (contexts are views of it)."""
        proposer, clock = self.proposer, time.perf_counter_ns
        # The replay cannot know where an output ends (serving does not either): drafts are capped
        # by the node budget only, and fitted to it as every decoding loop fits them.
        budget = self.method.budget
        p, n = len(prompt), len(output)
        t0 = clock()
        proposer.start(req_id, prompt)
        self.start_ns.append(clock() - t0)
        pos, steps = 0, 0
        while pos < n:
            context = seq[: p + pos]
            t0 = clock()
            if len(context):
                tree = fit_tree(proposer.propose([req_id], [context], [budget], [budget])[0], budget, budget)
                tokens, parents = tree.token_ids, tree.parents
            else:
                tokens, parents = _EMPTY, _EMPTY
            t1 = clock()
            a = accepted_length(tokens, parents, output[pos:])
            emit = min(a + 1, n - pos)  # no bonus token past the end of the output
            t2 = clock()
            proposer.extend(req_id, output[pos : pos + emit])
            t3 = clock()
            self.drafted.append(len(tokens))
            self.accepted.append(a)
            self.emitted.append(emit)
            self.propose_ns.append(t1 - t0)
            self.observe_ns.append(t3 - t2)
            pos += emit
            steps += 1
        proposer.finish(req_id)
        self.request_steps.append(steps)
        self.cached += n

    def result(self, workload: str) -> ReplayResult:
        return ReplayResult(
            method=self.method.name,
            workload=workload,
            drafted=np.array(self.drafted, dtype=np.int32),
            accepted=np.array(self.accepted, dtype=np.int32),
            emitted=np.array(self.emitted, dtype=np.int32),
            propose_ns=np.array(self.propose_ns, dtype=np.int64),
            observe_ns=np.array(self.observe_ns, dtype=np.int64),
            request_steps=np.array(self.request_steps, dtype=np.int64),
            start_ns=np.array(self.start_ns, dtype=np.int64),
            memory_bytes=self.method.memory_bytes(),
            cached_tokens=self.cached,
        )


def warm_up(proposer: Proposer, trace: TokenizedTrace) -> int:
    """Feeds ``trace`` to ``proposer`` as finished requests (no speculation); returns the number
    of output tokens fed. Warm-up requests use negative ids."""
    fed = 0
    for i, (prompt, output) in enumerate(zip(trace.prompts(), trace.outputs, strict=True)):
        req_id = -1 - i
        proposer.start(req_id, prompt)
        if len(output):
            proposer.extend(req_id, output)
        proposer.finish(req_id)
        fed += len(output)
    return fed


def replay_all(
    trace: TokenizedTrace,
    methods: Sequence[Method],
    warmup: TokenizedTrace | None = None,
    progress: bool = False,
) -> list[ReplayResult]:
    """Replays every request of ``trace`` through each method (after ``warmup``, if given).

    Each method keeps its own caches; requests are interleaved (request i runs through every
    method before request i+1), so that load changes on the machine affect their timings
    alike.
    """
    recorders = [_Recorder(m, warm_up(m.proposer, warmup) if warmup is not None else 0) for m in methods]
    bar = _progress_bar(trace, ", ".join(m.name for m in methods), progress)
    for req_id, (prompt, output) in enumerate(zip(trace.prompts(), trace.outputs, strict=True)):
        seq = np.concatenate([prompt, output]).astype(np.int32, copy=False)
        for recorder in recorders:
            recorder.run_request(req_id, prompt, output, seq)
        if bar is not None:
            bar.update(len(output))
    if bar is not None:
        bar.close()
    return [r.result(trace.name) for r in recorders]


def replay(
    trace: TokenizedTrace,
    method: Method,
    warmup: TokenizedTrace | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Replays every request of ``trace`` through ``method`` (after ``warmup``, if given)."""
    return replay_all(trace, [method], warmup, progress)[0]


def _progress_bar(trace: TokenizedTrace, methods: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    # delay: the bar shows only on replays long enough to want one
    return tqdm(
        total=trace.output_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"{trace.name} ({methods})",
        leave=False,
        delay=2.0,
    )
