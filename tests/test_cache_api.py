"""The ``SuffixCache`` surface: accepted inputs, properties, request views, restarts, drafts, stats."""

from __future__ import annotations

import numpy as np
import pytest

from reference_suffix import Params, RefCache, assert_same_draft
from suffixspec import Draft, SuffixCache
from suffixspec.cache import DEFAULT_MAX_CACHED_REQUESTS, DEFAULT_MAX_CACHED_TOKENS

PROMPT = [1, 2, 3, 1, 2, 4, 1, 2, 3]


def draft_tuple(draft: Draft) -> tuple:
    return (
        draft.token_ids,
        draft.parents,
        draft.probs,
        draft.score,
        draft.match_len,
    )


def _tensor(tokens: list[int], dtype: str):
    torch = pytest.importorskip("torch")
    return torch.tensor(tokens, dtype=getattr(torch, dtype))


@pytest.mark.parametrize(
    "make",
    [
        list,
        tuple,
        lambda p: np.asarray(p, dtype=np.int32),
        lambda p: np.asarray(p, dtype=np.int64),
        lambda p: np.asarray(p, dtype=np.uint16),
        lambda p: np.repeat(np.asarray(p, dtype=np.int32), 2)[::2],  # non-contiguous view
        lambda p: _tensor(p, "int64"),
        lambda p: _tensor(p, "int32"),
    ],
    ids=["list", "tuple", "int32", "int64", "uint16", "strided", "torch-int64", "torch-int32"],
)
def test_token_sequences_of_every_accepted_type(make):
    cache = SuffixCache(max_depth=8)
    cache.start_request("a", make(PROMPT))
    cache.add_active_response("a", make(PROMPT))
    ref = RefCache(8, None, 1 << 22)
    ref.start_request("a", PROMPT)
    ref.add_active_response("a", PROMPT)
    for params in (Params(8), Params(8, use_tree_spec=True)):
        draft = cache.speculate("a", make(PROMPT[:5]), **params.kwargs())
        assert_same_draft(draft, ref.speculate("a", PROMPT[:5], params))
        assert len(draft) > 0
    assert cache.stats()["tokens"] == ref.tokens()


def test_any_int_sequence_works():
    cache = SuffixCache(max_depth=8)
    cache.start_request("a", range(1, 6))
    assert cache.speculate("a", range(1, 3)).token_ids == [3, 4]


def test_only_the_last_max_depth_context_tokens_are_read():
    cache = SuffixCache(max_depth=4)
    cache.start_request("a", PROMPT * 3)
    context = [7, 7, 7, *PROMPT, 1, 2]
    expected = draft_tuple(cache.speculate("a", context[-4:], use_tree_spec=True))
    assert len(expected[0]) > 0
    for make in (list, tuple, lambda c: np.asarray(c, np.int32), lambda c: np.asarray(c, np.int64)):
        assert draft_tuple(cache.speculate("a", make(context), use_tree_spec=True)) == expected
        assert draft_tuple(cache.speculate_batch(["a"], [make(context)], use_tree_spec=True)[0]) == expected


def test_draft_object():
    cache = SuffixCache(max_depth=8)
    cache.start_request("a", PROMPT)
    draft = cache.speculate("a", [9, 1, 2], use_tree_spec=True)
    assert isinstance(draft, Draft)
    # Lists, as arctic returns them (engines test them for truth and slice them in place) ...
    assert type(draft.token_ids) is list and type(draft.parents) is list and type(draft.probs) is list
    assert all(type(t) is int for t in draft.token_ids) and all(type(p) is float for p in draft.probs)
    assert draft.token_ids and draft.token_ids[:1] == [draft.token_ids[0]]
    # ... and the same data as zero-copy numpy arrays.
    assert draft.token_ids_array.dtype == np.int32 and draft.parents_array.dtype == np.int32
    assert draft.probs_array.dtype == np.float64
    assert draft.token_ids_array.tolist() == draft.token_ids
    assert draft.parents_array.tolist() == draft.parents and draft.probs_array.tolist() == draft.probs
    assert draft.token_ids_array is draft.token_ids_array.base or not draft.token_ids_array.flags.owndata
    assert len(draft) == len(draft.token_ids) == len(draft.parents) == len(draft.probs)
    assert draft.score == pytest.approx(sum(draft.probs))
    assert 1 <= draft.match_len <= 3
    assert all(-1 <= p < i for i, p in enumerate(draft.parents))  # parents first
    assert "Draft(token_ids=" in repr(draft)
    empty = cache.speculate("a", [42])
    assert len(empty) == 0 and empty.score == 0.0 and empty.match_len == 0


def test_max_spec_tokens_defaults_to_max_depth():
    cache = SuffixCache(max_depth=5)
    cache.start_request("a", [0, 1, 2, 0, 3, 4, 0, 5, 6, 0, 7, 8])
    # A tree draft after "0" can hold 8 nodes (4 branches of 2); the match allows 11 tokens.
    kwargs = {"max_spec_offset": 10, "min_token_prob": 0.0, "use_tree_spec": True}
    assert len(cache.speculate("a", [0], **kwargs)) == 5
    assert len(cache.speculate("a", [0], 7, **kwargs)) == 7
    assert len(cache.speculate("a", [0], 0, **kwargs)) == 0


def test_properties_and_aliases():
    cache = SuffixCache()
    assert (cache.max_depth, cache.max_tree_depth) == (64, 64)
    # The default request budget is finite (arctic's "-1 = no limit" default means it here).
    assert cache.max_cached_requests == DEFAULT_MAX_CACHED_REQUESTS == 1 << 16
    assert cache.max_cached_tokens == DEFAULT_MAX_CACHED_TOKENS == 1 << 22
    cache = SuffixCache(16, None, 100)
    assert (cache.max_depth, cache.max_cached_requests, cache.max_cached_tokens) == (16, -1, 100)
    assert SuffixCache(max_tree_depth=12).max_depth == 12
    assert SuffixCache(12, max_tree_depth=12).max_tree_depth == 12
    assert SuffixCache(max_cached_requests=-7).max_cached_requests == DEFAULT_MAX_CACHED_REQUESTS
    assert SuffixCache(max_cached_requests=3).max_cached_requests == 3
    assert "max_depth=64" in repr(SuffixCache())


def test_request_views_are_live_sets_in_order():
    cache = SuffixCache(max_depth=4)
    active = cache.active_requests
    for req_id in ["x", 3, ("t", 1)]:
        cache.start_request(req_id, [1, 2])
        cache.add_active_response(req_id, [3])
    assert list(active) == ["x", 3, ("t", 1)]  # start order, and live
    assert len(active) == 3 and 3 in active and "y" not in active
    with pytest.raises(TypeError):  # as for any set
        [1] in active  # noqa: B015
    assert active == {"x", 3, ("t", 1)}
    assert active & {"x", "zz"} == {"x"}
    cache.stop_request(3)
    cache.stop_request("x")
    assert list(cache.cached_requests) == [3, "x"]  # oldest stop first
    assert set(active) == {("t", 1)}
    assert repr(cache.cached_requests) == "cached_requests([3, 'x'])"


def test_restarting_a_cached_id_evicts_its_old_response():
    cache = SuffixCache(max_depth=4)
    cache.start_request("r", [])
    cache.add_active_response("r", [5, 6, 7])
    cache.stop_request("r")
    cache.start_request("other", [])
    assert cache.speculate("other", [5]).token_ids == [6]  # from the cached response
    cache.start_request("r", [1])
    assert "r" in cache.active_requests and "r" not in cache.cached_requests
    assert len(cache.speculate("other", [5])) == 0  # the old response is gone
    assert cache.stats()["cached_tokens"] == 0
    cache.check_integrity()


def test_global_tree_shares_responses_and_can_be_disabled():
    for kwargs, shared in [
        ({}, True),
        ({"max_cached_requests": 0}, False),
        ({"max_cached_tokens": 0}, False),
    ]:
        cache = SuffixCache(max_depth=6, **kwargs)
        cache.start_request("a", [])
        cache.add_active_response("a", [4, 5, 6, 7])
        cache.start_request("b", [9])
        # An active request's response is visible to others at once, and after it stops.
        assert (cache.speculate("b", [4, 5]).token_ids == [6, 7]) == shared
        cache.stop_request("a")
        assert (cache.speculate("b", [4, 5]).token_ids == [6, 7]) == shared
        assert list(cache.cached_requests) == (["a"] if shared else [])


def test_budgets_evict_oldest_first_and_stats_follow():
    cache = SuffixCache(max_depth=4, max_cached_requests=2, max_cached_tokens=10)
    for i in range(4):
        cache.start_request(i, [i])
        cache.add_active_response(i, [i] * 3)
        cache.stop_request(i)
    assert list(cache.cached_requests) == [2, 3]
    stats = cache.stats()
    assert (stats["cached_requests"], stats["cached_tokens"], stats["tokens"]) == (2, 6, 6)
    cache.start_request("big", [])
    cache.add_active_response("big", [7] * 11)
    cache.stop_request("big")  # larger than the whole token budget: not cached, nothing flushed
    assert list(cache.cached_requests) == [2, 3]
    cache.evict_cached_response(2)
    assert list(cache.cached_requests) == [3]
    assert cache.stats()["cached_tokens"] == 3
    assert set(cache.stats()) == {
        "active_requests",
        "cached_requests",
        "tokens",
        "cached_tokens",
        "nodes",
        "bytes",
    }
    cache.check_integrity()


def test_many_budget_evictions_keep_the_id_bookkeeping_small():
    cache = SuffixCache(max_depth=4, max_cached_requests=3)
    for i in range(500):
        cache.start_request(i, [1, 2])
        cache.add_active_response(i, [i % 7])
        cache.stop_request(i)
    assert list(cache.cached_requests) == [497, 498, 499]
    assert len(cache._ids) < 200  # stale handles of evicted responses are dropped
    cache.check_integrity()


def test_global_tree_view_offers_what_arctic_users_reach_for():
    cache = SuffixCache(max_depth=8)
    assert cache.global_tree.estimate_memory() > 0  # the empty tree's own allocation
    empty = cache.global_tree.estimate_memory()
    cache.start_request("a", [1, 2, 3])
    cache.add_active_response("a", list(range(100, 400)))
    cache.stop_request("a")
    # arctic's convention: "" when sound (its simulator does `if ret := ...: raise`).
    assert cache._global_tree.check_integrity() == cache.global_tree.check_integrity() == ""
    assert cache._global_tree.estimate_memory() == cache.global_tree.estimate_memory() > empty
    # The prompt is not in the global tree: only the 300 response tokens count.
    assert cache.global_tree.estimate_memory() <= cache.stats()["bytes"]
    assert SuffixCache(max_cached_requests=0).global_tree.estimate_memory() == 0


def test_max_spec_tokens_none_means_max_depth():
    # arctic 0.3.0 documents this but raises AttributeError; here it does the documented thing.
    cache = SuffixCache(max_depth=6)
    cache.start_request("a", [1, 2, 3, 4, 5, 6, 7, 8, 1, 2])
    unlimited = cache.speculate("a", [1, 2], max_spec_tokens=None, max_spec_factor=10.0)
    explicit = cache.speculate("a", [1, 2], max_spec_tokens=6, max_spec_factor=10.0)
    assert unlimited.token_ids == explicit.token_ids
    assert unlimited.token_ids == [3, 4, 5, 6, 7]  # depth 6: "2" matched + 5 drafted
    batch = cache.speculate_batch(["a"], [[1, 2]], max_spec_tokens=None, max_spec_factor=10.0)
    assert batch[0].token_ids == unlimited.token_ids
