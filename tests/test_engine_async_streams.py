"""`AsyncEngine.add_request` streams as a server uses them: eager errors, a bounded waiting queue,
closing a stream (even one never iterated) aborts its request, `abort_all` ends every stream
with finish_reason "abort", `on_step` sees every step."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("transformers")

from suffixspec import AsyncEngine, InvalidParameterError, QueueFullError, RequestParams
from test_engine import NEW, _check_exact, _prompts
from tiny_models import tiny_model

CLASS = "LlamaForCausalLM"


def _free(engine: AsyncEngine) -> bool:
    scheduler = engine.engine.scheduler
    return not engine.engine.has_unfinished() and scheduler.num_free_blocks == scheduler.num_blocks


def test_add_request_raises_at_once_and_a_full_queue_is_refused() -> None:
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=64, max_running=1)
    engine.max_waiting = 1
    prompts = _prompts(31, 3)

    async def main() -> list[int]:
        with pytest.raises(InvalidParameterError):
            await engine.add_request("bad", [], RequestParams())
        first = await engine.add_request("a", prompts[0], RequestParams(max_new_tokens=NEW))
        await first.__anext__()  # "a" runs
        second = await engine.add_request("b", prompts[1], RequestParams(max_new_tokens=NEW))  # waits
        with pytest.raises(QueueFullError, match="limit 1"):
            await engine.add_request("c", prompts[2], RequestParams(max_new_tokens=NEW))
        assert "c" not in engine.engine
        await first.aclose()
        tokens = [t for out in [o async for o in second] for t in out.new_token_ids]
        return tokens

    _check_exact(CLASS, _prompts(31, 3)[1], asyncio.run(main()))
    assert _free(engine)


def test_closing_a_stream_never_iterated_aborts_its_request() -> None:
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=64)

    async def main() -> None:
        stream = await engine.add_request("x", _prompts(32, 1)[0], RequestParams(max_new_tokens=NEW))
        assert "x" in engine.engine
        await stream.aclose()
        assert "x" not in engine.engine
        assert [out async for out in stream] == []

    asyncio.run(main())
    assert _free(engine)


def test_abort_all_ends_every_stream_and_on_step_sees_every_step() -> None:
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=64)
    steps: list[int] = []
    engine.on_step = lambda outputs, seconds: steps.append(sum(len(o.new_token_ids) for o in outputs))

    async def follow(stream) -> list:
        return [out async for out in stream]

    async def main() -> list[list]:
        streams = [
            await engine.add_request(f"r{i}", p, RequestParams(max_new_tokens=200))
            for i, p in enumerate(_prompts(33, 2))
        ]
        tasks = [asyncio.ensure_future(follow(s)) for s in streams]
        while not steps:
            await asyncio.sleep(0.01)
        await engine.abort_all()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    for outputs in results:
        assert outputs[-1].finished and outputs[-1].finish_reason == "abort"
        assert len(outputs[-1].token_ids) < 200
    assert sum(steps) == sum(len(outputs[-1].token_ids) for outputs in results)
    assert _free(engine)
