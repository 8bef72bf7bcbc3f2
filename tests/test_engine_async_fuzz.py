"""`AsyncEngine` under any interleaving of clients (hypothesis): clients arrive at different
times, read their streams to the end or stop after some outputs (closing the stream), or have
their request aborted from outside; meanwhile a tiny KV pool forces preemption. Every stream
read to the end is exact; every stream ends with one finished output; afterwards the engine holds
no request and its pool is whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from suffixspec import AsyncEngine, RequestParams
from test_engine import NEW, _prompts, _reference
from tiny_models import tiny_model

CLASS = "LlamaForCausalLM"
PROMPTS = _prompts(13, 8, lo=4, hi=30)

CLIENTS = st.lists(
    st.fixed_dictionaries(
        {
            "prompt": st.integers(0, len(PROMPTS) - 1),
            "arrive": st.integers(0, 6),  # event-loop turns before it comes
            "read": st.none() | st.integers(0, 4),  # outputs read before closing (None: all)
            "abort_after": st.none() | st.integers(0, 8),  # turns before another task aborts it
        }
    ),
    min_size=1,
    max_size=6,
)


async def _client(engine: AsyncEngine, rid: str, plan: dict[str, Any]) -> tuple[list[int], list]:
    for _ in range(plan["arrive"]):
        await asyncio.sleep(0)
    stream = await engine.add_request(rid, PROMPTS[plan["prompt"]], RequestParams(max_new_tokens=NEW))
    tokens, outputs = [], []
    try:
        async for out in stream:
            tokens.extend(out.new_token_ids)
            outputs.append(out)
            if plan["read"] is not None and len(outputs) >= plan["read"]:
                break
    finally:
        await stream.aclose()
    return tokens, outputs


async def _aborter(engine: AsyncEngine, rid: str, turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
    await engine.abort(rid)  # no error if it already ended


@settings(max_examples=30)
@given(CLIENTS)
def test_any_interleaving_of_clients_is_exact_and_leaks_nothing(clients: list[dict[str, Any]]) -> None:
    engine = AsyncEngine(tiny_model(CLASS), num_blocks=10, block_size=8, max_running=4)

    async def main() -> list:
        tasks = [_client(engine, f"c{i}", plan) for i, plan in enumerate(clients)]
        aborters = [
            _aborter(engine, f"c{i}", plan["abort_after"])
            for i, plan in enumerate(clients)
            if plan["abort_after"] is not None
        ]
        results = await asyncio.gather(*tasks, *aborters)
        return results[: len(tasks)]

    results = asyncio.run(main())
    for plan, (tokens, outputs) in zip(clients, results, strict=True):
        finished = [o for o in outputs if o.finished]
        assert len(finished) <= 1 and (not finished or finished[0] is outputs[-1])
        reference = _reference(CLASS, tuple(PROMPTS[plan["prompt"]]), NEW)
        if finished and finished[0].finish_reason == "length":
            assert tokens == reference
        else:  # cut short (closed, aborted): a prefix of the exact output
            assert tokens == reference[: len(tokens)]
    inner = engine.engine
    assert not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks
    inner.scheduler.check_integrity()
