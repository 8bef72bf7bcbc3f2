"""Stateful property test: arbitrary interleavings of the ``SuffixCache`` API against the reference
cache model, checking drafts, the request views, stats and integrity after every step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reference_suffix import Params, RefCache, assert_same_draft
from suffixspec import SuffixCache
from suffixspec.cache import DEFAULT_MAX_CACHED_REQUESTS
from suffixspec.errors import DuplicateRequestError, InvalidTokenError, UnknownRequestError

ALPHABET = [0, 1, 2, 3]
REQUEST_IDS = st.sampled_from(["a", "b", 7, (1, "c"), 2.5])
TOKENS = st.one_of(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=8), st.just([]))
CONTAINERS = st.sampled_from(
    [list, tuple, lambda c: np.asarray(c, np.int32), lambda c: np.asarray(c, np.int64)]
)
# Choices are listed simplest-first for hypothesis (which favours the first), so that its simple
# examples already draft something and keep responses cached.
PARAMS = st.builds(
    Params,
    max_spec_tokens=st.sampled_from([8, 3, 1, 0]),
    max_spec_factor=st.sampled_from([1.0, 2.0, 0.5]),
    max_spec_offset=st.sampled_from([1.0, 3.0, 0.0]),
    min_token_prob=st.sampled_from([0.1, 0.0, 0.3]),
    use_tree_spec=st.booleans(),
)


class CacheMachine(RuleBasedStateMachine):
    @initialize(
        max_depth=st.sampled_from([4, 6, 2, 1, 3]),
        max_cached_requests=st.sampled_from([-1, 2, 1, None, 0]),
        max_cached_tokens=st.sampled_from([1 << 22, 20, 6, 0]),
    )
    def setup(self, max_depth, max_cached_requests, max_cached_tokens):
        self.cache = SuffixCache(max_depth, max_cached_requests, max_cached_tokens)
        if max_cached_requests is not None and max_cached_requests < 0:
            max_cached_requests = DEFAULT_MAX_CACHED_REQUESTS  # arctic's "-1" means the default
        self.ref = RefCache(max_depth, max_cached_requests, max_cached_tokens)

    @rule(req_id=REQUEST_IDS, prompt=TOKENS, container=CONTAINERS)
    def start(self, req_id, prompt, container):
        if req_id in self.ref.active:
            with pytest.raises(DuplicateRequestError):
                self.cache.start_request(req_id, container(prompt))
        else:
            self.cache.start_request(req_id, container(prompt))
            self.ref.start_request(req_id, prompt)

    def _pick(self, data, pool, misuse: bool):
        """An id from ``pool`` (the valid case), or any id when ``misuse`` is drawn."""
        if pool and not misuse:
            return data.draw(st.sampled_from(list(pool)))
        return data.draw(REQUEST_IDS)

    @rule(tokens=TOKENS, container=CONTAINERS, misuse=st.booleans(), data=st.data())
    def add(self, tokens, container, misuse, data):
        req_id = self._pick(data, self.ref.active, misuse)
        if req_id in self.ref.active:
            self.cache.add_active_response(req_id, container(tokens))
            self.ref.add_active_response(req_id, tokens)
        else:
            with pytest.raises(UnknownRequestError):
                self.cache.add_active_response(req_id, container(tokens))

    @rule(tokens=TOKENS, bad=st.sampled_from([-1, -(2**31), 2**31, 2**40]), data=st.data())
    def add_invalid(self, tokens, bad, data):
        # Rejected whole: the invariants then check that nothing was appended.
        req_id = self._pick(data, self.ref.active, False)
        with pytest.raises((InvalidTokenError, UnknownRequestError)):
            self.cache.add_active_response(req_id, [*tokens, bad])

    @rule(req_id=REQUEST_IDS, bad=st.sampled_from([-5, 2**31]))
    def start_invalid(self, req_id, bad):
        # Also covers restarting a cached id with a bad prompt: its response must survive.
        with pytest.raises((InvalidTokenError, DuplicateRequestError)):
            self.cache.start_request(req_id, [1, bad])

    @rule(misuse=st.booleans(), data=st.data())
    def stop(self, misuse, data):
        req_id = self._pick(data, self.ref.active, misuse)
        if req_id in self.ref.active:
            self.cache.stop_request(req_id)
            self.ref.stop_request(req_id)
        else:
            with pytest.raises(UnknownRequestError):
                self.cache.stop_request(req_id)

    @rule(misuse=st.booleans(), data=st.data())
    def evict(self, misuse, data):
        req_id = self._pick(data, self.ref.cached, misuse)
        if req_id in self.ref.cached:
            self.cache.evict_cached_response(req_id)
            self.ref.evict_cached_response(req_id)
        else:
            with pytest.raises(UnknownRequestError):
                self.cache.evict_cached_response(req_id)

    def _context(self, data) -> list[int]:
        """Random tokens, often ending with a piece of some request's text (so matches occur)."""
        context = data.draw(st.lists(st.sampled_from(ALPHABET), max_size=4))
        texts = [r.prompt + r.response for r in self.ref.active.values()] + list(self.ref.cached.values())
        texts = [t for t in texts if t]
        if texts and data.draw(st.booleans()):
            text = data.draw(st.sampled_from(texts))
            context += text[: data.draw(st.integers(1, len(text)))]
        return context

    @rule(params=PARAMS, container=CONTAINERS, misuse=st.booleans(), data=st.data())
    def speculate(self, params, container, misuse, data):
        req_id = self._pick(data, self.ref.active, misuse)
        context = self._context(data)
        if req_id not in self.ref.active:
            with pytest.raises(UnknownRequestError):
                self.cache.speculate(req_id, container(context), **params.kwargs())
            return
        draft = self.cache.speculate(req_id, container(context), **params.kwargs())
        assert_same_draft(draft, self.ref.speculate(req_id, context, params))

    @precondition(lambda self: self.ref.active)
    @rule(params=PARAMS, data=st.data())
    def speculate_batch(self, params, data):
        req_ids = list(self.ref.active)
        contexts = [self._context(data) for _ in req_ids]
        drafts = self.cache.speculate_batch(req_ids, contexts, **params.kwargs())
        assert len(drafts) == len(req_ids)
        for req_id, context, draft in zip(req_ids, contexts, drafts, strict=True):
            assert_same_draft(draft, self.ref.speculate(req_id, context, params))

    @invariant()
    def views_stats_and_integrity(self):
        assert list(self.cache.active_requests) == list(self.ref.active)
        assert list(self.cache.cached_requests) == list(self.ref.cached)
        for req_id in ["a", "b", 7, (1, "c"), 2.5]:
            assert (req_id in self.cache.active_requests) == (req_id in self.ref.active)
            assert (req_id in self.cache.cached_requests) == (req_id in self.ref.cached)
        stats = self.cache.stats()
        assert stats["active_requests"] == len(self.ref.active)
        assert stats["cached_requests"] == len(self.ref.cached)
        assert stats["tokens"] == self.ref.tokens()
        assert stats["cached_tokens"] == self.ref.cached_tokens()
        assert stats["nodes"] >= len(self.ref.active) + self.ref.global_enabled  # a root per tree
        assert stats["bytes"] >= 0
        self.cache.check_integrity()


CacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50)
test_cache_state_machine = CacheMachine.TestCase
