"""A forward pass that raises (out of memory, ...) fails only the requests of its step: they end
with finish_reason "error" and their KV freed, the exception reaches the caller of `step()`, and
the engine goes on serving the others and new requests exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("transformers")

from suffixspec import AsyncEngine, Engine, RequestParams
from test_engine import NEW, _check_exact, _prompts
from tiny_models import tiny_model

CLASS = "LlamaForCausalLM"


class InjectedFailure(RuntimeError):
    pass


def _fail_call(monkeypatch: pytest.MonkeyPatch, model: Any, call: int) -> list[int]:
    """Makes the model's ``call``-th forward pass (1-based) raise once; returns the call counter."""
    forward = model.forward
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise InjectedFailure("simulated out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky)
    return calls


def test_failed_forward_ends_its_step_requests_and_the_engine_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model(CLASS)
    prompts = _prompts(21, 4)
    engine = Engine(model, num_blocks=64, max_running=2)  # two run, two wait
    params = RequestParams(max_new_tokens=NEW)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    first = {out.request_id: list(out.token_ids) for out in engine.step()}  # r0, r1 prefill and emit
    _fail_call(monkeypatch, model, call=1)
    with pytest.raises(InjectedFailure):
        engine.step()
    failed = {out.request_id: out for out in engine.failed_outputs}
    assert set(failed) == {"r0", "r1"}
    for rid, out in failed.items():
        assert out.finished and out.finish_reason == "error"
        assert out.token_ids == first[rid]  # nothing of the failed step was emitted
        assert rid not in engine
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert engine.failed_outputs == []
    assert set(tokens) == {"r2", "r3"}  # the waiting requests were not in the failed step
    for i in (2, 3):
        _check_exact(CLASS, prompts[i], tokens[f"r{i}"])
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    engine.scheduler.check_integrity()
    # New requests (the failed prompts again) are served exactly.
    again = engine.generate(prompts[:2], params)
    for prompt, out in zip(prompts[:2], again, strict=True):
        _check_exact(CLASS, prompt, out.token_ids)


def test_async_streams_of_the_failed_step_raise_and_the_others_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model(CLASS)
    prompts = _prompts(22, 2)
    engine = AsyncEngine(model, num_blocks=64, max_running=1)  # "late" waits while "early" fails
    _fail_call(monkeypatch, model, call=2)

    async def collect(rid: str, prompt: list[int]) -> list[int] | BaseException:
        tokens: list[int] = []
        try:
            async for out in engine.generate(rid, prompt, RequestParams(max_new_tokens=NEW)):
                tokens.extend(out.new_token_ids)
        except InjectedFailure as exc:
            return exc
        return tokens

    async def main() -> list[list[int] | BaseException]:
        return await asyncio.gather(collect("early", prompts[0]), collect("late", prompts[1]))

    early, late = asyncio.run(main())
    assert isinstance(early, InjectedFailure)
    assert isinstance(late, list)
    _check_exact(CLASS, prompts[1], late)
    inner = engine.engine
    assert not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks
