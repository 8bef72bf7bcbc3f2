"""Any request body the OpenAI endpoints may receive, valid or not (hypothesis): the answer is a
200 or a 4xx with OpenAI's error body, never a 5xx; a streamed answer ends with ``[DONE]`` or an
error event; and after every batch of requests the engine holds no request and its KV pool is
whole (nothing leaked by a rejected or a finished request)."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")
pytest.importorskip("fastapi")

import httpx
from transformers import AutoTokenizer

from suffixspec import AsyncEngine
from suffixspec.default_model import default_model_dir
from suffixspec.server.app import build_app
from tiny_models import VOCAB, tiny_model

CLASS = "LlamaForCausalLM"
JSON = {"content-type": "application/json"}

# Each field: values that are good (three times in four), and values of the wrong type, range or
# shape. Text prompts and chat messages tokenize to ids beyond the tiny model's vocabulary: 400.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "model": st.just("tiny"),
    "max_tokens": st.integers(1, 6),
    "temperature": st.sampled_from([0, 0.0, 0.7, 1.0]),
    "top_p": st.sampled_from([0.5, 1.0]),
    "top_k": st.sampled_from([-1, 0, 5]),
    "seed": st.integers(0, 2**32),
    "stop": st.sampled_from(["a", ["b", "c"], []]),
    "stream": st.booleans(),
    "priority": st.integers(-3, 3),
    "slo": st.sampled_from([{"tpot_ms": 50}, {"ttft_ms": 20}, {}]),
    "n": st.just(1),
    "logit_bias": st.none(),
}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "model": st.just("other"),
    "max_tokens": st.integers(-2, 0),
    "temperature": st.sampled_from([2.5, -1]),
    "top_p": st.sampled_from([0, 1.5]),
    "top_k": st.just(-7),
    "seed": st.sampled_from([-3, 2**70]),
    "stop": st.just([1, 2]),
    "stream": st.just("maybe"),
    "priority": st.just(2**40),
    "slo": st.sampled_from([{"tpot_ms": -1}, {"ttft_ms": 0}]),
    "n": st.just(2),
    "logit_bias": st.just({"5": 1.0}),
}
GOOD_PROMPTS = st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=12)
BAD_PROMPTS = st.lists(st.integers(-2, VOCAB + 2), max_size=3) | st.text(max_size=20) | ANY_JSON
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "robot"]), "content": st.text(max_size=12)}
    ),
    max_size=3,
)


def _either(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    if draw(st.integers(0, 3)) == 0:
        return draw(bad | ANY_JSON)
    return draw(good)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, Any]:
    chat = draw(st.integers(0, 4)) == 0
    path = "/v1/chat/completions" if chat else "/v1/completions"
    if draw(st.integers(0, 19)) == 0:  # now and then not an object at all
        return path, draw(ANY_JSON)
    body: dict[str, Any] = {"model": "tiny", "max_tokens": 3, "stream": draw(st.booleans())}
    if chat:
        body["messages"] = _either(draw, MESSAGES, ANY_JSON)
    else:
        body["prompt"] = _either(draw, GOOD_PROMPTS, BAD_PROMPTS)
    for name in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=4, unique=True)):
        body[name] = _either(draw, GOOD[name], BAD[name])
    return path, body


@functools.cache
def _tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(default_model_dir())


def _check_error_body(response: httpx.Response) -> None:
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]


async def _exchange(app: Any, requests: list[tuple[str, Any]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post(path, content=json.dumps(body), headers=JSON) for path, body in requests)
            )
        )


@settings(max_examples=60)
@given(st.lists(bodies(), min_size=1, max_size=6))
def test_any_body_gets_a_200_or_a_4xx_and_nothing_leaks(requests: list[tuple[str, Any]]) -> None:
    engine = AsyncEngine(tiny_model(CLASS), _tokenizer(), num_blocks=32)
    app = build_app(engine, model_name="tiny")
    responses = asyncio.run(_exchange(app, requests))
    for (_, body), response in zip(requests, responses, strict=True):
        # Whether it streamed is the server's answer (pydantic also reads "true", 1 as true).
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        event(f"{'stream' if streamed else 'whole'} {response.status_code}")
        assert response.status_code == 200 or 400 <= response.status_code < 500, (
            body,
            response.status_code,
            response.text[:300],
        )
        if response.status_code != 200:
            _check_error_body(response)
        elif streamed:
            events = [line for line in response.text.splitlines() if line.startswith("data: ")]
            assert events, response.text[:300]
            assert events[-1] == "data: [DONE]" or '"error"' in events[-1], events[-3:]
        else:
            assert response.json()["choices"], response.text[:300]
    inner = engine.engine
    assert not inner.has_unfinished()
    assert inner.scheduler.num_free_blocks == inner.scheduler.num_blocks
    inner.scheduler.check_integrity()


@functools.cache
def _default_model() -> tuple[Any, Any]:
    from suffixspec.default_model.store import load_default_model

    model, tokenizer, _ = load_default_model()
    return model, tokenizer


def _sse_text(response: httpx.Response) -> tuple[str, str | None]:
    """The streamed completion's text and finish reason, from its server-sent events."""
    parts, finish = [], None
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                parts.append(choice["text"])
                finish = choice.get("finish_reason") or finish
    return "".join(parts), finish


@settings(max_examples=25)
@given(
    prompt=st.text(min_size=1, max_size=24),
    stops=st.lists(st.text(min_size=1, max_size=3), max_size=3),
    max_tokens=st.integers(1, 16),
)
def test_streamed_text_equals_the_whole_text_for_any_prompt_and_stops(
    prompt: str, stops: list[str], max_tokens: int
) -> None:
    """With the default model and its tokenizer: whatever the text prompt (any unicode) and stop
    strings, the streamed pieces add up to the non-streamed text, with the same finish reason."""
    model, tokenizer = _default_model()
    engine = AsyncEngine(model, tokenizer, num_blocks=64)
    app = build_app(engine, model_name="default")
    body = {"model": "default", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stop": stops}
    whole, streamed = asyncio.run(
        _exchange(app, [("/v1/completions", body), ("/v1/completions", {**body, "stream": True})])
    )
    assert whole.status_code == streamed.status_code
    if whole.status_code != 200:  # e.g. a prompt that tokenizes to nothing
        _check_error_body(whole)
        return
    choice = whole.json()["choices"][0]
    assert _sse_text(streamed) == (choice["text"], choice["finish_reason"])
    assert not any(s in choice["text"] for s in stops)
