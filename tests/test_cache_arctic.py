"""``SuffixCache`` as a drop-in for arctic-inference's ``SuffixDecodingCache`` (skipped without it).

Known, deliberate differences (see ``suffixspec.cache``): arctic never matches the whole context
(match lengths ``< len(context)``), resolves equal path counts by insertion order where we take
the smallest token id, keeps probabilities in float32, and lists active requests among the
cached ones.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from reference_suffix import Params, RefCache, draft_at, substring_counts
from suffixspec import SuffixCache

arctic = pytest.importorskip(
    "arctic_inference.suffix_decoding", reason="arctic-inference (the peer) is not installed"
)

FLOAT32_TOL = 1e-5  # arctic's probabilities and scores are float32
# Thresholds chosen away from every count ratio c/n with n < 10_000 (probabilities along a path
# telescope to such ratios), so float32 rounding cannot put a token on different sides of them.
MIN_PROBS = [0.0999, 0.2501, 0.0]


def test_public_api_names_and_signatures_match():
    theirs, ours = arctic.SuffixDecodingCache, SuffixCache
    public = [name for name in vars(theirs) if not name.startswith("_")]
    assert public, "arctic's cache has no public members?"
    for name in public:
        assert hasattr(ours, name), name
        their_member, our_member = inspect.getattr_static(theirs, name), inspect.getattr_static(ours, name)
        assert isinstance(our_member, property) == isinstance(their_member, property), name
        if callable(their_member):
            _assert_compatible(inspect.signature(their_member), inspect.signature(our_member), name)
    # The constructor: same positions; arctic's keyword ``max_tree_depth`` is accepted as an alias.
    their_init = inspect.signature(theirs.__init__)
    our_init = inspect.signature(ours.__init__)
    renamed = their_init.replace(
        parameters=[
            p.replace(name="max_depth") if p.name == "max_tree_depth" else p
            for p in their_init.parameters.values()
        ]
    )
    _assert_compatible(renamed, our_init, "__init__")
    assert "max_tree_depth" in our_init.parameters


def _assert_compatible(theirs: inspect.Signature, ours: inspect.Signature, name: str) -> None:
    """Every call valid for arctic's method is valid for ours: same names, positions and defaults;
    extra parameters of ours must be optional."""
    their_params, our_params = list(theirs.parameters.values()), list(ours.parameters.values())
    for index, theirs_p in enumerate(their_params):
        ours_p = our_params[index]
        assert (ours_p.name, ours_p.kind) == (theirs_p.name, theirs_p.kind), name
        if theirs_p.default is not inspect.Parameter.empty:
            assert ours_p.default == theirs_p.default, (name, ours_p.name)
    assert all(p.default is not inspect.Parameter.empty for p in our_params[len(their_params) :]), name


def _workload(seed: int):
    """Requests of a random workload: prompts and responses made of shared motifs over a small
    alphabet, so that contexts match both in prompts and in other requests' responses."""
    rng = np.random.default_rng(seed)
    motifs = [rng.integers(0, 6, size=int(n)).tolist() for n in rng.integers(2, 7, size=8)]

    def text(pieces: int) -> list[int]:
        return [t for i in rng.integers(0, len(motifs), size=pieces) for t in motifs[i]]

    return [(f"req{r}", text(4), [text(1) for _ in range(int(rng.integers(2, 6)))]) for r in range(8)]


def _path_is_tie_free(counts, context: list[int], match_len: int, tokens: list[int]) -> bool:
    """Whether ``tokens`` is a path below the matched suffix where every step takes the child with
    a strictly highest count (so any tie rule of a greedy walk takes it)."""
    node = tuple(context[len(context) - match_len :])
    if counts.get(node, 0) == 0:
        return False
    for token in tokens:
        child = counts.get((*node, token), 0)
        siblings = [
            c for s, c in counts.items() if len(s) == len(node) + 1 and s[:-1] == node and s[-1] != token
        ]
        if child == 0 or any(c >= child for c in siblings):
            return False
        node = (*node, token)
    return True


@pytest.mark.parametrize("use_tree_spec", [False, True])
def test_scores_never_below_arctic_on_a_random_workload(use_tree_spec):
    max_depth = 8
    rng = np.random.default_rng(1)
    checked = skipped = 0
    for seed in range(3):
        ours, theirs = SuffixCache(max_depth), arctic.SuffixDecodingCache(max_depth)
        ref = RefCache(max_depth, None, 1 << 22)
        for req_id, prompt, chunks in _workload(seed):
            for cache in (ours, theirs, ref):
                cache.start_request(req_id, prompt)
            context = list(prompt)
            for chunk in chunks:
                kwargs = {
                    "max_spec_tokens": int(rng.integers(1, 12)),
                    "max_spec_factor": float(rng.choice([0.5, 1.0, 2.0])),
                    "max_spec_offset": float(rng.choice([0.0, 1.0, 2.5])),
                    "min_token_prob": float(rng.choice(MIN_PROBS)),
                    "use_tree_spec": use_tree_spec,
                }
                mine, peer = (
                    ours.speculate(req_id, context, **kwargs),
                    theirs.speculate(req_id, context, **kwargs),
                )
                if peer.token_ids:
                    request = ref.active[req_id]
                    trees = [[request.prompt + request.response], ref.global_sequences()]
                    # In tree mode the score is the sum of the top-k probabilities whatever the tie
                    # rule; a greedy path can differ only after a tie between child counts.
                    comparable = use_tree_spec or any(
                        _path_is_tie_free(
                            substring_counts(seqs, max_depth), context, peer.match_len, peer.token_ids
                        )
                        for seqs in trees
                    )
                    if comparable:
                        checked += 1
                        assert mine.score >= peer.score - FLOAT32_TOL, (req_id, context, kwargs)
                    else:
                        skipped += 1
                for cache in (ours, theirs, ref):
                    cache.add_active_response(req_id, chunk)
                context += chunk
            for cache in (ours, theirs, ref):
                cache.stop_request(req_id)
            assert set(ours.active_requests) == set(theirs.active_requests)
            # arctic lists active requests among the cached ones (they own a global-tree slot).
            assert set(ours.cached_requests) == set(theirs.cached_requests) - set(theirs.active_requests)
    assert checked >= 40 and checked >= 3 * skipped, (checked, skipped)


@pytest.mark.parametrize("use_tree_spec", [False, True])
def test_identical_drafts_where_no_tie_or_off_by_one_can_arise(use_tree_spec):
    """A hand-built case where both libraries must return the very same draft.

    Every token id is used by one "document" only: X (20 distinct ids), copied as the response of
    three stopped requests, and V = X[:10] + 10 other ids, the response of a fourth. Request B
    (prompt: one unique id) then replays X. Its context ``[p] + X[:j]``:
    * never matches as a whole (``p`` occurs only at the start of B's own local tree, where nothing
      follows X[:j]), so arctic's "match length < len(context)" rule changes nothing;
    * has no continuation in the local tree, so only the global tree drafts;
    * below any suffix of it, the next token is X[j] with count 3 + (j < 10) against 1 for V's
      branch at j = 10: child counts are never equal, so no tie rule matters, and probabilities
      (0.8, 0.6, 0.2) never tie in tree mode either;
    * with factor 2, offset 0 and depth 8, a match of length m may draft min(2m, 8 - m) tokens,
      which peaks at m = 3 alone while at least 5 tokens of X remain: the best match length is
      unique (checked below with the reference), so the "ties go to the longer/shorter match"
      rules do not matter either. In tree mode the draft then also takes V's branch (prob 0.2).
    """
    max_depth, x = 8, list(range(100, 120))
    v = x[:10] + list(range(200, 210))
    ours, theirs = SuffixCache(max_depth), arctic.SuffixDecodingCache(max_depth)
    for cache in (ours, theirs):
        for i, response in enumerate([x, x, x, v]):
            cache.start_request(f"old{i}", [1000 + i])
            cache.add_active_response(f"old{i}", response)
            cache.stop_request(f"old{i}")
        cache.start_request("B", [2000])
    params = Params(max_spec_tokens=8, max_spec_factor=2.0, min_token_prob=0.1, use_tree_spec=use_tree_spec)
    steps = range(1, len(x) - 5 + 1)
    branched = 0
    compared = 0
    for j in steps:
        for cache in (ours, theirs):
            cache.add_active_response("B", [x[j - 1]])
        context = [2000, *x[:j]]
        # The global tree as both hold it: the cached responses and B's response so far.
        counts = substring_counts([x, x, x, v, x[:j]], max_depth)
        scores = [
            draft_at(counts, context, m, params).score for m in range(1, min(len(context), max_depth) + 1)
        ]
        best = max(scores)
        if best > 0:
            assert scores.count(best) == 1, "the case must have a unique best match length"
        mine, peer = (
            ours.speculate("B", context, **params.kwargs()),
            theirs.speculate("B", context, **params.kwargs()),
        )
        assert mine.token_ids == list(peer.token_ids)
        assert mine.parents == list(peer.parents)
        assert mine.probs == pytest.approx(list(peer.probs), abs=FLOAT32_TOL)
        assert mine.score == pytest.approx(peer.score, abs=FLOAT32_TOL)
        assert mine.match_len == peer.match_len
        compared += len(peer.token_ids) > 0
        branched += mine.parents != list(range(-1, len(mine) - 1))
    assert compared == len(steps)
    assert branched > 0 if use_tree_spec else branched == 0
