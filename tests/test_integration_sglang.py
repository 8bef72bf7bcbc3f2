"""The tree -> SGLang n-gram draft format conversion and the engine-free draft source, without
SGLang (tests/integrations/test_sglang_plugin.py checks them against the real package)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from suffixspec import InvalidParameterError, TokenTree
from suffixspec.integrations.sglang import SuffixDraftSource, tree_to_sglang, trees_to_sglang


def fill_result(last_token: int, children: dict[int, list[tuple[int, int]]], width: int):
    """SGLang 0.5.23's `fillResult` (kernels/jit/csrc/ngram_corpus/result.cpp) transcribed: BFS
    from the root over `children[node] = [(token, child), ...]` (node 0 = root), zero padding whose
    parent is slot 0, each row the parent's row prefix plus itself."""
    tokens, prevs = [last_token], [-1]
    queue = [(t, n, 0) for t, n in children.get(0, [])]
    while queue:
        token, node, prev = queue.pop(0)
        tokens.append(token)
        prevs.append(prev)
        queue.extend((t, n, len(tokens) - 1) for t, n in children.get(node, []))
    while len(tokens) < width:
        tokens.append(0)
        prevs.append(0)
    mask = np.zeros((width, width), dtype=np.uint8)
    mask[0, 0] = 1
    for i in range(width):
        if prevs[i] != -1:
            mask[i, : prevs[i] + 1] = mask[prevs[i], : prevs[i] + 1]
        mask[i, i] = 1
    return np.array(tokens), mask


def as_children(tree: TokenTree) -> dict[int, list[tuple[int, int]]]:
    """The tree as fill_result's trie: node i is trie node i + 1, children in index order."""
    children: dict[int, list[tuple[int, int]]] = {}
    for i, (token, parent) in enumerate(zip(tree.token_ids, tree.parents, strict=True)):
        children.setdefault(int(parent) + 1, []).append((int(token), i + 1))
    return children


def test_golden_small_tree() -> None:
    # Index order (parents first, not breadth first): A, C (under A), E (under C), B, D (under B).
    tree = TokenTree([11, 13, 15, 12, 14], [-1, 0, 1, -1, 3])
    tokens, mask = tree_to_sglang(tree, last_token=99, width=8)
    assert tokens.tolist() == [99, 11, 12, 13, 14, 15, 0, 0]  # breadth first, zero padding
    expected = np.array(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],  # root
            [1, 1, 0, 0, 0, 0, 0, 0],  # A
            [1, 0, 1, 0, 0, 0, 0, 0],  # B
            [1, 1, 0, 1, 0, 0, 0, 0],  # C under A
            [1, 0, 1, 0, 1, 0, 0, 0],  # D under B
            [1, 1, 0, 1, 0, 1, 0, 0],  # E under C
            [1, 0, 0, 0, 0, 0, 1, 0],  # padding: root and itself
            [1, 0, 0, 0, 0, 0, 0, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(mask, expected)


@st.composite
def trees(draw: st.DrawFn) -> TokenTree:
    n = draw(st.integers(0, 12))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return TokenTree(np.array(tokens, dtype=np.int32), np.array(parents, dtype=np.int32))


@given(trees(), st.integers(0, 1000))
def test_matches_sglang_fill_result(tree: TokenTree, last: int) -> None:
    width = len(tree) + 1 + 3  # room for every node, plus padding
    tokens, mask = tree_to_sglang(tree, last, width)
    ref_tokens, ref_mask = fill_result(last, as_children(tree), width)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_array_equal(mask, ref_mask.astype(bool))


def test_wider_trees_keep_their_best_nodes() -> None:
    tree = TokenTree([1, 2, 3, 4], [-1, -1, 0, 2], [0.9, 0.2, 0.8, 0.7])
    tokens, mask = tree_to_sglang(tree, last_token=7, width=3)
    assert tokens.tolist() == [7, 1, 3]  # 2 (p=0.2) dropped; 4 does not fit
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    tokens, _ = tree_to_sglang(TokenTree([], []), last_token=7, width=1)
    assert tokens.tolist() == [7]
    with pytest.raises(InvalidParameterError):
        tree_to_sglang(tree, 7, 0)


def test_batch_layout_is_batch_gets() -> None:
    a, b = TokenTree([1], [-1]), TokenTree([2, 3], [-1, 0])
    tokens, mask = trees_to_sglang([a, b], [5, 6], width=4)
    assert tokens.dtype == mask.dtype == np.int64
    assert tokens.shape == (8,) and mask.shape == (32,)
    assert tokens.tolist() == [5, 1, 0, 0, 6, 2, 3, 0]
    np.testing.assert_array_equal(mask.reshape(2, 4, 4)[1], tree_to_sglang(b, 6, 4)[1])
    with pytest.raises(InvalidParameterError):
        trees_to_sglang([a], [5, 6], width=4)


def test_draft_source_follows_requests() -> None:
    source = SuffixDraftSource(width=6)
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    tokens, _ = source.draft(["r"], [prompt], [[1, 2]])
    assert tokens.tolist()[:4] == [2, 3, 4, 5]  # slot 0 the last token, then the prompt's continuation
    tokens, _ = source.draft(["r"], [prompt], [[1, 2, 3]])  # only the new token is appended
    assert tokens.tolist()[:3] == [3, 4, 5]
    cache = source.proposer.cache
    assert set(cache.active_requests) == {"r"}
    source.draft(["s"], [[9, 9]], [[]])  # r left the batch: stopped, response cached
    assert set(cache.active_requests) == {"s"} and "r" in cache.cached_requests
