"""`suffixspec.generate` and `suffixspec.Engine` verify the same way, step for step.

The two drive the KV cache differently (one contiguous cache per batch vs the paged pool, see
docs/decoding_loops.md) but share the exactness core: drafting through the one `Proposer`,
`fit_tree`, the acceptance of `generation.verify` and the scoring of `generation.logits`. This
differential test gives both the same deterministic drafts (a function of the context alone) and
checks that they emit the same tokens *and* accept the same number of draft tokens in the same
number of steps; so a change to either loop's verification that kept outputs exact only by
luck, or that wasted accepted nodes, fails here even when each loop alone still looks exact.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import suffixspec
from suffixspec import Engine, RequestParams
from suffixspec.engine.architectures import PAGED_ARCHITECTURES
from tiny_models import (
    SERVED_CONFIGS,
    VOCAB,
    PromptKeyedProposer,
    plain_greedy_tokens,
    random_prompts,
    tiny_model,
)

NEW = 20


class ContextProposer(PromptKeyedProposer):
    """Drafts a function of the context alone: the plain greedy continuation (known from a
    reference run) on one branch with some tokens replaced by wrong ones, and a wrong sibling
    branch, both chosen by a hash of the context. Identical contexts get identical trees in any
    loop, so two loops that verify alike see identical draft sequences."""

    def __init__(self, references: dict[tuple[int, ...], list[int]]) -> None:
        super().__init__()
        self.references = references

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = []
        for rid, ctx in zip(req_ids, contexts, strict=True):
            prompt = self.prompts[rid]
            ctx = [int(t) for t in ctx]
            digest = hashlib.sha256(np.asarray(ctx, np.int64).tobytes()).digest()
            ahead = self.references[prompt][len(ctx) - len(prompt) :][:6]
            chain = [(t + 1) % VOCAB if digest[i] % 4 == 0 else t for i, t in enumerate(ahead)]
            if not chain:
                trees.append(suffixspec.TokenTree(np.zeros(0, np.int32), np.zeros(0, np.int32)))
                continue
            tokens = [*chain, (chain[0] + 2) % VOCAB]
            parents = [-1, *range(len(chain) - 1), -1]
            probs = [0.9 - 0.1 * i for i in range(len(chain))] + [0.05]
            trees.append(suffixspec.TokenTree(np.array(tokens, np.int32), np.array(parents, np.int32), probs))
        return trees


@pytest.mark.parametrize("class_name", sorted(PAGED_ARCHITECTURES))
def test_generate_and_engine_accept_the_same_drafts(class_name: str) -> None:
    model = tiny_model(class_name, **SERVED_CONFIGS.get(class_name, {}))
    prompts = random_prompts([7, 19, 12], seed=3)
    with torch.no_grad():
        references = {tuple(p): plain_greedy_tokens(model, p, NEW) for p in prompts}

    out = suffixspec.generate(model, prompts, max_new_tokens=NEW, proposer=ContextProposer(references))
    engine = Engine(
        model,
        proposer=ContextProposer(references),
        num_blocks=32,
        block_size=8,
        policy="greedy",
        max_verify_tokens=4096,  # every drafted node is verified, as in generate
        cost_points=[(1, 0.01), (4096, 0.01)],
    )
    served = engine.generate(prompts, RequestParams(max_new_tokens=NEW))

    for i, prompt in enumerate(prompts):
        assert out.generated[i] == references[tuple(prompt)] == served[i].token_ids
        loop_stats, engine_stats = out.stats[i], served[i].stats
        assert loop_stats.accepted_tokens == engine_stats.accepted_tokens > 0
        assert loop_stats.drafted_tokens == engine_stats.draft_tokens
        # The engine also counts the prefill step that emits the first token; the loop does not.
        assert loop_stats.steps + 1 == engine_stats.steps


class BadProposer(ContextProposer):
    """Answers `propose` with `answer(req_ids)`."""

    def __init__(self, answer) -> None:
        super().__init__({})
        self.answer = answer

    def propose(self, req_ids, contexts, budgets, max_depths):
        return self.answer(req_ids)


def _tree(tokens: list[int]) -> suffixspec.TokenTree:
    return suffixspec.TokenTree(np.array(tokens, np.int32), np.arange(-1, len(tokens) - 1, dtype=np.int32))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda ids: [_tree([VOCAB])] * len(ids), suffixspec.InvalidTokenError),
        (lambda ids: [_tree([3])] * (len(ids) + 1), suffixspec.InvalidTreeError),
        (lambda ids: [[3, 4]] * len(ids), suffixspec.InvalidTreeError),
    ],
    ids=["outside-vocab", "wrong-count", "not-a-tree"],
)
def test_both_loops_refuse_the_same_bad_drafts_with_the_same_typed_error(answer, error) -> None:
    """`generate` raises the error; the engine (serving others) ends the request it concerns with
    that error as the cause (`Engine.step`), and serves the next request once drafts are good."""
    model = tiny_model("LlamaForCausalLM")
    prompt = random_prompts([6], seed=4)[0]
    with pytest.raises(error):
        suffixspec.generate(model, [prompt], max_new_tokens=4, proposer=BadProposer(answer))
    engine = Engine(model, proposer=BadProposer(answer), num_blocks=8, block_size=8)
    engine.add_request("r", prompt, RequestParams(max_new_tokens=4))
    first = engine.step()  # the prefill: nothing to draft yet
    (failed,) = engine.step()
    assert failed.request_id == "r" and failed.finish_reason == "error"
    assert isinstance(failed.error, suffixspec.RequestFailedError)
    assert type(failed.error.__cause__) is error
    assert failed.token_ids == first[0].token_ids and "r" not in engine  # nothing of the step emitted
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    engine.proposer.answer = lambda ids: [_tree([])] * len(ids)
    (out,) = engine.generate([prompt], RequestParams(max_new_tokens=4))
    assert out.token_ids == plain_greedy_tokens(model, prompt, 4)
