"""`suffixspec.AsyncEngine`: concurrent streams are exact; a stream closed early aborts its request."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("transformers")

from suffixspec import AsyncEngine, DuplicateRequestError, Engine, RequestParams
from test_engine import NEW, _check_exact, _prompts
from tiny_models import tiny_model

CLASS = "LlamaForCausalLM"


async def _collect(
    engine: AsyncEngine, rid: str, prompt: list[int], delay: int = 0
) -> tuple[list[int], list]:
    for _ in range(delay):  # arrive later than the others
        await asyncio.sleep(0.01)
    tokens, outputs = [], []
    async for out in engine.generate(rid, prompt, RequestParams(max_new_tokens=NEW)):
        tokens.extend(out.new_token_ids)
        outputs.append(out)
    return tokens, outputs


def test_concurrent_streams_are_exact() -> None:
    prompts = _prompts(7, 4)
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=64, max_running=4)

    async def main() -> list:
        return await asyncio.gather(*(_collect(engine, f"s{i}", p, delay=i) for i, p in enumerate(prompts)))

    results = asyncio.run(main())
    for prompt, (tokens, outputs) in zip(prompts, results, strict=True):
        _check_exact(CLASS, prompt, tokens)
        assert outputs[-1].finished and not any(o.finished for o in outputs[:-1])
        assert outputs[-1].token_ids == tokens
    assert not engine.engine.has_unfinished()


def test_a_stream_closed_early_aborts_its_request_and_frees_its_blocks() -> None:
    prompts = _prompts(8, 2)
    inner = Engine(tiny_model(CLASS), num_blocks=32)
    engine = AsyncEngine(inner)

    async def leave_early() -> int:
        stream = engine.generate("gone", prompts[0], RequestParams(max_new_tokens=NEW))
        async for out in stream:
            if len(out.token_ids) >= 2:
                break
        await stream.aclose()
        return len(out.token_ids)

    async def main() -> tuple:
        return await asyncio.gather(leave_early(), _collect(engine, "stays", prompts[1]))

    got, (tokens, _) = asyncio.run(main())
    assert 2 <= got < NEW
    _check_exact(CLASS, prompts[1], tokens)
    assert "gone" not in inner and not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks


def test_bad_requests_raise_before_streaming() -> None:
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=16)

    async def main() -> None:
        first = engine.generate("x", [1, 2, 3], RequestParams(max_new_tokens=2))
        await first.__anext__()
        with pytest.raises(DuplicateRequestError):
            await engine.generate("x", [1, 2], RequestParams(max_new_tokens=2)).__anext__()
        async for _ in first:
            pass

    asyncio.run(main())
