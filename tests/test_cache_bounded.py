"""Bounded memory whatever the call sequence (issue 9 items 8 and 9): a bounded CI sample of the
soak in ``benches/bench_soak.py`` (1e6 cycles under the default budgets)."""

from __future__ import annotations

import numpy as np
import pytest

from suffixspec import SuffixCache
from suffixspec.cache import DEFAULT_MAX_CACHED_REQUESTS, MAX_DEPTH
from suffixspec.errors import InvalidParameterError


def test_empty_responses_are_not_kept_under_default_budgets():
    cache = SuffixCache()
    cache.start_request("warm", [1, 2])
    cache.add_active_response("warm", [3])
    cache.stop_request("warm")
    baseline = cache.stats()
    for req in range(20_000):
        cache.start_request(req, [])
        cache.stop_request(req)
    after = cache.stats()
    # Nothing kept; bytes may differ only by a map's capacity for the one active request.
    assert {**after, "bytes": 0} == {**baseline, "bytes": 0}
    assert after["bytes"] <= baseline["bytes"] + 1024
    assert list(cache.cached_requests) == ["warm"]
    assert len(cache._ids) == len(cache._handles) == 1  # the id maps need no clean-up pass
    cache.check_integrity()


def test_default_request_budget_is_finite():
    assert SuffixCache().max_cached_requests == DEFAULT_MAX_CACHED_REQUESTS < 2**20


def test_mixed_cycles_stay_bounded_with_a_small_budget():
    rng = np.random.default_rng(0)
    cache = SuffixCache(max_depth=8, max_cached_requests=64)
    samples = []
    for cycle in range(6_000):
        req = int(rng.integers(0, 300))
        if req not in cache.active_requests:
            cache.start_request(req, rng.integers(0, 9, size=int(rng.integers(0, 6))))
            cache.add_active_response(req, rng.integers(0, 9, size=int(rng.integers(0, 4))))
            cache.stop_request(req)
        if cycle % 7 == 0 and req in cache.cached_requests:
            cache.evict_cached_response(req)
        if cycle % 500 == 499:
            samples.append(cache.stats())
    cache.check_integrity()
    assert max(s["cached_requests"] for s in samples) <= 64
    assert len(cache._ids) == cache.stats()["active_requests"] + cache.stats()["cached_requests"]
    late = [s["bytes"] for s in samples[len(samples) // 2 :]]
    assert max(late) <= 1.5 * min(late)


def test_per_request_bookkeeping_is_in_the_byte_count():
    cache = SuffixCache()
    before = cache.stats()["bytes"]
    for req in range(100):
        cache.start_request(req, [])
    assert cache.stats()["bytes"] - before >= 100 * 100  # at least ~100 B per request


def test_max_depth_is_capped():
    # Ingestion costs max_depth steps per token: the cap bounds it (not a timing test).
    assert SuffixCache(max_depth=MAX_DEPTH).max_depth == MAX_DEPTH == 1024
    with pytest.raises(InvalidParameterError, match="max_depth"):
        SuffixCache(max_depth=MAX_DEPTH + 1)
    with pytest.raises(InvalidParameterError):
        SuffixCache(max_depth=10**9)
