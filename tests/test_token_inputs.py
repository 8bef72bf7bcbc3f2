"""Every token-input form, accepted or refused the same way by every entry point (one conversion
path in the bindings), and the typed errors of issue 9 item 10, each a regression test."""

from __future__ import annotations

import numpy as np
import pytest

from suffixspec import SuffixCache, SuffixTree, TokenTree
from suffixspec._native import accept_greedy_batch, build_tree_batch
from suffixspec.errors import DTypeError, InvalidParameterError, InvalidTokenError, UnknownRequestError

TOKENS = [5, 6, 7]


def misaligned(values: list[int], dtype: type = np.int32) -> np.ndarray:
    """An array whose data starts one byte past an aligned address."""
    raw = b"\0" + np.asarray(values, dtype=dtype).tobytes()
    array = np.frombuffer(raw, dtype=dtype, offset=1)
    assert not array.flags.aligned
    return array


def accepted_forms() -> list:
    forms = [
        pytest.param(list(TOKENS), id="list"),
        pytest.param(tuple(TOKENS), id="tuple"),
        pytest.param(range(5, 8), id="range"),
        pytest.param([np.int32(t) for t in TOKENS], id="list-of-numpy-int32"),
        pytest.param([np.int64(5), 6, np.uint8(7)], id="mixed-numpy-scalars"),
        pytest.param(np.array(TOKENS, dtype=np.int32), id="int32"),
        pytest.param(misaligned(TOKENS), id="misaligned-int32"),
        pytest.param(misaligned(TOKENS, np.int64), id="misaligned-int64"),
        pytest.param(np.array([0, 5, 0, 6, 0, 7], dtype=np.int32)[1::2], id="strided-int32"),
        pytest.param(np.array(TOKENS, dtype=">i4"), id="big-endian-int32"),
        pytest.param(np.array(TOKENS, dtype=np.uint64), id="uint64"),
        pytest.param(np.array(TOKENS, dtype=np.int16), id="int16"),
    ]
    return forms


@pytest.mark.parametrize("tokens", accepted_forms())
def test_every_form_gives_the_same_tokens_everywhere(tokens):
    cache = SuffixCache(max_depth=8)
    cache.start_request("p", tokens)
    cache.add_active_response("p", tokens)
    cache.start_request("q", [1])
    cache.add_active_response("q", tokens)
    # The prompt + response of "p" is 5 6 7 5 6 7: after 5 6 7 5, "6 7" follows.
    assert cache.speculate("p", [*TOKENS, 5]).token_ids == [6, 7]
    assert cache.speculate("q", tokens[:2]).token_ids == [7]
    assert [d.token_ids for d in cache.speculate_batch(["p"], [tokens])] == [[5, 6, 7]]
    tree = SuffixTree(4)
    tree.extend(0, tokens)
    assert tree.count(tokens) == 1
    token_tree = TokenTree(tokens, [-1, 0, 1])
    assert token_tree.token_ids.tolist() == TOKENS
    assert token_tree.accept_greedy([*tokens, 9][:4])[0].tolist() == [0, 1, 2]
    cache.check_integrity()


def test_a_single_int_is_one_token():
    # arctic accepts add_active_response(req, 5); so does every token input here.
    cache = SuffixCache(max_depth=4)
    cache.start_request("a", 3)
    cache.add_active_response("a", 5)
    cache.add_active_response("a", np.int64(3))
    cache.add_active_response("a", 5)
    assert cache.stats()["tokens"] == 2 * 3 + 1  # local: 3 5 3 5, global: 5 3 5
    assert cache.speculate("a", 3).token_ids == [5]  # one matched token allows one draft token


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(True, id="bool"),
        pytest.param(np.True_, id="numpy-bool"),
        pytest.param([1, True], id="bool-in-list"),
        pytest.param([1, np.False_], id="numpy-bool-in-list"),
        pytest.param(np.array([True]), id="bool-array"),
    ],
)
def test_bools_are_refused_consistently(bad):
    cache = SuffixCache()
    cache.start_request("a", [1])
    with pytest.raises(DTypeError, match="bool"):
        cache.add_active_response("a", bad)
    with pytest.raises(DTypeError):
        TokenTree(bad, [-1] if np.ndim(bad) else -1)
    with pytest.raises(DTypeError):
        cache.speculate("a", [1], max_spec_tokens=np.True_)
    # Flags take either bool.
    assert cache.speculate("a", [1], use_tree_spec=np.True_).token_ids == []


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (2**31, "2147483648"),
        (2**63 - 1, "9223372036854775807"),
        (2**63, "9223372036854775808"),
        (2**64, "18446744073709551616"),
        (-(2**63), "-9223372036854775808"),
        (-(2**63) - 1, "-9223372036854775809"),
        (2**200, r"\(an int beyond 2\*\*127\)"),
        (-(2**200), r"\(an int below -2\*\*127\)"),
    ],
)
def test_messages_near_the_int64_limits_name_the_value_and_the_range(bad, shown):
    cache = SuffixCache()
    cache.start_request("a", [1])
    for form in ([1, bad], np.array([1, bad], dtype=object)):
        with pytest.raises(InvalidTokenError, match=f"{shown} at index 1 .*0..=2147483647"):
            cache.add_active_response("a", form if isinstance(form, list) else list(form))
    if -(2**63) <= bad < 2**64:
        dtype = np.uint64 if bad >= 2**63 else np.int64
        with pytest.raises(InvalidTokenError, match=f"{shown} at index 1"):
            cache.add_active_response("a", np.array([1, bad], dtype=dtype))


def _tensors():
    torch = pytest.importorskip("torch")
    ids = torch.tensor(TOKENS)
    cases = {
        "bfloat16": ids.to(torch.bfloat16),
        "float8": ids.to(torch.float8_e4m3fn),
        "float16": ids.to(torch.float16),
        "complex": ids.to(torch.complex64),
        "bool": ids > 5,
        "quantized": torch.quantize_per_tensor(ids.float(), 1.0, 0, torch.qint8),
        "sparse": ids.to_sparse(),
        "nested": torch.nested.nested_tensor([ids, ids[:2]]),
        "meta": ids.to("meta"),
    }
    return torch, cases


@pytest.mark.parametrize(
    "kind", ["bfloat16", "float8", "float16", "complex", "bool", "quantized", "sparse", "nested", "meta"]
)
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_torch_tensors_without_plain_integer_data_get_dtype_errors(kind):
    _, cases = _tensors()
    tensor = cases[kind]
    cache = SuffixCache()
    cache.start_request("a", [1])
    before = cache.stats()
    for call in (
        lambda: cache.add_active_response("a", tensor),
        lambda: cache.start_request("b", tensor),
        lambda: cache.speculate("a", tensor),
        lambda: cache.speculate_batch(["a"], [tensor]),
        lambda: TokenTree(tensor, [-1, 0, 1]),
        lambda: build_tree_batch([TokenTree([1], [-1])], [0], tensor),
    ):
        with pytest.raises(DTypeError):
            call()
    assert cache.stats() == before
    cache.check_integrity()


def test_integer_torch_tensors_of_every_dtype_are_accepted():
    torch = pytest.importorskip("torch")
    cache = SuffixCache()
    cache.start_request("a", torch.tensor([9]))
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        cache.add_active_response("a", torch.tensor(TOKENS, dtype=dtype))
    assert cache.stats()["tokens"] == 1 + 2 * 5 * 3
    assert TokenTree(torch.tensor(TOKENS), torch.tensor([-1, 0, 1])).token_ids.tolist() == TOKENS
    with pytest.raises(InvalidTokenError):
        cache.add_active_response("a", torch.tensor([1, -2]))


def test_token_tree_with_misaligned_arrays():
    tree = TokenTree(misaligned(TOKENS), misaligned([-1, 0, 0]), np.array([1.0, 0.5, 0.5]))
    assert tree.token_ids.tolist() == TOKENS and tree.parents.tolist() == [-1, 0, 0]
    raw = b"\0" + np.array([1.0, 0.5, 0.25]).tobytes()
    probs = np.frombuffer(raw, dtype=np.float64, offset=1)
    assert TokenTree(TOKENS, [-1, 0, 1], probs).probs.tolist() == [1.0, 0.5, 0.25]
    ids, _, _, lengths = build_tree_batch([tree], misaligned([4], np.int64), misaligned([3]))
    assert ids.tolist() == [[3, *TOKENS]] and lengths.tolist() == [4]


def test_speculate_batch_with_bad_containers_raises_dtype_errors():
    cache = SuffixCache()
    cache.start_request("a", [1, 2])
    before = cache.stats()
    with pytest.raises(DTypeError):
        cache.speculate_batch(["a"], 5)
    with pytest.raises(DTypeError):
        cache.speculate_batch(None, [[1]])
    with pytest.raises(DTypeError):
        cache.speculate_batch("a", [[1]])
    with pytest.raises(DTypeError):
        cache.speculate_batch(["a"], None)
    with pytest.raises(DTypeError):
        cache.speculate_batch(["a"], "ab")
    with pytest.raises(UnknownRequestError):
        cache.speculate_batch(["a", None], [[1], [1]])
    assert cache.stats() == before


def test_accept_greedy_batch_with_ragged_targets_raises_dtype_error():
    trees = [TokenTree([1], [-1]), TokenTree([2], [-1])]
    with pytest.raises(DTypeError, match="row 1"):
        accept_greedy_batch(trees, [[1, 2], [3]])
    with pytest.raises(DTypeError):
        accept_greedy_batch(trees, [[1.5, 2.0], [3.0, 1.0]])
    with pytest.raises(DTypeError):
        accept_greedy_batch(trees, None)
    with pytest.raises(InvalidParameterError):
        accept_greedy_batch(trees, [[1, 2]])
    nodes, bonus = accept_greedy_batch(trees, [[1, 7], [np.int64(2), 8]])
    assert [n.tolist() for n in nodes] == [[0], [0]] and bonus.tolist() == [7, 8]


def test_none_is_a_valid_request_id():
    cache = SuffixCache(max_cached_requests=1)
    cache.start_request(None, [1, 2, 3])
    cache.add_active_response(None, [4, 5])
    assert None in cache.active_requests
    cache.check_integrity()
    cache.stop_request(None)
    assert list(cache.cached_requests) == [None]
    cache.check_integrity()
    cache.start_request("next", [1])
    cache.add_active_response("next", [9])
    cache.stop_request("next")  # evicts None's response: no stale handle may remain
    assert list(cache.cached_requests) == ["next"] and None not in cache.cached_requests
    cache.check_integrity()
    with pytest.raises(UnknownRequestError):
        cache.evict_cached_response(None)
    cache.start_request(None, [1])  # the id can be reused
    cache.check_integrity()
