"""Stop strings and incremental detokenization under any stop strings (hypothesis), with the
built-in default model and its real tokenizer: the streamed text pieces add up to the final
text, and text and tokens are what plain greedy decoding gives when it checks the stop strings
after every token: it ends at the first token whose text holds one, cut before the earliest of
them, however many tokens a speculative step accepted."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from suffixspec import Engine, RequestParams, TokenTree
from tiny_models import PromptKeyedProposer

NEW = 24
PROMPTS = ["def add(a, b):\n", "import os\n\nfor name in ", "Hello, wörld! ✓ ", "SELECT name FROM"]


@functools.cache
def _model() -> tuple[Any, Any]:
    from suffixspec.default_model.store import load_default_model

    model, tokenizer, _ = load_default_model()
    return model, tokenizer


@functools.cache
def _reference(prompt: str) -> tuple[list[int], str]:
    model, tokenizer = _model()
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids) :].tolist()
    eos = model.generation_config.eos_token_id
    eos = set([] if eos is None else eos if isinstance(eos, list) else [eos])
    out = out[: next((i + 1 for i, t in enumerate(out) if t in eos), len(out))]
    return out, tokenizer.decode(out, skip_special_tokens=True)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[str]]:
    prompt = draw(st.sampled_from(PROMPTS))
    _, text = _reference(prompt)
    stops = []
    for _ in range(draw(st.integers(0, 3))):
        if text and draw(st.booleans()):  # a piece of what the model writes
            start = draw(st.integers(0, len(text) - 1))
            stops.append(text[start : start + draw(st.integers(1, 4))])
        else:
            stops.append(draw(st.text(min_size=1, max_size=3)))
    return prompt, stops


@settings(max_examples=40)
@given(cases())
def test_streamed_text_and_stop_strings_match_plain_greedy(case: tuple[str, list[str]]) -> None:
    prompt, stops = case
    model, tokenizer = _model()
    tokens, full = _reference(prompt)
    engine = Engine(model, tokenizer, num_blocks=64)
    engine.add_request("t", prompt, RequestParams(max_new_tokens=NEW, stop=stops))
    pieces, outs = [], []
    while engine.has_unfinished():
        for out in engine.step():
            pieces.append(out.new_text)
            outs.append(out)
    last = outs[-1]
    assert "".join(pieces) == last.text
    # Plain decoding checks the stop strings after every token: the first token whose text holds
    # one ends the output, its text cut before the earliest of them.
    expected_tokens, expected_text = tokens, full
    for n in range(1, len(tokens) + 1):
        text = tokenizer.decode(tokens[:n], skip_special_tokens=True)
        found = [text.find(s) for s in stops if text.find(s) >= 0]
        if found:
            expected_tokens, expected_text = tokens[:n], text[: min(found)]
            assert last.finish_reason == "stop"
            break
    assert (last.text, last.token_ids) == (expected_text, expected_tokens), (stops, full)
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


class WholeContinuation(PromptKeyedProposer):
    """Drafts the next 12 tokens of plain greedy decoding: every step accepts them all, so a stop
    string completes in the middle of a step's tokens."""

    def __init__(self, continuations: dict[tuple[int, ...], list[int]]) -> None:
        super().__init__()
        self.continuations = continuations

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = []
        for rid, ctx in zip(req_ids, contexts, strict=True):
            prompt = self.prompts[rid]
            ahead = self.continuations[prompt][len(ctx) - len(prompt) :][:12]
            parents = np.arange(-1, len(ahead) - 1, dtype=np.int32)
            trees.append(TokenTree(np.asarray(ahead, np.int32), parents))
        return trees


@pytest.mark.parametrize("stops", [["#"], ["_n", "n"], ["n", "_n"], ["get", "name, _"], [", _get_name, _"]])
def test_a_stop_string_inside_a_step_ends_the_output_where_plain_decoding_ends_it(stops: list[str]) -> None:
    model, tokenizer = _model()
    prompt = "def add(a, b):\n"
    tokens, full = _reference(prompt)
    ids = tuple(tokenizer(prompt)["input_ids"])
    plain = Engine(model, tokenizer, num_blocks=64, policy="none")
    (expected,) = plain.generate([prompt], RequestParams(max_new_tokens=NEW, stop=stops))
    proposer = WholeContinuation({ids: tokens})
    fast = Engine(model, tokenizer, num_blocks=64, policy="greedy", proposer=proposer)
    (got,) = fast.generate([prompt], RequestParams(max_new_tokens=NEW, stop=stops))
    assert got.stats.accepted_tokens > len(got.token_ids) // 2  # whole runs per step
    assert (got.text, got.token_ids, got.finish_reason) == (
        expected.text,
        expected.token_ids,
        expected.finish_reason,
    )
    assert fast.step_stats.new_tokens == len(got.token_ids)  # tokens cut by a stop are not counted
    if any(s in full for s in stops):
        assert got.finish_reason == "stop" and len(got.token_ids) < len(tokens)
