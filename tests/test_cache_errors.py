"""Every bad input raises the documented ``suffixspec.errors`` class and changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suffixspec import SuffixCache
from suffixspec.errors import (
    DTypeError,
    DuplicateRequestError,
    InvalidParameterError,
    InvalidTokenError,
    SuffixSpecError,
    UnknownRequestError,
)

CONTEXT = [1, 2, 3, 1, 2]


def snapshot(cache: SuffixCache) -> tuple:
    """Everything observable: the views, stats and a path and tree draft of each active request."""
    drafts = []
    for req_id in cache.active_requests:
        for tree in (False, True):
            draft = cache.speculate(req_id, CONTEXT, use_tree_spec=tree, min_token_prob=0.0)
            drafts.append((draft.token_ids, draft.parents, draft.probs, draft.match_len))
    return list(cache.active_requests), list(cache.cached_requests), cache.stats(), drafts


@pytest.fixture
def cache() -> SuffixCache:
    """A cache with an active request "a" (prompt + response) and a cached one, "old"."""
    cache = SuffixCache(max_depth=6)
    cache.start_request("old", [7, 7])
    cache.add_active_response("old", [1, 2, 4, 1, 2, 4])
    cache.stop_request("old")
    cache.start_request("a", [1, 2, 3, 1, 2, 3, 5])
    cache.add_active_response("a", [1, 2, 3])
    return cache


BAD_TOKENS = [
    pytest.param([1, -1], InvalidTokenError, id="negative"),
    pytest.param([2**31], InvalidTokenError, id="above-int32"),
    pytest.param([2**70], InvalidTokenError, id="huge-int"),
    pytest.param(np.array([1, -3], dtype=np.int32), InvalidTokenError, id="negative-int32-array"),
    pytest.param(np.array([1, 2**40], dtype=np.int64), InvalidTokenError, id="huge-int64-array"),
    pytest.param([1.5, 2.0], DTypeError, id="float-list"),
    pytest.param([1, True], DTypeError, id="bool-in-list"),
    pytest.param(np.array([1.0, 2.0]), DTypeError, id="float-array"),
    pytest.param(np.array([True, False]), DTypeError, id="bool-array"),
    pytest.param(np.zeros((2, 2), dtype=np.int32), DTypeError, id="2d-array"),
    pytest.param("1 2 3", DTypeError, id="string"),
    pytest.param(None, DTypeError, id="none"),
    pytest.param(True, DTypeError, id="bool-scalar"),
    pytest.param(np.True_, DTypeError, id="numpy-bool-scalar"),
    pytest.param([np.True_], DTypeError, id="numpy-bool-in-list"),
    pytest.param(np.float32(3.0), DTypeError, id="numpy-float-scalar"),
    pytest.param(-1, InvalidTokenError, id="negative-scalar"),
    pytest.param(np.array(5), DTypeError, id="0d-array"),
    pytest.param([np.int64(2**40)], InvalidTokenError, id="huge-numpy-scalar-in-list"),
    pytest.param(np.array([2**64 - 1], dtype=np.uint64), InvalidTokenError, id="uint64-max"),
    pytest.param(np.array([-(2**63)], dtype=np.int64), InvalidTokenError, id="int64-min"),
]


@pytest.mark.parametrize(("tokens", "error"), BAD_TOKENS)
def test_bad_tokens_are_rejected_everywhere_without_changes(cache, tokens, error):
    before = snapshot(cache)
    with pytest.raises(error):
        cache.add_active_response("a", tokens)
    with pytest.raises(error):
        cache.start_request("new", tokens)
    # Restarting the cached id with a bad prompt must not evict its cached response.
    with pytest.raises(error):
        cache.start_request("old", tokens)
    with pytest.raises(error):
        cache.speculate("a", tokens)
    with pytest.raises(error):
        cache.speculate_batch(["a"], [tokens])
    assert snapshot(cache) == before


def test_torch_float_tensors_are_rejected(cache):
    torch = pytest.importorskip("torch")
    before = snapshot(cache)
    with pytest.raises(DTypeError):
        cache.add_active_response("a", torch.tensor([1.0, 2.0]))
    with pytest.raises(InvalidTokenError):
        cache.add_active_response("a", torch.tensor([1, -2]))
    assert snapshot(cache) == before


def test_request_lifecycle_errors(cache):
    before = snapshot(cache)
    with pytest.raises(DuplicateRequestError):
        cache.start_request("a", [1])
    for call in (cache.add_active_response, cache.speculate):
        with pytest.raises(UnknownRequestError):
            call("nope", [1])
        with pytest.raises(UnknownRequestError):
            call("old", [1])  # cached, not active
    with pytest.raises(UnknownRequestError):
        cache.stop_request("nope")
    with pytest.raises(UnknownRequestError):
        cache.stop_request("old")  # already stopped
    with pytest.raises(UnknownRequestError):
        cache.evict_cached_response("a")  # active, not cached
    with pytest.raises(UnknownRequestError):
        cache.evict_cached_response("nope")
    with pytest.raises(UnknownRequestError):
        cache.speculate_batch(["a", "nope"], [[1], [1]])
    with pytest.raises(DTypeError):
        cache.start_request(["unhashable"], [1])
    with pytest.raises(DTypeError):
        cache.speculate({"un": "hashable"}, [1])
    assert snapshot(cache) == before
    # Stopping twice and evicting twice.
    cache.stop_request("a")
    with pytest.raises(UnknownRequestError):
        cache.stop_request("a")
    cache.evict_cached_response("old")
    with pytest.raises(UnknownRequestError):
        cache.evict_cached_response("old")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_spec_factor": math.nan}, InvalidParameterError),
        ({"max_spec_factor": math.inf}, InvalidParameterError),
        ({"max_spec_factor": -0.5}, InvalidParameterError),
        ({"max_spec_offset": math.nan}, InvalidParameterError),
        ({"max_spec_offset": -math.inf}, InvalidParameterError),
        ({"min_token_prob": math.nan}, InvalidParameterError),
        ({"min_token_prob": -0.1}, InvalidParameterError),
        ({"min_token_prob": 1.5}, InvalidParameterError),
        ({"max_spec_tokens": -1}, InvalidParameterError),
        ({"max_spec_factor": 10**400}, InvalidParameterError),
        ({"max_spec_tokens": 2.5}, DTypeError),
        ({"max_spec_tokens": "4"}, DTypeError),
        ({"max_spec_factor": "1.0"}, DTypeError),
        ({"min_token_prob": None}, DTypeError),
        ({"use_tree_spec": "yes"}, DTypeError),
    ],
)
def test_bad_speculation_parameters(cache, kwargs, error):
    before = snapshot(cache)
    with pytest.raises(error):
        cache.speculate("a", CONTEXT, **kwargs)
    with pytest.raises(error):
        cache.speculate_batch(["a"], [CONTEXT], **kwargs)
    assert snapshot(cache) == before


def test_speculate_batch_length_mismatch(cache):
    with pytest.raises(InvalidParameterError):
        cache.speculate_batch(["a"], [CONTEXT, CONTEXT])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_depth": 0}, InvalidParameterError),
        ({"max_depth": -3}, InvalidParameterError),
        ({"max_depth": 2.0}, DTypeError),
        ({"max_depth": "64"}, DTypeError),
        ({"max_cached_tokens": -1}, InvalidParameterError),
        ({"max_cached_requests": 1.5}, DTypeError),
        ({"max_depth": 8, "max_tree_depth": 16}, InvalidParameterError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        SuffixCache(**kwargs)


def test_errors_derive_from_the_matching_builtins(cache):
    # Callers may catch either the suffixspec class or the builtin a Python user would expect.
    with pytest.raises(KeyError):
        cache.stop_request("nope")
    with pytest.raises(ValueError):
        cache.start_request("a", [1])
    with pytest.raises(ValueError):
        cache.add_active_response("a", [-1])
    with pytest.raises(ValueError):
        cache.speculate("a", CONTEXT, min_token_prob=2.0)
    with pytest.raises(TypeError):
        cache.add_active_response("a", [0.5])
    with pytest.raises(SuffixSpecError):
        cache.evict_cached_response("a")


def test_error_messages_name_the_request_and_the_problem(cache):
    with pytest.raises(UnknownRequestError, match="'nope' is not active"):
        cache.speculate("nope", CONTEXT)
    with pytest.raises(InvalidTokenError, match="-7 at index 2"):
        cache.add_active_response("a", [1, 2, -7])
    with pytest.raises(DTypeError, match="float64"):
        cache.add_active_response("a", np.array([1.0]))
    with pytest.raises(InvalidParameterError, match="min_token_prob"):
        cache.speculate("a", CONTEXT, min_token_prob=-1.0)
