"""A stage of `Engine.step()` that fails ends only the requests it concerns (finish_reason "error",
a `RequestFailedError` chaining the failure, KV freed, nothing fed to the suffix cache) and never
leaves `step()`: one request's stages (its draft tree, verification, the proposer's extend and
finish, detokenization) end that request; the whole step's (propose, scheduling, the forward pass,
the commit) end the requests of the step. The others produce exactly the tokens of plain greedy
decoding, and the engine serves new requests exactly. Faults are injected through a proposer,
acceptance policy, tokenizer, model or scheduler wrapper that raises for one chosen request or
step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

from suffixspec import AsyncEngine, Engine, RequestFailedError, RequestParams, SpecConfig, SuffixCache
from suffixspec.proposer import SuffixProposer
from test_engine import NEW, _check_exact, _prompts, _reference
from test_engine_async import _collect
from tiny_models import VOCAB, tiny_model

CLASS = "LlamaForCausalLM"


class InjectedFailure(RuntimeError):
    pass


class FaultyProposer:
    """A :class:`SuffixProposer` whose ``method`` raises at its ``at``-th call (1-based) for the
    request whose prompt is ``prompt`` (``propose``: the call whose batch holds it; ``"bad tree"``:
    that ``propose`` answers it with a token outside the vocabulary instead)."""

    def __init__(self, cache: SuffixCache, method: str, prompt: Sequence[int], at: int) -> None:
        self.inner = SuffixProposer(cache, SpecConfig(), VOCAB)
        self.method, self.prompt, self.at = method, tuple(prompt), at
        self.prompts: dict[Hashable, tuple[int, ...]] = {}
        self.calls = 0
        self.failed_batch: list[Hashable] = []

    def _hit(self, method: str, req_ids: Sequence[Hashable]) -> bool:
        if method != self.method or not any(self.prompts.get(r) == self.prompt for r in req_ids):
            return False
        self.calls += 1
        return self.calls == self.at

    def start(self, req_id, prompt) -> None:
        self.prompts[req_id] = tuple(int(t) for t in prompt)
        if self._hit("start", [req_id]):
            raise InjectedFailure("start failed")
        self.inner.start(req_id, prompt)

    def extend(self, req_id, tokens) -> None:
        self.inner.extend(req_id, tokens[:1])  # half an update, then the failure
        if self._hit("extend", [req_id]):
            raise InjectedFailure("extend failed")
        self.inner.extend(req_id, tokens[1:])

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = self.inner.propose(req_ids, contexts, budgets, max_depths)
        if self._hit("propose", req_ids):
            self.failed_batch = list(req_ids)
            raise InjectedFailure("propose failed")
        if self._hit("bad tree", req_ids):
            i = next(i for i, r in enumerate(req_ids) if self.prompts[r] == self.prompt)
            self.failed_batch = [req_ids[i]]
            trees[i] = _chain([VOCAB])
        return trees

    def finish(self, req_id) -> None:
        if self._hit("finish", [req_id]):
            raise InjectedFailure("finish failed")
        self.inner.finish(req_id)

    def abort(self, req_ids) -> None:
        self.inner.abort(req_ids)


def _chain(tokens: list[int]) -> Any:
    from suffixspec import TokenTree

    return TokenTree(np.array(tokens, np.int32), np.arange(-1, len(tokens) - 1, dtype=np.int32))


class FaultyAcceptance:
    """Exact greedy acceptance (the model's own choices) that raises at request ``req_id``'s
    ``at``-th verification."""

    def __init__(self, req_id: Hashable, at: int) -> None:
        self.req_id, self.at, self.calls = req_id, at, 0

    def __call__(self, requests, trees, targets):
        if requests[0].req_id == self.req_id:
            self.calls += 1
            if self.calls == self.at:
                raise InjectedFailure("acceptance failed")
        return targets


class FaultyTokenizer:
    """Decodes ids as numbers; raises on the first output that starts with ``prefix``."""

    def __init__(self, prefix: Sequence[int]) -> None:
        self.prefix, self.failed = list(prefix), False

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if not self.failed and list(ids[: len(self.prefix)]) == self.prefix:
            self.failed = True
            raise InjectedFailure("decode failed")
        return " ".join(str(int(i)) for i in ids)


class FaultyScheduler:
    """The engine's scheduler, whose ``method`` raises at its ``at``-th call."""

    def __init__(self, inner: Any, method: str, at: int) -> None:
        self.inner, self.method, self.at, self.calls = inner, method, at, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                raise InjectedFailure(f"{name} failed")
            return attr(*args, **kwargs)

        return faulty


def _fail_forward(monkeypatch: pytest.MonkeyPatch, model: Any, call: int) -> None:
    """Makes the model's ``call``-th forward pass (1-based) from now raise once."""
    forward, calls = model.forward, [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise InjectedFailure("simulated out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky)


@dataclass
class Fault:
    stage: str  # RequestFailedError.stage
    whole_step: bool  # ends the requests of the step (else only the chosen one)
    inject: Callable[[pytest.MonkeyPatch, Engine, list[list[int]]], None]


PROMPTS = _prompts(21, 4)
CHOSEN = 1  # the request the fault is aimed at (r1)


def _proposer_fault(method: str, at: int) -> Callable[..., None]:
    def inject(monkeypatch: pytest.MonkeyPatch, engine: Engine, prompts: list[list[int]]) -> None:
        engine.proposer = FaultyProposer(engine.cache, method, prompts[CHOSEN], at)

    return inject


def _acceptance_fault(monkeypatch: pytest.MonkeyPatch, engine: Engine, prompts: list[list[int]]) -> None:
    engine.acceptance = FaultyAcceptance(f"r{CHOSEN}", at=2)


def _tokenizer_fault(monkeypatch: pytest.MonkeyPatch, engine: Engine, prompts: list[list[int]]) -> None:
    prefix = _reference(CLASS, tuple(prompts[CHOSEN]), NEW)[:3]
    others = [_reference(CLASS, tuple(p), NEW)[:3] for i, p in enumerate(prompts) if i != CHOSEN]
    assert prefix not in others  # the fault hits the chosen request only
    engine.tokenizer = FaultyTokenizer(prefix)


def _scheduler_fault(method: str, at: int) -> Callable[..., None]:
    def inject(monkeypatch: pytest.MonkeyPatch, engine: Engine, prompts: list[list[int]]) -> None:
        monkeypatch.setattr(engine, "scheduler", FaultyScheduler(engine.scheduler, method, at))

    return inject


def _forward_fault(monkeypatch: pytest.MonkeyPatch, engine: Engine, prompts: list[list[int]]) -> None:
    _fail_forward(monkeypatch, engine.model, call=2)


FAULTS = [
    Fault("draft check", False, _proposer_fault("bad tree", at=2)),
    Fault("verification", False, _acceptance_fault),
    Fault("proposer.extend", False, _proposer_fault("extend", at=2)),
    Fault("detokenization", False, _tokenizer_fault),
    Fault("proposer.finish", False, _proposer_fault("finish", at=1)),
    Fault("proposer.propose", True, _proposer_fault("propose", at=2)),
    Fault("scheduling", True, _scheduler_fault("schedule", at=3)),
    Fault("forward pass", True, _forward_fault),
    Fault("step commit", True, _scheduler_fault("commit", at=2)),
]


#: Stages after the step's commit: the failed request keeps the tokens the step gave it.
COMMITTED_STAGES = {"detokenization", "proposer.finish"}


def _ended_requests(engine: Engine) -> set[Hashable]:
    return set(engine.cache.active_requests) | set(engine.cache.cached_requests)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.stage for f in FAULTS])
def test_a_failed_stage_ends_only_its_requests_and_the_others_stay_exact(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: Fault
) -> None:
    model = tiny_model(CLASS)
    # Two run while two wait, so that a whole-step failure leaves requests to go on.
    engine = Engine(model, num_blocks=64, max_running=2)
    fault.inject(monkeypatch, engine, PROMPTS)
    params = RequestParams(max_new_tokens=NEW)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(f"r{i}", prompt, params)
    tokens: dict[Hashable, list[int]] = {}
    ended: dict[Hashable, Any] = {}
    step_of_failure = None
    for step in range(200):
        if not engine.has_unfinished():
            break
        outputs = engine.step()
        assert [o.request_id for o in engine.failed_outputs] == [
            o.request_id for o in outputs if o.finish_reason == "error"
        ]
        if engine.failed_outputs:
            assert step_of_failure is None  # one failure, one step
            step_of_failure = step
        for out in outputs:
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            assert tokens[out.request_id] == out.token_ids
            if out.finished:
                ended[out.request_id] = out
    assert not engine.has_unfinished() and set(ended) == {f"r{i}" for i in range(4)}
    failed = {rid for rid, out in ended.items() if out.finish_reason == "error"}
    assert step_of_failure is not None and f"r{CHOSEN}" in failed
    if not fault.whole_step:
        assert failed == {f"r{CHOSEN}"}
    elif isinstance(engine.proposer, FaultyProposer):
        assert failed == set(engine.proposer.failed_batch)  # the batch it drafted for
    else:
        assert len(failed) >= 2  # both running requests (scheduling: every request held)
    for rid in failed:
        out = ended[rid]
        assert isinstance(out.error, RequestFailedError) and out.error.request_id == rid
        assert out.error.stage == fault.stage
        cause = out.error.__cause__
        assert isinstance(cause, InjectedFailure) or fault.stage == "draft check", cause
        assert out.token_ids == _reference(CLASS, tuple(PROMPTS[int(rid[1:])]), NEW)[: len(out.token_ids)]
        if fault.stage not in COMMITTED_STAGES:
            assert out.new_token_ids == []  # nothing of the failed step was emitted
    for i, prompt in enumerate(PROMPTS):
        if f"r{i}" not in failed:
            assert ended[f"r{i}"].finish_reason == "length"
            _check_exact(CLASS, prompt, tokens[f"r{i}"])
    # KV all free, queues consistent; the failed responses never reached the suffix cache.
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    engine.scheduler.check_integrity()
    assert failed.isdisjoint(_ended_requests(engine))
    assert set(engine.cache.cached_requests) == set(ended) - failed
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with the traceback
    assert logged[0].getMessage().startswith(f"{fault.stage} failed")
    # The engine goes on: the failed prompts again are served exactly.
    again = engine.generate([PROMPTS[int(rid[1:])] for rid in sorted(failed)], params)
    for rid, out in zip(sorted(failed), again, strict=True):
        _check_exact(CLASS, PROMPTS[int(rid[1:])], out.token_ids)
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


def test_a_proposer_start_that_fails_refuses_the_request_and_changes_nothing() -> None:
    engine = Engine(tiny_model(CLASS), num_blocks=64)
    engine.proposer = FaultyProposer(engine.cache, "start", PROMPTS[0], at=1)
    with pytest.raises(RequestFailedError) as info:
        engine.add_request("r0", PROMPTS[0], RequestParams(max_new_tokens=NEW))
    assert info.value.stage == "proposer.start" and isinstance(info.value.__cause__, InjectedFailure)
    assert "r0" not in engine and not engine.has_unfinished()
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    assert len(engine.scheduler.waiting) == 0
    out = engine.generate([PROMPTS[0]], RequestParams(max_new_tokens=NEW))[0]
    _check_exact(CLASS, PROMPTS[0], out.token_ids)


def test_offline_generate_raises_the_failure_and_aborts_its_other_requests() -> None:
    engine = Engine(tiny_model(CLASS), num_blocks=64)
    engine.proposer = FaultyProposer(engine.cache, "extend", PROMPTS[CHOSEN], at=2)
    with pytest.raises(RequestFailedError) as info:
        engine.generate(PROMPTS, RequestParams(max_new_tokens=NEW))
    assert info.value.stage == "proposer.extend" and isinstance(info.value.__cause__, InjectedFailure)
    assert not engine.has_unfinished()
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    engine.scheduler.check_integrity()


async def _tokens_or_failure(engine: AsyncEngine, rid: str, prompt: list[int]) -> list[int] | BaseException:
    """A stream's tokens, or the :class:`RequestFailedError` it raised."""
    try:
        tokens, _ = await _collect(engine, rid, prompt)
    except RequestFailedError as exc:
        return exc
    return tokens


def test_async_the_failing_stream_raises_and_the_concurrent_ones_finish_exactly() -> None:
    prompts = _prompts(22, 4)
    inner = Engine(tiny_model(CLASS), num_blocks=64, max_running=4)
    # A per-request failure (extend), then a whole-step one (propose) that the loop also survives.
    inner.proposer = FaultyProposer(inner.cache, "extend", prompts[0], at=2)
    engine = AsyncEngine(inner)

    async def main() -> tuple[list, list, list[int] | BaseException]:
        first = await asyncio.gather(*(_tokens_or_failure(engine, f"a{i}", p) for i, p in enumerate(prompts)))
        inner.proposer = FaultyProposer(inner.cache, "propose", prompts[1], at=1)
        second = await asyncio.gather(
            _tokens_or_failure(engine, "b0", prompts[1]), _tokens_or_failure(engine, "b1", prompts[2])
        )
        return first, second, await _tokens_or_failure(engine, "after", prompts[3])

    first, second, last = asyncio.run(main())
    error = first[0]
    assert isinstance(error, RequestFailedError) and error.stage == "proposer.extend"
    assert isinstance(error.__cause__, InjectedFailure)
    for prompt, tokens in zip(prompts[1:], first[1:], strict=True):
        assert isinstance(tokens, list)
        _check_exact(CLASS, prompt, tokens)
    # The proposer's batch held b0 (and b1 when it was decoding by then): those streams raise,
    # the loop survives and a stream outside the batch finishes exactly.
    batch = set(inner.proposer.failed_batch)
    assert "b0" in batch
    for rid, result, prompt in (("b0", second[0], prompts[1]), ("b1", second[1], prompts[2])):
        if rid in batch:
            assert isinstance(result, RequestFailedError) and result.stage == "proposer.propose"
        else:
            assert isinstance(result, list)
            _check_exact(CLASS, prompt, result)
    assert isinstance(last, list)
    _check_exact(CLASS, prompts[3], last)
    assert not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks


def test_async_streams_of_a_failed_forward_raise_and_the_others_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model(CLASS)
    prompts = _prompts(22, 2)
    engine = AsyncEngine(model, num_blocks=64, max_running=1)  # "late" waits while "early" fails
    _fail_forward(monkeypatch, model, call=2)

    async def main() -> list[list[int] | BaseException]:
        return await asyncio.gather(
            _tokens_or_failure(engine, "early", prompts[0]), _tokens_or_failure(engine, "late", prompts[1])
        )

    early, late = asyncio.run(main())
    assert isinstance(early, RequestFailedError) and early.stage == "forward pass"
    assert isinstance(early.__cause__, InjectedFailure)
    assert isinstance(late, list)
    _check_exact(CLASS, prompts[1], late)
    inner = engine.engine
    assert not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks
