"""Concurrency: threads sharing one ``SuffixCache`` get the results of a sequential run, and
``speculate_batch`` equals per-request ``speculate``."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from suffixspec import SuffixCache

THREADS = 4
REQUESTS_PER_THREAD = 10
SPEC_KWARGS = [
    {"max_spec_tokens": 8},
    {"max_spec_tokens": 16, "max_spec_factor": 2.0, "min_token_prob": 0.05, "use_tree_spec": True},
]


def workload(worker: int) -> list[tuple[str, list[int], list[list[int]]]]:
    """Requests of one worker: (id, prompt, response chunks). Each worker draws from its own range
    of token ids, so no other worker's text can ever match its contexts: its drafts do not depend
    on how the threads interleave, even though all responses share the global tree."""
    rng = np.random.default_rng(worker)
    base = 1000 * worker
    motifs = [(base + rng.integers(0, 12, size=int(n))).tolist() for n in rng.integers(3, 8, size=5)]

    def text(pieces: int) -> list[int]:
        return [t for i in rng.integers(0, len(motifs), size=pieces) for t in motifs[i]]

    return [
        (f"w{worker}-r{r}", text(6), [text(1) for _ in range(int(rng.integers(3, 8)))])
        for r in range(REQUESTS_PER_THREAD)
    ]


def run_worker(cache: SuffixCache, worker: int, out: list) -> None:
    """start, then add + speculate (both modes) per chunk, then stop; records every draft."""
    for req_id, prompt, chunks in workload(worker):
        cache.start_request(req_id, np.asarray(prompt, dtype=np.int32))
        context = list(prompt)
        for chunk in chunks:
            for kwargs in SPEC_KWARGS:
                draft = cache.speculate(req_id, context, **kwargs)
                out.append((draft.token_ids, draft.parents, draft.probs))
            cache.add_active_response(req_id, chunk)
            context += chunk
        cache.stop_request(req_id)


def test_concurrent_requests_match_a_sequential_run():
    sequential_cache = SuffixCache(max_depth=16)
    expected = {w: [] for w in range(THREADS)}
    for worker in range(THREADS):
        run_worker(sequential_cache, worker, expected[worker])

    cache = SuffixCache(max_depth=16)
    results = {w: [] for w in range(THREADS)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def target(worker: int) -> None:
        try:
            barrier.wait()
            run_worker(cache, worker, results[worker])
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert results == expected
    assert any(tokens for tokens, _, _ in expected[0])  # the workload does draft something
    # Same final contents; only the stop order (the order of cached_requests) may differ.
    assert set(cache.cached_requests) == set(sequential_cache.cached_requests)
    assert cache.stats()["tokens"] == sequential_cache.stats()["tokens"]
    cache.check_integrity()


def test_speculation_concurrent_with_mutation_stays_consistent():
    # Readers speculate on a fixed request while a writer grows and stops other requests.
    cache = SuffixCache(max_depth=8)
    cache.start_request("fixed", [1, 2, 3, 4] * 4)
    reference = cache.speculate("fixed", [9, 1, 2]).token_ids
    stop = threading.Event()
    seen: list[list[int]] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(cache.speculate("fixed", [9, 1, 2]).token_ids)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for r in range(30):
            cache.start_request(r, [5, 6, 7])
            cache.add_active_response(r, [5 + r % 3] * 5)  # never contains 1 2: no effect on "fixed"
            cache.stop_request(r)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert seen and all(tokens == reference for tokens in seen)
    cache.check_integrity()


@pytest.mark.parametrize("kwargs", SPEC_KWARGS)
def test_speculate_batch_equals_per_request_speculate(kwargs):
    cache = SuffixCache(max_depth=16)
    contexts = {}
    for worker in range(3):
        for req_id, prompt, chunks in workload(worker)[:3]:
            cache.start_request(req_id, prompt)
            for chunk in chunks[:-1]:
                cache.add_active_response(req_id, chunk)
            contexts[req_id] = prompt + [t for chunk in chunks[:-1] for t in chunk]
    cache.stop_request("w0-r0")  # its response stays in the global tree
    del contexts["w0-r0"]
    req_ids = list(contexts)
    # Mixed input types in one batch.
    batch_contexts = [
        np.asarray(c, dtype=np.int32) if i % 2 else c for i, c in enumerate(contexts[r] for r in req_ids)
    ]
    drafts = cache.speculate_batch(req_ids, batch_contexts, **kwargs)
    assert len(drafts) == len(req_ids)
    for req_id, draft in zip(req_ids, drafts, strict=True):
        single = cache.speculate(req_id, contexts[req_id], **kwargs)
        assert draft.token_ids == single.token_ids
        assert draft.parents == single.parents
        assert draft.probs == single.probs
        assert (draft.score, draft.match_len) == (single.score, single.match_len)
    assert sum(len(d) for d in drafts) > 0
    assert cache.speculate_batch([], []) == []
