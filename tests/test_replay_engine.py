"""The replay loop on tiny traces whose results are known in advance."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suffixspec import SpecConfig, TokenTree
from suffixspec.replay.engine import accepted_length, replay, replay_all
from suffixspec.replay.methods import Method, chain_parents, make_method
from suffixspec.replay.tokenize import TokenizedTrace

HAS_ARCTIC = importlib.util.find_spec("arctic_inference") is not None
# Caches drafting like arctic-inference (whose drafts these tests know in advance).
CACHES = [
    "suffixspec-arctic",
    pytest.param("arctic", marks=pytest.mark.skipif(not HAS_ARCTIC, reason="no arctic")),
]
#: suffixspec's own drafter (drafts sized by expected acceptance, not by max_spec_factor).
OWN = ["suffixspec", "suffixspec-tree"]

# Draft length K; a spec factor this large never limits drafts below K.
K = 4
PARAMS = SpecConfig(max_spec_tokens=K, max_spec_factor=100.0, max_tree_nodes=K, min_match_len=0)


def make_trace(requests: list[tuple[list[int], list[int]]], name: str = "t") -> TokenizedTrace:
    return TokenizedTrace(
        name=name,
        ids=tuple(str(i) for i in range(len(requests))),
        parents=np.full(len(requests), -1, dtype=np.int64),
        prompt_deltas=tuple(np.array(p, dtype=np.int32) for p, _ in requests),
        outputs=tuple(np.array(o, dtype=np.int32) for _, o in requests),
    )


def tokens_per_step(trace: TokenizedTrace, method: str, warmup: TokenizedTrace | None = None) -> float:
    result = replay(trace, make_method(method, PARAMS), warmup)
    assert result.emitted.sum() == trace.output_tokens  # every output token is emitted once
    return result.emitted.sum() / len(result.emitted)


class Oracle:
    """Proposes the next ``k`` true tokens (a perfect drafter, to check the loop's arithmetic)."""

    def __init__(self, outputs: list[list[int]], k: int) -> None:
        self.outputs, self.k, self.prompt_len = outputs, k, 0

    def start(self, req_id: int, prompt: np.ndarray) -> None:
        self.prompt_len = len(prompt)

    def propose(self, req_ids, contexts, budgets, max_depths) -> list[TokenTree]:
        trees = []
        for req_id, context in zip(req_ids, contexts, strict=True):
            done = len(context) - self.prompt_len
            draft = self.outputs[req_id][done : done + self.k]
            trees.append(TokenTree(np.asarray(draft, dtype=np.int32), chain_parents(len(draft))))
        return trees

    def extend(self, req_id: int, tokens: np.ndarray) -> None:
        pass

    def finish(self, req_id: int) -> None:
        pass


@pytest.mark.parametrize(("n", "k"), [(1, 3), (7, 3), (8, 3), (9, 3), (20, 1), (5, 0)])
def test_perfect_drafts_emit_k_plus_one_per_step(n: int, k: int) -> None:
    outputs = [list(range(100, 100 + n)), list(range(200, 200 + 2 * n))]
    trace = make_trace([([1, 2], outputs[0]), ([3], outputs[1])])
    result = replay(trace, Method("oracle", Oracle(outputs, k), budget=max(k, 1)))
    # The last step of a request emits only what is left (no bonus token past the end).
    assert result.request_steps.tolist() == [math.ceil(n / (k + 1)), math.ceil(2 * n / (k + 1))]
    assert result.emitted.sum() == 3 * n
    assert (result.accepted == np.minimum(result.drafted, result.emitted)).all()


def test_accepted_length_path_and_tree() -> None:
    truth = np.array([5, 6, 7, 8])
    assert accepted_length([], [], truth) == 0
    assert accepted_length([5, 6, 9], chain_parents(3), truth) == 2
    assert accepted_length([5, 6, 7, 8, 9], chain_parents(5), truth) == 4  # capped by the truth
    assert accepted_length([4], [-1], truth) == 0
    # Tree: root children 9 and 5; under 5: 7 and 6; under 6: 7.
    tokens, parents = [9, 5, 7, 6, 7], [-1, -1, 1, 1, 3]
    assert accepted_length(tokens, parents, truth) == 3
    assert accepted_length(tokens, parents, np.array([5, 7, 1])) == 2
    assert accepted_length(tokens, parents, np.array([9, 9])) == 1


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    n = draw(st.integers(0, 12))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    tokens = [draw(st.integers(0, 3)) for _ in range(n)]
    truth = draw(st.lists(st.integers(0, 3), max_size=8))
    return tokens, parents, truth


@settings(max_examples=100, deadline=None)
@given(trees())
def test_accepted_length_is_the_longest_matching_root_path(
    case: tuple[list[int], list[int], list[int]],
) -> None:
    tokens, parents, truth = case

    def path(i: int) -> list[int]:
        out = []
        while i >= 0:
            out.append(tokens[i])
            i = parents[i]
        return out[::-1]

    best = max([0] + [len(path(i)) for i in range(len(tokens)) if path(i) == truth[: len(path(i))]])
    assert accepted_length(tokens, parents, np.array(truth, dtype=np.int64)) == best


@pytest.mark.parametrize("method", [*CACHES, "prompt-lookup", "suffixspec-arctic-tree"])
def test_output_repeating_its_prompt(method: str) -> None:
    # Prompt = output = 21 distinct tokens. Step 1: the last prompt token occurs nowhere else ->
    # no draft, 1 token. Then every step drafts the next K tokens of the prompt, all accepted, +1:
    # positions 1 -> 6 -> 11 -> 16 -> 21. 21 tokens in 5 steps.
    seq = list(range(10, 31))
    assert tokens_per_step(make_trace([(seq, seq)]), method) == pytest.approx(21 / 5)


@pytest.mark.parametrize("method", [*CACHES, *OWN, "prompt-lookup", "suffixspec-arctic-tree"])
def test_output_sharing_nothing_gives_exactly_one_token_per_step(method: str) -> None:
    trace = make_trace(
        [(list(range(50)), list(range(100, 160))), (list(range(50, 70)), list(range(200, 230)))]
    )
    assert tokens_per_step(trace, method) == 1.0


@pytest.mark.parametrize("method", OWN)
def test_own_drafter_on_a_verbatim_repeat(method: str) -> None:
    # A copy: every draft is accepted whole (the last one as far as the output goes), and drafts
    # grow with the match (1 token after a 1-token match, up to K), so it needs more steps than
    # drafting K at once but far fewer than one per token.
    seq = list(range(10, 31))
    result = replay(make_trace([(seq, seq)]), make_method(method, PARAMS))
    assert result.accepted[:-1].tolist() == result.drafted[:-1].tolist()
    left = len(seq) - int(result.emitted[:-1].sum())
    assert result.accepted[-1] == min(result.drafted[-1], left)
    assert result.drafted[1] < K and result.drafted.max() == K
    assert 1.0 < result.emitted.sum() / len(result.emitted) <= 21 / 5


@pytest.mark.parametrize("method", CACHES)
def test_finished_requests_feed_the_global_cache(method: str) -> None:
    # Request 0 shares nothing with its prompt: 1 token per step. Request 1 has another prompt
    # but the same output: after its first token the global cache drafts K at a time.
    n = 26
    out = list(range(100, 100 + n))
    first, second = ([1], out), ([2], out)
    steps_second = 1 + math.ceil((n - 1) / (K + 1))
    assert tokens_per_step(make_trace([first, second]), method) == pytest.approx(2 * n / (n + steps_second))
    # The same cache contents from a warm-up trace instead.
    assert tokens_per_step(make_trace([second]), method, warmup=make_trace([first])) == pytest.approx(
        n / steps_second
    )
    assert tokens_per_step(make_trace([second]), method) == 1.0  # nothing cached: no help


def test_tree_mode_respects_the_node_budget() -> None:
    # Six different continuations of token 1 in the prompt make a bushy tree.
    prompt = [t for b in range(2, 8) for t in (1, b, b + 100, b + 200)]
    trace = make_trace([(prompt, [1, 5, 105, 205, 1, 7, 107, 207])])
    for budget in (1, 3, 6):
        params = SpecConfig(
            max_spec_tokens=64,
            max_spec_factor=100.0,
            min_token_prob=0.0,
            max_tree_nodes=budget,
            min_match_len=0,
        )
        result = replay(trace, make_method("suffixspec-arctic-tree", params))
        assert result.drafted.max() == budget
    wide = SpecConfig(
        max_spec_tokens=64, max_spec_factor=100.0, min_token_prob=0.0, max_tree_nodes=64, min_match_len=0
    )
    result = replay(trace, make_method("suffixspec-arctic-tree", wide))
    # After "1", the tree holds all six branches: 5 105 205 1 (then 6, not 7) is accepted.
    assert result.drafted[1] > 6
    assert result.accepted[1] == 4


def test_replay_records_memory_and_cached_tokens() -> None:
    trace = make_trace([([1, 2, 3], [4, 5, 6, 7]), ([8], [9, 10])])
    result = replay(trace, make_method("suffixspec", PARAMS), warmup=make_trace([([1], [2, 3, 4])]))
    assert result.cached_tokens == 3 + 6
    assert result.memory_bytes > 0
    assert result.workload == "t" and result.method == "suffixspec"
    assert len(result.propose_ns) == len(result.observe_ns) == result.request_steps.sum()


def test_interleaved_methods_replay_as_they_would_alone() -> None:
    seq = list(range(10, 31))
    trace = make_trace([(seq, seq), ([1], seq[::-1]), ([2], seq)])
    both = replay_all(trace, [make_method("suffixspec", PARAMS), make_method("suffixspec-tree", PARAMS)])
    for together, name in zip(both, ["suffixspec", "suffixspec-tree"], strict=True):
        alone = replay(trace, make_method(name, PARAMS))
        assert together.method == name
        assert together.drafted.tolist() == alone.drafted.tolist()
        assert together.accepted.tolist() == alone.accepted.tolist()
        assert together.request_steps.tolist() == alone.request_steps.tolist()
