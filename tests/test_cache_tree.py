"""``SuffixTree`` (the native building block) against the naive reference: counts and drafts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_suffix import Params, RefTree, assert_same_draft
from suffixspec import SuffixTree
from suffixspec.errors import DTypeError, InvalidParameterError, InvalidTokenError, UnknownRequestError

# Small alphabets make repeats (and so branching, ties and deep counts) likely; the large ids
# check the whole int32 range.
ALPHABETS = st.sampled_from([[0, 1], [0, 1, 2], [3, 5, 7, 11], [0, 2**31 - 1], list(range(6))])
CONTAINERS = st.sampled_from(
    [list, tuple, lambda c: np.asarray(c, np.int32), lambda c: np.asarray(c, np.int64)]
)
PARAMS = st.builds(
    Params,
    max_spec_tokens=st.integers(0, 12),
    max_spec_factor=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.7]),
    max_spec_offset=st.sampled_from([-2.0, 0.0, 0.5, 1.0, 4.0]),
    min_token_prob=st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5, 1.0]),
    use_tree_spec=st.booleans(),
)


@st.composite
def trees(draw):
    """A native tree and its reference, built by chunked extends and some removals."""
    alphabet = draw(ALPHABETS)
    max_depth = draw(st.integers(1, 7))
    tree, ref = SuffixTree(max_depth), RefTree(max_depth)
    tokens = st.lists(st.sampled_from(alphabet), max_size=12)
    for _ in range(draw(st.integers(0, 8))):
        seq_id = draw(st.integers(0, 3))
        if seq_id in ref.seqs and draw(st.booleans()) and draw(st.booleans()):
            tree.remove(seq_id)
            ref.remove(seq_id)
        else:
            chunk = draw(tokens)
            tree.extend(seq_id, draw(CONTAINERS)(chunk))
            ref.extend(seq_id, chunk)
    return alphabet, tree, ref


@settings(max_examples=150)
@given(trees())
def test_count_of_every_substring_matches_reference(built):
    alphabet, tree, ref = built
    counts = ref.counts()
    for string, count in counts.items():
        assert tree.count(list(string)) == count
    assert tree.num_tokens() == ref.num_tokens()
    # Absent strings, the empty string and strings longer than max_depth count 0.
    assert tree.count([]) == 0
    for seq in ref.seqs.values():
        if len(seq) > tree.max_depth:
            assert tree.count(seq[: tree.max_depth + 1]) == 0
    probe = [*alphabet[:1], 12345]
    assert tree.count(probe) == counts.get(tuple(probe), 0)
    tree.check_integrity()


@settings(max_examples=250)
@given(trees(), PARAMS, st.data())
def test_drafts_match_reference(built, params, data):
    alphabet, tree, ref = built
    # Contexts: random strings, and suffixes of stored sequences (which always match).
    sources = [seq for seq in ref.seqs.values() if seq]
    context = data.draw(st.lists(st.sampled_from(alphabet), max_size=10))
    if sources and data.draw(st.booleans()):
        seq = data.draw(st.sampled_from(sources))
        end = data.draw(st.integers(1, len(seq)))
        context = context + seq[:end]
    assert_same_draft(tree.speculate(context, **params.kwargs()), ref.speculate(context, params))


def test_drafts_on_a_longer_text_match_reference():
    # One bigger case than the property test reaches: repetitive text over 5 symbols, depth 12.
    rng = np.random.default_rng(7)
    motifs = [rng.integers(0, 5, size=int(n)).tolist() for n in rng.integers(3, 9, size=6)]
    text = [t for i in rng.integers(0, len(motifs), size=60) for t in motifs[i]]
    tree, ref = SuffixTree(12), RefTree(12)
    tree.extend(1, np.asarray(text, dtype=np.int32))
    ref.extend(1, text)
    counts = ref.counts()
    for string, count in counts.items():
        assert tree.count(list(string)) == count
    for end in range(1, len(text), 7):
        for params in (Params(16), Params(16, 0.5, 2.0, 0.05, True), Params(6, 2.0, 0.0, 0.2, False)):
            context = text[:end]
            assert_same_draft(tree.speculate(context, **params.kwargs()), ref.speculate(context, params))


def test_remove_restores_counts():
    tree = SuffixTree(4)
    tree.extend(0, [1, 2, 1, 2])
    before = {s: tree.count(list(s)) for s in [(1,), (1, 2), (2, 1, 2)]}
    tree.extend(5, [1, 2, 3])
    assert tree.count([1, 2]) == before[(1, 2)] + 1
    tree.remove(5)
    assert {s: tree.count(list(s)) for s in before} == before
    assert tree.num_tokens() == 4
    tree.check_integrity()


def test_tree_errors_change_nothing():
    tree = SuffixTree(4)
    tree.extend(0, [1, 2, 3])
    with pytest.raises(InvalidTokenError):
        tree.extend(0, [4, -1])
    with pytest.raises(DTypeError):
        tree.extend(0, np.array([4.0, 5.0]))
    with pytest.raises(InvalidParameterError):
        tree.extend(-1, [4])
    with pytest.raises(UnknownRequestError):
        tree.remove(9)
    with pytest.raises(InvalidParameterError):
        SuffixTree(0)
    with pytest.raises(InvalidParameterError):
        tree.speculate([1], 4, min_token_prob=1.5)
    assert tree.num_tokens() == 3
    assert tree.count([3]) == 1
    assert tree.count([4]) == 0
    tree.check_integrity()
