"""The plain-Python reference itself, on examples small enough to work out by hand from the spec."""

from __future__ import annotations

from reference_suffix import Params, RefCache, RefTree, best_draft, draft_at, substring_counts


def test_substring_counts_include_overlaps_and_stop_at_max_depth():
    counts = substring_counts([[1, 2, 1, 2, 1]], max_depth=3)
    assert counts[(1,)] == 3
    assert counts[(1, 2, 1)] == 2  # positions 0 and 2 overlap
    assert counts[(2, 1, 2)] == 1
    assert (1, 2, 1, 2) not in counts  # longer than max_depth
    assert substring_counts([[1, 2], [2, 1]], max_depth=2)[(2,)] == 2  # summed over sequences


def test_token_budget_formula():
    assert Params(5, 0.5, 0.25).token_budget(3) == 1  # floor(1.75)
    assert Params(10, 0.1).token_budget(30) == 3  # 30 * 0.1 = 3.0000000000000004 in floats; floor -> 3
    assert Params(10, 0.7).token_budget(10) == 7  # 6.999999999999999 + 1e-6 -> 7
    assert Params(2, 3.0).token_budget(4) == 2  # capped by max_spec_tokens
    assert Params(8, 1.0, -2.0).token_budget(1) == 0  # clamped at 0


# Sequence used below: "1 2" is followed by 3 twice and by 4 once; "1 2 3" by 1 once (and once by
# the end of the sequence).
SEQ = [1, 2, 3, 1, 2, 4, 1, 2, 3]


def test_path_draft_by_hand():
    counts = substring_counts([SEQ], 8)
    draft = draft_at(counts, [9, 1, 2], 2, Params(8))
    assert draft.token_ids == [3, 1]  # budget floor(2 * 1.0) = 2
    assert draft.parents == [-1, 0]
    assert draft.probs == [2 / 3, (2 / 3) * (1 / 2)]
    assert draft.score == 2 / 3 + 1 / 3
    # The best over match lengths: m=1 ("2") has a budget of 1 token only; m=3 does not occur.
    best = best_draft(counts, 8, [9, 1, 2], Params(8))
    assert (best.token_ids, best.match_len) == ([3, 1], 2)


def test_tree_draft_by_hand_breaks_prob_ties_by_push_order():
    counts = substring_counts([SEQ], 8)
    draft = draft_at(counts, [9, 1, 2], 2, Params(8, use_tree_spec=True))
    # Frontier after the match: 3 (2/3) and 4 (1/3). After taking 3, its child 1 also has 1/3,
    # but 4 was pushed first.
    assert draft.token_ids == [3, 4]
    assert draft.parents == [-1, -1]
    draft = draft_at(counts, [9, 1, 2], 2, Params(8, max_spec_offset=1, use_tree_spec=True))
    assert draft.token_ids == [3, 4, 1]
    assert draft.parents == [-1, -1, 0]


def test_path_ties_go_to_the_smallest_token_and_min_prob_stops():
    counts = substring_counts([[5, 9, 7, 5, 1, 2]], 8)
    draft = draft_at(counts, [5], 1, Params(8, max_spec_offset=3))
    assert draft.token_ids == [1, 2]  # 9 and 1 both follow 5 once: smallest id wins
    assert draft.probs == [0.5, 0.5]
    assert draft_at(counts, [5], 1, Params(8, max_spec_offset=3, min_token_prob=0.6)).token_ids == []


def test_ties_between_match_lengths_go_to_the_longer_match():
    counts = substring_counts([[5, 6, 7]], 8)
    # m=1 ("6") and m=2 ("5 6") both draft [7] with score 1.
    best = best_draft(counts, 8, [5, 6], Params(8))
    assert (best.token_ids, best.match_len) == ([7], 2)


def test_drafts_stop_at_max_depth():
    tree = RefTree(max_depth=3)
    tree.extend(0, [1, 2, 3, 4, 5])
    # Matching "1 2" (depth 2) leaves room for one more level only.
    draft = tree.speculate([1, 2], Params(8, max_spec_offset=5))
    assert draft.token_ids == [3, 4]  # via the shorter match "2" (depth 1 + 2 = 3)
    assert draft.match_len == 1


def test_cache_model_budgets_and_tokens():
    cache = RefCache(max_depth=4, max_cached_requests=2, max_cached_tokens=5)
    for req, response in [("a", [1, 2]), ("b", [3]), ("c", [4, 5])]:
        cache.start_request(req, [9, 9])
        cache.add_active_response(req, response)
        cache.stop_request(req)
    assert list(cache.cached) == ["b", "c"]  # "a" evicted by the request budget
    cache.start_request("d", [7])
    cache.add_active_response("d", [1, 1, 1, 1])
    assert cache.tokens() == (1 + 4) + 4 + 3  # local "d" + its response + cached responses
    cache.stop_request("d")
    assert list(cache.cached) == ["d"]  # 3 requests > 2: "b" evicted; 2 + 4 > 5 tokens: "c" too
    cache.start_request("e", [])
    cache.add_active_response("e", [1] * 6)
    cache.stop_request("e")
    assert list(cache.cached) == ["d"]  # larger than the whole budget: dropped at once
    cache.start_request("d", [])  # restarting a cached id evicts its old response
    assert list(cache.cached) == []


def test_cache_model_local_tree_wins_ties():
    cache = RefCache(max_depth=4, max_cached_requests=None, max_cached_tokens=100)
    cache.start_request("a", [1, 2, 3])
    cache.start_request("b", [])
    cache.add_active_response("b", [1, 2, 5])
    # After "1 2", the local tree drafts [3] and the global tree [5], both with score 1.
    assert cache.speculate("a", [1, 2], Params(8)).token_ids == [3]
    cache.add_active_response("b", [1, 2, 4] * 3)
    # Global: "1 2" -> 4 (3 of 4), then "1 2 4" -> 1 (2 of 3): score 3/4 + 1/2 beats 1.
    draft = cache.speculate("a", [1, 2], Params(8))
    assert draft.token_ids == [4, 1]
    assert draft.probs == [3 / 4, 3 / 4 * (2 / 3)]
