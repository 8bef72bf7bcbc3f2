"""The engine under any sequence of calls (hypothesis' stateful testing): requests added with
good and bad input, aborted (known and unknown ids), steps taken, on a KV pool so small that
requests are preempted and budgets so tight that prompts enter in chunks, with a suffix cache
that the finished responses feed (so later requests speculate).

After every call: the scheduler's integrity check holds, the pool's blocks are either free or
held by a live request, the engine holds exactly the requests the test expects, and a rejected
call changed nothing. Every finished request's greedy output is plain greedy decoding's (a
prefix of it when aborted)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

pytest.importorskip("transformers")

import suffixspec
from suffixspec import SLO, DuplicateRequestError, Engine, RequestParams, SuffixSpecError, UnknownRequestError
from tiny_models import VOCAB, plain_greedy_tokens, tiny_model

MAX_NEW = 10
CLASS = "LlamaForCausalLM"

# Repetitive prompts: the prompt tree and the responses in the cache yield drafts.
PROMPTS = st.builds(
    lambda base, times, cut: (base * times)[: max(1, cut)],
    st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=6),
    st.integers(1, 6),
    st.integers(1, 36),
)
BAD_PROMPTS = st.sampled_from([[], [VOCAB], [-1, 4], [3, 2**40], "not tokens without a tokenizer"])


@functools.cache
def _reference(prompt: tuple[int, ...]) -> list[int]:
    with torch.no_grad():
        return plain_greedy_tokens(tiny_model(CLASS), list(prompt), MAX_NEW)


class EngineMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(["adaserve", "greedy", "uniform", "none"]))
    def start(self, policy: str) -> None:
        self.engine = Engine(
            tiny_model(CLASS),
            cache=suffixspec.SuffixCache(),
            num_blocks=6,
            block_size=8,
            policy=policy,
            max_tokens_per_step=16,
            max_prefill_tokens_per_step=8,
            max_running=4,
        )
        self.live: dict[str, tuple[tuple[int, ...], int]] = {}  # id -> (prompt, max_new_tokens)
        self.tokens: dict[str, list[int]] = {}  # streamed so far
        self.next_id = 0
        self.finished = 0

    def _state(self) -> tuple:
        s = self.engine.scheduler
        return (s.num_free_blocks, len(s), s.waiting, s.running, s.preempted, sorted(self.live))

    @rule(prompt=PROMPTS, new=st.integers(1, MAX_NEW), priority=st.integers(0, 2))
    def add(self, prompt: list[int], new: int, priority: int) -> None:
        rid = f"r{self.next_id}"
        self.next_id += 1
        self.engine.add_request(rid, prompt, RequestParams(max_new_tokens=new, priority=priority))
        self.live[rid] = (tuple(prompt), new)
        self.tokens[rid] = []

    @rule(prompts=st.lists(PROMPTS, min_size=2, max_size=4))
    def add_burst(self, prompts: list[list[int]]) -> None:
        # Several arrivals at once outgrow the pool as they decode: preemption by recompute.
        for prompt in prompts:
            self.add(prompt, MAX_NEW, 0)

    @rule(prompt=BAD_PROMPTS)
    def add_bad_prompt(self, prompt: object) -> None:
        before = self._state()
        with pytest.raises(SuffixSpecError):
            self.engine.add_request(f"bad{self.next_id}", prompt, RequestParams(max_new_tokens=2))
        assert self._state() == before

    @rule(prompt=PROMPTS)
    def add_too_long(self, prompt: list[int]) -> None:
        # More tokens than the whole pool holds (6 blocks of 8 slots): refused up front.
        before = self._state()
        with pytest.raises(SuffixSpecError):
            self.engine.add_request(f"long{self.next_id}", prompt * 80, RequestParams(max_new_tokens=2))
        assert self._state() == before

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def add_duplicate(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.live)))
        before = self._state()
        with pytest.raises(DuplicateRequestError):
            self.engine.add_request(rid, [5, 6], RequestParams(max_new_tokens=2))
        assert self._state() == before

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.live)))
        out = self.engine.abort(rid)
        assert out.finished and out.finish_reason == "abort"
        prompt, new = self.live.pop(rid)
        tokens = self.tokens.pop(rid) + list(out.new_token_ids)
        assert tokens == list(out.token_ids)
        assert tokens == _reference(prompt)[: len(tokens)]
        assert len(tokens) <= new

    @rule(rid=st.sampled_from(["nobody", "r-1"]))
    def abort_unknown(self, rid: str) -> None:
        before = self._state()
        with pytest.raises(UnknownRequestError):
            self.engine.abort(rid)
        assert self._state() == before

    @rule(steps=st.integers(1, 4))
    def step(self, steps: int) -> None:
        for _ in range(steps):
            for out in self.engine.step():
                rid = out.request_id
                assert rid in self.live, f"output for {rid!r}, which is not live"
                self.tokens[rid].extend(out.new_token_ids)
                assert self.tokens[rid] == list(out.token_ids)
                if out.finished:
                    assert out.error is None, out.error
                    prompt, new = self.live.pop(rid)
                    tokens = self.tokens.pop(rid)
                    assert out.finish_reason == "length"
                    assert tokens == _reference(prompt)[:new], f"prompt {prompt}"
                    self.finished += 1
                    event(f"accepted drafts: {out.stats.accepted_tokens > 0}")

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "engine"):
            return
        s = self.engine.scheduler
        s.check_integrity()
        assert all(rid in self.engine for rid in self.live)
        assert len(s) == len(self.live)  # the scheduler holds the live requests, nothing more
        assert self.engine.has_unfinished() == bool(self.live)
        if not self.live:
            assert s.num_free_blocks == s.num_blocks

    def teardown(self) -> None:
        if not hasattr(self, "engine"):
            return
        # Everything still live runs to completion, exactly: a few dozen steps per request at
        # most (chunked prompts, ten tokens, preemptions), since a tight pool serves few at once.
        for _ in range(100 + 60 * len(self.live)):
            if not self.live:
                break
            self.step(1)
        assert not self.live
        stats = self.engine.scheduler.stats()
        event(f"preempted: {stats.get('preemptions', 0) > 0}")
        event(f"finished: {min(self.finished, 3)}+")
        assert self.engine.scheduler.num_free_blocks == self.engine.scheduler.num_blocks


EngineMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=40)
TestEngineMachine = EngineMachine.TestCase


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.integers(-3, 2**33), max_size=3),
    st.lists(st.text(max_size=3), max_size=2),
    st.builds(SLO, tpot_ms=st.none() | st.floats(0.1, 100)),
)
PARAM_FIELDS = [
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop_token_ids",
    "stop",
    "slo",
    "priority",
    "max_time",
]


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(PARAM_FIELDS), ODD, max_size=4), PROMPTS)
def test_any_request_params_are_served_or_refused_with_a_typed_error(kwargs: dict, prompt: list[int]) -> None:
    """Whatever a caller puts in RequestParams: it is refused with a SuffixSpecError (at
    construction or at add_request, changing nothing), or the request runs to its end."""
    engine = _fuzz_engine()
    try:
        params = RequestParams(**kwargs)
    except SuffixSpecError:
        return
    free = engine.scheduler.num_free_blocks
    try:
        engine.add_request("x", prompt, params)
    except SuffixSpecError:
        assert "x" not in engine and engine.scheduler.num_free_blocks == free and len(engine.scheduler) == 0
        return
    outputs = [o for _ in range(200) if engine.has_unfinished() for o in engine.step()]
    assert not engine.has_unfinished()
    assert outputs[-1].finished and outputs[-1].error is None, outputs[-1]
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


@functools.cache
def _fuzz_engine() -> Engine:
    return Engine(tiny_model(CLASS), cache=suffixspec.SuffixCache(), num_blocks=16, block_size=8)


ENGINE_FIELDS = [
    "num_blocks",
    "block_size",
    "policy",
    "max_tokens_per_step",
    "max_prefill_tokens_per_step",
    "max_running",
    "max_verify_tokens",
    "draft_tokens",
    "cost_points",
    "sit_out_margin",
    "sit_out_min_target_steps",
    "attention",
    "spec",
]
ENGINE_VALUES = ODD | st.sampled_from(
    [
        "adaserve",
        "uniform",
        "none",
        "torch",
        "cuda",
        [(1, 0.01)],
        [(0, -1.0)],
        [(2**40, 1.0)],
        0,
        7,
        16,
        2**31,
    ]
)


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(ENGINE_FIELDS), ENGINE_VALUES, max_size=4))
def test_any_engine_settings_are_taken_or_refused_with_a_typed_error(kwargs: dict) -> None:
    """Whatever the settings, the engine is built (and then serves a request) or refused with a
    SuffixSpecError: never another exception from the bindings or torch, never a panic."""
    try:
        engine = Engine(tiny_model(CLASS), **kwargs)
    except SuffixSpecError:
        return
    if engine.scheduler.num_blocks * engine.scheduler.block_size < 8:
        return  # too small a pool for any request: add_request refuses it (checked elsewhere)
    try:
        engine.add_request("x", [5, 6, 7], RequestParams(max_new_tokens=2))
    except SuffixSpecError:
        return
    outputs = [o for _ in range(50) if engine.has_unfinished() for o in engine.step()]
    assert outputs and outputs[-1].finished and outputs[-1].error is None, outputs[-1:]
