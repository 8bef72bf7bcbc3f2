"""The ``drafter`` setting of ``speculate``/``speculate_batch``: arctic-identical drafts by
default, suffixspec's own drafter on request, bad names rejected without changing anything."""

from __future__ import annotations

import numpy as np
import pytest

from suffixspec import SuffixCache, _native
from suffixspec.errors import DTypeError, InvalidParameterError, SuffixSpecError

SPAN = list(range(100, 140))
#: A 40-token span, other text, then the span's first 30 tokens: a copy in progress.
PROMPT = [*SPAN, 7, 8, 9, *SPAN[:30]]


def draft_tuple(draft) -> tuple:
    return (
        draft.token_ids,
        draft.parents,
        draft.probs,
        draft.score,
        draft.match_len,
    )


def make_cache() -> SuffixCache:
    cache = SuffixCache(max_depth=64)
    cache.start_request("r", PROMPT)
    cache.start_request("other", [1, 2, 3, 1, 2, 4])
    return cache


def check_valid(draft, max_spec_tokens: int) -> None:
    n = len(draft.token_ids)
    assert n <= max_spec_tokens
    parents, probs = draft.parents, draft.probs
    for i, (parent, prob) in enumerate(zip(parents, probs, strict=True)):
        assert -1 <= parent < i
        assert 0.0 < prob <= 1.0
        if parent >= 0:
            assert prob <= probs[parent]
    assert draft.score == pytest.approx(sum(probs))


def test_default_is_arctic() -> None:
    cache = make_cache()
    default = cache.speculate("r", PROMPT, max_spec_tokens=32)
    assert draft_tuple(default) == draft_tuple(
        cache.speculate("r", PROMPT, max_spec_tokens=32, drafter="arctic")
    )


@pytest.mark.parametrize("tree", [False, True])
def test_own_drafter_continues_the_copy(tree: bool) -> None:
    cache = make_cache()
    arctic = cache.speculate("r", PROMPT, max_spec_tokens=32, use_tree_spec=tree)
    ours = cache.speculate("r", PROMPT, max_spec_tokens=32, use_tree_spec=tree, drafter="suffixspec")
    check_valid(ours, 32)
    # The span seen once before continues: its next 10 tokens, then the text after it.
    assert ours.token_ids[:10] == SPAN[30:]
    assert ours.match_len == 30
    # arctic counts the context's own occurrence: the same span, each token at 1/2.
    assert arctic.token_ids[:10] == SPAN[30:]
    assert arctic.probs[0] == pytest.approx(0.5)
    assert ours.probs[0] > arctic.probs[0]


def test_batch_equals_single_calls() -> None:
    cache = make_cache()
    contexts = [PROMPT, [1, 2]]
    batch = cache.speculate_batch(["r", "other"], contexts, max_spec_tokens=8, drafter="suffixspec")
    singles = [
        cache.speculate(r, c, max_spec_tokens=8, drafter="suffixspec")
        for r, c in zip(["r", "other"], contexts, strict=True)
    ]
    assert [draft_tuple(d) for d in batch] == [draft_tuple(d) for d in singles]
    for draft in batch:
        check_valid(draft, 8)


def test_tree_level_speculate_takes_the_drafter() -> None:
    tree = _native.SuffixTree(16)
    tree.extend(0, [1, 2, 3, 4, 1, 2])
    draft = tree.speculate(np.array([1, 2], dtype=np.int32), 4, drafter="suffixspec")
    check_valid(draft, 4)
    assert draft.token_ids[:1] == [3]


@pytest.mark.parametrize(
    ("drafter", "error"),
    [("nope", InvalidParameterError), ("Arctic", InvalidParameterError), (1, DTypeError), (None, DTypeError)],
)
def test_bad_drafter_is_rejected_and_changes_nothing(drafter: object, error: type[Exception]) -> None:
    cache = make_cache()
    before = (cache.stats(), draft_tuple(cache.speculate("r", PROMPT, max_spec_tokens=8)))
    with pytest.raises(error) as caught:
        cache.speculate("r", PROMPT, max_spec_tokens=8, drafter=drafter)  # type: ignore[arg-type]
    assert isinstance(caught.value, SuffixSpecError)
    with pytest.raises(error):
        cache.speculate_batch(["r"], [PROMPT], max_spec_tokens=8, drafter=drafter)  # type: ignore[arg-type]
    assert (cache.stats(), draft_tuple(cache.speculate("r", PROMPT, max_spec_tokens=8))) == before
