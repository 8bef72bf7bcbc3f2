"""Fuzz of every public entry point of ``SuffixCache``, ``TokenTree``, ``build_tree_batch`` and
``accept_greedy_batch`` with hostile arguments: only ``SuffixSpecError`` subclasses escape, and a
failed call leaves ``stats()`` and ``check_integrity()`` as they were."""

from __future__ import annotations

import contextlib
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from suffixspec import SuffixCache, TokenTree
from suffixspec._native import accept_greedy_batch, build_tree_batch
from suffixspec.errors import SuffixSpecError

SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -1, -(2**63)]),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=3),
    st.sampled_from([np.int32(2), np.int64(-3), np.uint64(2**64 - 1), np.True_, np.float32(1.5)]),
    st.just(math.nan),
    st.just(object()),
    st.just({"a": 1}),
)


def _arrays():
    values = st.lists(st.integers(min_value=-3, max_value=2**40), max_size=6)
    dtypes = st.sampled_from(["int32", "int64", "uint8", "uint64", "int16", ">i4", "float64", "bool", "U1"])

    def build(items, dtype):
        try:
            return np.array(items, dtype=dtype)
        except (OverflowError, ValueError):
            return np.array(items, dtype=np.int64)

    arrays = st.builds(build, values, dtypes)
    misaligned = values.map(
        lambda v: np.frombuffer(b"\0" + np.array(v).astype(np.int32).tobytes(), dtype=np.int32, offset=1)
    )
    reversed_arrays, matrices = arrays.map(lambda a: a[::-1]), arrays.map(lambda a: a.reshape(1, -1))
    return st.one_of(arrays, misaligned, reversed_arrays, matrices)


VALUES = st.recursive(
    st.one_of(SCALARS, _arrays()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.tuples(inner, inner)),
    max_leaves=12,
)
TOKENS = st.one_of(st.lists(st.integers(min_value=0, max_value=6), max_size=6), VALUES)
REQ_IDS = st.one_of(st.sampled_from(["a", "old", "new", None, 0]), VALUES)


def _cache() -> SuffixCache:
    cache = SuffixCache(max_depth=4, max_cached_requests=3, max_cached_tokens=40)
    cache.start_request("old", [1, 2])
    cache.add_active_response("old", [1, 2, 3, 1])
    cache.stop_request("old")
    cache.start_request("a", [1, 2, 3])
    cache.add_active_response("a", [1, 2])
    return cache


CACHE_CALLS = {
    "start_request": st.tuples(REQ_IDS, TOKENS),
    "add_active_response": st.tuples(REQ_IDS, TOKENS),
    "stop_request": st.tuples(REQ_IDS),
    "evict_cached_response": st.tuples(REQ_IDS),
    "speculate": st.tuples(REQ_IDS, TOKENS, VALUES, VALUES, VALUES, VALUES, VALUES),
    "speculate_batch": st.tuples(
        st.one_of(st.lists(REQ_IDS, max_size=3), VALUES), st.one_of(st.lists(TOKENS, max_size=3), VALUES)
    ),
    "__init__": st.tuples(VALUES, VALUES, VALUES),
}


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(CACHE_CALLS)), data=st.data())
def test_cache_entry_points_raise_only_typed_errors_and_change_nothing(name, data):
    cache = _cache()
    args = data.draw(CACHE_CALLS[name], label="args")
    if name == "speculate":  # the optional parameters: drop a random number of them
        args = args[: data.draw(st.integers(min_value=2, max_value=len(args)), label="n")]
    before = cache.stats()
    try:
        if name == "__init__":
            SuffixCache(*args).check_integrity()
        else:
            getattr(cache, name)(*args)
    except SuffixSpecError:
        assert cache.stats() == before
    cache.check_integrity()
    assert cache.global_tree.check_integrity() == ""


def _tree() -> TokenTree:
    return TokenTree([3, 4, 5], [-1, 0, 0], [1.0, 0.5, 0.5])


TREES = st.one_of(st.lists(st.sampled_from([_tree(), TokenTree([], [])]), max_size=3), VALUES)

TREE_CALLS = {
    "TokenTree": st.tuples(TOKENS, VALUES, VALUES),
    "from_draft": st.tuples(st.one_of(VALUES, st.builds(_tree))),
    "merge": st.tuples(TREES),
    "prune": st.tuples(VALUES),
    "position_ids": st.tuples(VALUES),
    "children": st.tuples(VALUES),
    "path_to": st.tuples(VALUES),
    "accept_greedy": st.tuples(TOKENS),
    "build_tree_batch": st.tuples(TREES, VALUES, TOKENS),
    "accept_greedy_batch": st.tuples(TREES, VALUES),
}


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(TREE_CALLS)), data=st.data())
def test_token_tree_entry_points_raise_only_typed_errors(name, data):
    tree = _tree()
    args = data.draw(TREE_CALLS[name], label="args")
    calls = {
        "TokenTree": TokenTree,
        "from_draft": TokenTree.from_draft,
        "merge": TokenTree.merge,
        "build_tree_batch": build_tree_batch,
        "accept_greedy_batch": accept_greedy_batch,
    }
    with contextlib.suppress(SuffixSpecError):
        (calls.get(name) or getattr(tree, name))(*args)
    # Trees are immutable: the one used is unchanged whatever happened.
    assert tree.token_ids.tolist() == [3, 4, 5] and tree.parents.tolist() == [-1, 0, 0]
