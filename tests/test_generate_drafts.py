"""Drafts are only guesses: out-of-vocabulary drafts are dropped, a custom proposer's malformed
trees get typed errors, duplicate siblings are merged, and a failed call changes no cache."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from suffixspec.errors import InvalidTokenError, InvalidTreeError  # noqa: E402
from suffixspec.generation import Proposer  # noqa: E402
from suffixspec.generation.proposer import merge_duplicate_siblings, within_vocab  # noqa: E402
from tiny_models import VOCAB, plain_greedy_tokens, random_prompts, tiny_model  # noqa: E402

NEW = 24


def llama():
    return tiny_model("LlamaForCausalLM")


def prompts_of(lengths, seed=0):
    return random_prompts(lengths, seed)


def plain(model, prompt, new=NEW):
    return plain_greedy_tokens(model, prompt, new)


def snapshot(cache):
    """The cache's contents (not its allocated bytes, which may keep capacity grown)."""
    cache.check_integrity()
    stats = {k: v for k, v in cache.stats().items() if k != "bytes"}
    return stats, list(cache.cached_requests), list(cache.active_requests)


def tree(tokens, parents, probs=None):
    return suffixspec.TokenTree(np.asarray(tokens, np.int32), np.asarray(parents, np.int32), probs)


def test_out_of_vocabulary_drafts_from_a_shared_cache_are_dropped():
    model = llama()
    (prompt,) = prompts_of([10], seed=1)
    ref = plain(model, prompt)
    cache = suffixspec.SuffixCache()
    # Another model's response with the same context, continued by ids beyond this vocabulary.
    cache.start_request("other", [1])
    cache.add_active_response("other", prompt + ref[:3] + [VOCAB + 5, VOCAB + 900, 7, 8])
    cache.stop_request("other")
    out = suffixspec.generate(model, [prompt], max_new_tokens=NEW, cache=cache)
    assert out.generated == [ref]
    assert out.stats[0].accepted_tokens > 0  # the in-vocabulary part of the draft was used


def test_within_vocab_drops_subtrees():
    t = within_vocab(tree([5, 200, 6, 7, 300], [-1, -1, 1, 0, 3]), 100)
    assert list(t.token_ids) == [5, 7]
    assert list(t.parents) == [-1, 0]


def test_a_failed_call_leaves_the_cache_as_it_was():
    model = llama()
    prompts = prompts_of([6, 14, 9], seed=2)
    refs = [plain(model, p) for p in prompts]
    # An EOS that ends request 0 early (so it is cached before the failure) and no other one.
    eos = next(
        t for i, t in enumerate(refs[0]) if i >= 1 and t not in refs[0][:i] and t not in refs[1] + refs[2]
    )
    cache = suffixspec.SuffixCache()
    suffixspec.generate(model, prompts[:1], max_new_tokens=NEW, cache=cache)
    before = snapshot(cache)
    calls = []
    forward = model.forward

    @functools.wraps(forward)
    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 15:
            assert "suffixspec.generate:" in str(list(cache.cached_requests))  # request 0, done
            raise RuntimeError("device lost")
        return forward(*args, **kwargs)

    model.forward = failing_forward
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            suffixspec.generate(
                model, prompts, max_new_tokens=NEW, cache=cache, pad_token_id=0, eos_token_id=eos
            )
    finally:
        del model.forward
    assert snapshot(cache) == before


class FixedProposer(Proposer):
    """Proposes `make(req_ids)` at every step."""

    def __init__(self, make):
        self.make = make
        self.finished = []

    def start(self, req_id, prompt):
        pass

    def extend(self, req_id, tokens):
        pass

    def propose(self, req_ids, contexts, budgets, max_depths):
        return self.make(req_ids)

    def finish(self, req_id):
        self.finished.append(req_id)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda ids: [tree([VOCAB], [-1]) for _ in ids], InvalidTokenError, "vocabulary"),
        (lambda ids: [tree([3, VOCAB + 10], [-1, 0]) for _ in ids], InvalidTokenError, "vocabulary"),
        (lambda ids: [tree([3], [-1])] * (len(ids) + 1), InvalidTreeError, "for 2 requests"),
        (lambda ids: [None for _ in ids], InvalidTreeError, "NoneType"),
        (lambda ids: None, InvalidTreeError, "NoneType"),
        (lambda ids: [([3], [-1]) for _ in ids], InvalidTreeError, "tuple"),
    ],
)
def test_a_custom_proposers_bad_trees_get_typed_errors(make, error, match):
    proposer = FixedProposer(make)
    with pytest.raises(error, match=match):
        suffixspec.generate(llama(), prompts_of([5, 8]), max_new_tokens=6, proposer=proposer, pad_token_id=0)
    assert len(proposer.finished) == 2  # every request was still finished


def test_duplicate_siblings_are_merged():
    t = merge_duplicate_siblings(tree([2, 2, 5, 6, 5], [-1, -1, 0, 1, 1]))
    assert list(t.token_ids) == [2, 5, 6]
    assert list(t.parents) == [-1, 0, 0]
    same = tree([2, 3], [-1, -1])
    assert merge_duplicate_siblings(same) is same


@settings(max_examples=200)
@given(st.data())
def test_trees_are_merged_exactly_when_two_siblings_share_a_token(data):
    n = data.draw(st.integers(1, 24))
    parents = [data.draw(st.integers(-1, i - 1)) for i in range(n)]
    # Few distinct ids (and the largest ones) so that equal siblings are common.
    tokens = data.draw(st.lists(st.sampled_from([0, 1, 2, 2**31 - 1]), min_size=n, max_size=n))
    t = tree(tokens, parents)
    pairs = list(zip(parents, tokens, strict=True))
    if len(set(pairs)) == n:
        assert merge_duplicate_siblings(t) is t
    else:
        merged = merge_duplicate_siblings(t)
        assert len(merged) < n
        kept = list(
            zip(np.asarray(merged.parents).tolist(), np.asarray(merged.token_ids).tolist(), strict=True)
        )
        assert len(set(kept)) == len(merged)


def test_greedy_with_duplicate_siblings_is_exact():
    model = llama()
    prompts = prompts_of([7, 12], seed=3)
    refs = {tuple(p): p + plain(model, p) for p in prompts}
    truth = {}

    class Duplicating(FixedProposer):
        def start(self, req_id, prompt):
            truth[req_id] = refs[tuple(int(t) for t in prompt)]

        def propose(self, req_ids, contexts, budgets, max_depths):
            out = []
            for req, ctx in zip(req_ids, contexts, strict=True):
                nxt = truth[req][len(ctx) : len(ctx) + 2]
                if len(nxt) < 2:
                    out.append(tree([], []))
                else:  # the right chain twice, and a wrong sibling between
                    out.append(tree([nxt[0], (nxt[0] + 1) % VOCAB, nxt[0], nxt[1]], [-1, -1, -1, 2]))
            return out

    out = suffixspec.generate(model, prompts, max_new_tokens=NEW, proposer=Duplicating(None), pad_token_id=0)
    assert out.generated == [refs[tuple(p)][len(p) :] for p in prompts]


def test_duplicate_siblings_do_not_double_count_sampling_mass():
    """Issue 9 item 3: with drafts [t, t] under the root, P(second token = t) must be exact (the
    third token leaves the draft a depth to be verified at)."""
    model = llama()
    (prompt,) = prompts_of([6], seed=4)
    with torch.no_grad():  # exact distribution of the second token: sum over the first
        first = torch.softmax(model(torch.tensor([prompt])).logits[0, -1].float(), -1)
        both = torch.tensor([[*prompt, t] for t in range(VOCAB)])
        second = torch.softmax(model(both).logits[:, -1].float(), -1)
    exact = (first[:, None] * second).sum(0)
    token = int(torch.argmax(exact * (1 - exact)))  # the token of most uncertain outcome
    p = float(exact[token])
    assert 0.02 < p < 0.98
    proposer = FixedProposer(lambda ids: [tree([token, token], [-1, -1]) for _ in ids])
    batch, rounds = 250, 8
    hits = 0
    for seed in range(rounds):
        out = suffixspec.generate(
            model, [prompt] * batch, max_new_tokens=3, do_sample=True, seed=seed, proposer=proposer
        )
        hits += sum(g[1] == token for g in out.generated)
    n = batch * rounds
    z = (hits / n - p) / np.sqrt(p * (1 - p) / n)
    assert abs(z) < 4.5, (hits / n, p, z)
