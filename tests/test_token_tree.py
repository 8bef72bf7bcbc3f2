"""Token-tree bindings: masks, positions, merge, prune, batch blocks and acceptance, checked
against naive Python references on random trees, plus input validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suffixspec._native import TokenTree, accept_greedy_batch, build_tree_batch
from suffixspec.errors import (
    DTypeError,
    InvalidParameterError,
    InvalidTokenError,
    InvalidTreeError,
    SuffixSpecError,
)

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def tree_parts(draw, max_len: int = 40, alphabet: int = 4, monotone: bool = False):
    """(token_ids, parents, probs) of a random valid tree over a small alphabet."""
    n = draw(st.integers(0, max_len))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = draw(st.lists(st.integers(0, alphabet - 1), min_size=n, max_size=n))
    probs = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    if monotone:
        for i, parent in enumerate(parents):
            if parent >= 0:
                probs[i] *= probs[parent]
    return tokens, parents, probs


def as_input(values: list[int], form: str):
    """The same ints as a list, an int32 array or an int64 array."""
    return values if form == "list" else np.asarray(values, dtype=form)


FORMS = st.sampled_from(["list", "int32", "int64"])


def ancestors(parents: list[int], i: int) -> list[int]:
    """``i`` and its ancestors, deepest first."""
    out = [i]
    while parents[out[-1]] != -1:
        out.append(parents[out[-1]])
    return out


def token_path(tokens: list[int], parents: list[int], i: int) -> tuple[int, ...]:
    return tuple(tokens[a] for a in reversed(ancestors(parents, i)))


def naive_accept(tokens: list[int], parents: list[int], targets: list[int]) -> tuple[list[int], int]:
    accepted: list[int] = []
    tip = -1
    while True:
        wanted = targets[tip + 1]
        nxt = next((c for c in range(len(tokens)) if parents[c] == tip and tokens[c] == wanted), None)
        if nxt is None:
            return accepted, wanted
        accepted.append(nxt)
        tip = nxt


def path_min(parents: list[int], probs: list[float]) -> list[float]:
    scores: list[float] = []
    for parent, prob in zip(parents, probs, strict=True):
        scores.append(prob if parent == -1 else min(prob, scores[parent]))
    return scores


@SETTINGS
@given(tree_parts(max_len=150, alphabet=5), FORMS)
def test_mask_is_exactly_self_or_ancestor(parts, form):
    tokens, parents, probs = parts
    tree = TokenTree(as_input(tokens, form), as_input(parents, form), np.asarray(probs))
    n = len(tokens)
    expected = np.zeros((n, n), dtype=bool)
    for i in range(n):
        expected[i, ancestors(parents, i)] = True
    mask = tree.ancestor_mask()
    assert mask.dtype == np.bool_ and mask.shape == (n, n)
    np.testing.assert_array_equal(mask, expected)

    bits = tree.ancestor_mask_bits()
    assert bits.dtype == np.uint64 and bits.shape == (n, math.ceil(n / 64))
    # Bit j % 64 of word j // 64; bits past column n stay clear.
    unpacked = np.unpackbits(bits.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(unpacked[:, :n], expected)
    assert not unpacked[:, n:].any()


@SETTINGS
@given(tree_parts(max_len=60), st.integers(0, 10**6))
def test_depths_positions_paths_children(parts, prefix_len):
    tokens, parents, probs = parts
    tree = TokenTree(tokens, parents, probs)
    n = len(tokens)
    assert len(tree) == n
    np.testing.assert_array_equal(tree.token_ids, np.asarray(tokens, dtype=np.int32))
    np.testing.assert_array_equal(tree.parents, np.asarray(parents, dtype=np.int32))
    np.testing.assert_array_equal(tree.probs, np.asarray(probs, dtype=np.float64))
    depths = [len(ancestors(parents, i)) for i in range(n)]
    np.testing.assert_array_equal(tree.depths, depths)
    positions = tree.position_ids(prefix_len)
    assert positions.dtype == np.int64
    np.testing.assert_array_equal(positions, prefix_len + np.asarray(depths, dtype=np.int64))

    offsets, indices = tree.children_csr()
    assert offsets.shape == (n + 2,) and indices.shape == (n,)
    for node in range(-1, n):
        expected = [c for c in range(n) if parents[c] == node]
        np.testing.assert_array_equal(tree.children(node), expected)
        np.testing.assert_array_equal(indices[offsets[node + 1] : offsets[node + 2]], expected)
    for node in range(n):
        np.testing.assert_array_equal(tree.path_to(node), list(reversed(ancestors(parents, node))))


@SETTINGS
@given(st.lists(tree_parts(max_len=25, alphabet=3), max_size=5))
def test_merge_of_duck_typed_drafts_is_a_lossless_trie_union(drafts):
    objects = [
        SimpleNamespace(
            token_ids=np.asarray(t, dtype=np.int32),
            parents=np.asarray(p, dtype=np.int32),
            probs=np.asarray(q, dtype=np.float64),
        )
        for t, p, q in drafts
    ]
    merged = TokenTree.merge(objects)
    tokens, parents, probs = merged.token_ids.tolist(), merged.parents.tolist(), merged.probs.tolist()
    assert all(-1 <= parent < i for i, parent in enumerate(parents))
    expected: dict[tuple[int, ...], float] = {}
    for t, p, q in drafts:
        for i in range(len(t)):
            key = token_path(t, p, i)
            expected[key] = max(expected.get(key, 0.0), q[i])
    got = {token_path(tokens, parents, i): probs[i] for i in range(len(tokens))}
    # One node per distinct path (so siblings never share a token), the best prob on each.
    assert len(got) == len(tokens)
    assert got == expected
    # Mixing TokenTrees and drafts gives the same result, deterministically.
    again = TokenTree.merge([TokenTree.from_draft(o) for o in objects])
    np.testing.assert_array_equal(again.token_ids, merged.token_ids)
    np.testing.assert_array_equal(again.parents, merged.parents)


@SETTINGS
@given(tree_parts(max_len=50), st.integers(0, 60))
def test_prune_keeps_a_parent_closed_best_scoring_set(parts, budget):
    tokens, parents, probs = parts
    tree = TokenTree(tokens, parents, probs)
    pruned = tree.prune(budget)
    k = min(budget, len(tokens))
    assert len(pruned) == k
    kept_tokens, kept_parents, kept_probs = (
        pruned.token_ids.tolist(),
        pruned.parents.tolist(),
        pruned.probs.tolist(),
    )
    # Parent-closed: the pruned tree is a valid tree whose paths are paths of the original.
    original_paths = {token_path(tokens, parents, i) for i in range(len(tokens))}
    assert all(-1 <= parent < i for i, parent in enumerate(kept_parents))
    assert all(token_path(kept_tokens, kept_parents, i) in original_paths for i in range(k))
    # The kept path-min scores are the k largest of the original.
    kept_scores = sorted(path_min(kept_parents, kept_probs))
    assert kept_scores == sorted(path_min(parents, probs))[len(tokens) - k :]


@SETTINGS
@given(tree_parts(max_len=50, monotone=True), st.integers(0, 60))
def test_prune_of_monotone_probs_keeps_the_most_probable(parts, budget):
    tokens, parents, probs = parts
    pruned = TokenTree(tokens, parents, probs).prune(budget)
    k = min(budget, len(tokens))
    assert sorted(pruned.probs.tolist()) == sorted(probs)[len(probs) - k :]


@SETTINGS
@given(tree_parts(max_len=50, alphabet=3), st.lists(st.integers(0, 2), min_size=51, max_size=51), FORMS)
def test_accept_greedy_matches_a_naive_walk(parts, raw_targets, form):
    tokens, parents, probs = parts
    targets = raw_targets[: len(tokens) + 1]
    nodes, bonus = TokenTree(tokens, parents, probs).accept_greedy(as_input(targets, form))
    assert nodes.dtype == np.int64
    assert (nodes.tolist(), bonus) == naive_accept(tokens, parents, targets)


@SETTINGS
@given(st.lists(tree_parts(max_len=30, alphabet=5), max_size=6), st.integers(0, 5000))
def test_build_tree_batch_block(batch_parts, base):
    trees = [TokenTree(*parts) for parts in batch_parts]
    prefix_lens = [base + 3 * b for b in range(len(trees))]
    roots = [1000 + b for b in range(len(trees))]
    token_ids, position_ids, mask, lengths = build_tree_batch(trees, prefix_lens, roots)
    batch, n = len(trees), 1 + max((len(t) for t in trees), default=0)
    assert token_ids.shape == position_ids.shape == (batch, n)
    assert mask.shape == (batch, n, n) and lengths.shape == (batch,)
    assert token_ids.dtype == position_ids.dtype == lengths.dtype == np.int64 and mask.dtype == np.bool_
    for b, tree in enumerate(trees):
        length = 1 + len(tree)
        assert lengths[b] == length
        np.testing.assert_array_equal(token_ids[b, :length], [roots[b], *tree.token_ids.tolist()])
        np.testing.assert_array_equal(token_ids[b, length:], 0)
        np.testing.assert_array_equal(position_ids[b, 1:length], tree.position_ids(prefix_lens[b]))
        assert position_ids[b, 0] == prefix_lens[b]
        deepest = prefix_lens[b] + int(tree.depths.max(initial=0))
        np.testing.assert_array_equal(position_ids[b, length:], deepest + np.arange(1, n - length + 1))
        expected = np.eye(n, dtype=bool)
        expected[:, 0] = True
        expected[1:length, 1:length] = tree.ancestor_mask()
        np.testing.assert_array_equal(mask[b], expected)

    # Targets read off the block: the batch acceptance equals the per-tree one.
    targets = token_ids % 5
    accepted, bonus = accept_greedy_batch(trees, targets)
    assert len(accepted) == batch and bonus.shape == (batch,)
    for b, tree in enumerate(trees):
        nodes, expected_bonus = tree.accept_greedy(targets[b, : len(tree) + 1])
        np.testing.assert_array_equal(accepted[b], nodes)
        assert bonus[b] == expected_bonus


def test_small_tree_end_to_end():
    # 0 -> 1 -> 2, and 3 is a second child of 0.
    tree = TokenTree([5, 6, 7, 8], [-1, 0, 1, 0], [0.9, 0.5, 0.4, 0.6])
    nodes, bonus = tree.accept_greedy([5, 8, 0, 0, 9])
    assert (nodes.tolist(), bonus) == ([0, 3], 9)
    pruned = tree.prune(2)
    assert pruned.token_ids.tolist() == [5, 8] and pruned.parents.tolist() == [-1, 0]
    # A child more probable than its parent never outranks it.
    inverted = TokenTree([1, 2, 3], [-1, 0, -1], [0.2, 1.0, 0.5])
    assert inverted.prune(1).token_ids.tolist() == [3]
    assert inverted.prune(2).token_ids.tolist() == [1, 3]


def test_empty_trees():
    empty = TokenTree([], [])
    assert len(empty) == 0
    assert empty.ancestor_mask().shape == (0, 0)
    assert empty.ancestor_mask_bits().shape == (0, 0)
    assert empty.position_ids(7).shape == (0,)
    assert empty.children(-1).shape == (0,)
    nodes, bonus = empty.accept_greedy([42])
    assert nodes.shape == (0,) and bonus == 42
    assert len(TokenTree.merge([])) == 0
    token_ids, position_ids, mask, lengths = build_tree_batch([empty, empty], [3, 4], [1, 2])
    assert token_ids.tolist() == [[1], [2]] and position_ids.tolist() == [[3], [4]]
    assert mask.tolist() == [[[True]], [[True]]] and lengths.tolist() == [1, 1]
    token_ids, _, mask, lengths = build_tree_batch([], [], [])
    assert token_ids.shape == (0, 1) and mask.shape == (0, 1, 1) and lengths.shape == (0,)


def test_from_draft_reads_any_draft_like_object():
    draft = SimpleNamespace(token_ids=[3, 4], parents=np.array([-1, 0], dtype=np.int64), probs=[0.5, 0.25])
    tree = TokenTree.from_draft(draft)
    assert tree.token_ids.tolist() == [3, 4] and tree.probs.tolist() == [0.5, 0.25]
    assert TokenTree.from_draft(SimpleNamespace(token_ids=[3], parents=[-1])).probs.tolist() == [1.0]
    assert TokenTree.from_draft(tree).parents.tolist() == [-1, 0]
    with pytest.raises(DTypeError, match="parents"):
        TokenTree.from_draft(SimpleNamespace(token_ids=[3]))
    with pytest.raises(InvalidTreeError):
        TokenTree.from_draft(SimpleNamespace(token_ids=[3, 4], parents=[-1, 1], probs=None))


@pytest.mark.parametrize(
    ("token_ids", "parents", "probs", "error", "match"),
    [
        ([1, 2], [-1, 1], None, InvalidTreeError, "parent 1 of node 1"),
        ([1, 2], [-1, 7], None, InvalidTreeError, "parent 7"),
        ([1], [-2], None, InvalidTreeError, "parent -2"),
        ([1], [2**40], None, InvalidTreeError, "parent"),
        ([1, 2], [-1], None, InvalidTreeError, "parents has length 1, expected 2"),
        ([1, 2], [-1, 0], [0.5], InvalidTreeError, "probs has length 1"),
        ([1], [-1], [float("nan")], InvalidTreeError, "probabilit"),
        ([1], [-1], [1.5], InvalidTreeError, "probabilit"),
        ([1], [-1], [-0.5], InvalidTreeError, "probabilit"),
        (np.array([1.0, 2.0]), [-1, 0], None, DTypeError, "dtype float64"),
        ([1.0, 2.0], [-1, 0], None, DTypeError, "float"),
        ([1, -3], [-1, 0], None, InvalidTokenError, "-3"),
        (np.array([1, -3], dtype=np.int32), [-1, 0], None, InvalidTokenError, "-3"),
        ([1, 2], [-1.0, 0.0], None, DTypeError, "parents"),
        ([1, 2], np.array([-1.0, 0.0]), None, DTypeError, "parents"),
        ([1], [True], None, DTypeError, "bool"),
        ([1], [-1], ["x"], DTypeError, "probs"),
        ("ab", [-1, 0], None, DTypeError, "string"),
    ],
)
def test_bad_trees_raise_clear_errors(token_ids, parents, probs, error, match):
    with pytest.raises(error, match=match) as info:
        TokenTree(token_ids, parents, probs)
    assert isinstance(info.value, SuffixSpecError)
    assert isinstance(info.value, TypeError if error is DTypeError else ValueError)


def test_bad_queries_raise_clear_errors():
    tree = TokenTree([5, 6], [-1, 0])
    for call in (lambda: tree.children(2), lambda: tree.children(-2), lambda: tree.path_to(-1)):
        with pytest.raises(InvalidParameterError, match="out of range"):
            call()
    with pytest.raises(InvalidParameterError, match="max_nodes"):
        tree.prune(-1)
    with pytest.raises(InvalidParameterError, match="prefix_len"):
        tree.position_ids(-1)
    with pytest.raises(DTypeError):
        tree.position_ids(1.5)
    with pytest.raises(InvalidTreeError, match="target_ids has length 2, expected 3"):
        tree.accept_greedy([5, 6])
    with pytest.raises(InvalidTokenError):
        tree.accept_greedy([5, 6, -1])
    with pytest.raises(InvalidTreeError, match="prefix_lens"):
        build_tree_batch([tree], [1, 2], [0])
    with pytest.raises(InvalidTreeError, match="root_token_ids"):
        build_tree_batch([tree], [1], [0, 1])
    with pytest.raises(InvalidParameterError, match="prefix_len"):
        build_tree_batch([tree], [-1], [0])
    with pytest.raises(InvalidTokenError):
        build_tree_batch([tree], [1], [-5])
    with pytest.raises(DTypeError, match="no token_ids"):
        build_tree_batch([object()], [1], [0])
    with pytest.raises(DTypeError, match="sequence"):
        TokenTree.merge(tree)
    with pytest.raises(InvalidTreeError, match="target_ids rows"):
        accept_greedy_batch([tree], np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(InvalidParameterError, match="rows"):
        accept_greedy_batch([tree], np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(DTypeError, match="2-D"):
        accept_greedy_batch([tree], np.zeros(3, dtype=np.int64))
    with pytest.raises(DTypeError, match="integer"):
        accept_greedy_batch([tree], np.zeros((1, 3)))
