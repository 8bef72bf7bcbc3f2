"""The server app in process (httpx's ASGI transport): when the engine's forward pass fails, the
requests of that step get OpenAI's error body (500, or an error event closing the stream), the
metrics count them as errors, and the next requests are served."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")

import httpx
from transformers import AutoTokenizer

from suffixspec import AsyncEngine
from suffixspec.default_model import default_model_dir
from suffixspec.server.app import build_app
from test_engine import _prompts, _reference
from tiny_models import tiny_model

CLASS = "LlamaForCausalLM"


class InjectedFailure(RuntimeError):
    pass


def _failing_calls(monkeypatch: pytest.MonkeyPatch, model: Any, calls: set[int]) -> None:
    forward, count = model.forward, [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] in calls:
            raise InjectedFailure("simulated out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky)


def test_a_failed_step_answers_its_requests_with_errors_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model(CLASS)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())  # text is not used: token-id prompts
    engine = AsyncEngine(model, tokenizer, num_blocks=64)
    app = build_app(engine, model_name="tiny")
    _failing_calls(monkeypatch, model, {1, 2})  # the first request's first step, the second's
    prompt = _prompts(41, 1)[0]
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 8, "temperature": 0}

    async def main() -> tuple[httpx.Response, str, httpx.Response, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            whole = await client.post("/v1/completions", json=body)
            streamed = await client.post("/v1/completions", json={**body, "stream": True})
            after = await client.post("/v1/completions", json=body)
            metrics = (await client.get("/metrics")).text
        return whole, streamed.text, after, metrics

    whole, streamed, after, metrics = asyncio.run(main())
    assert whole.status_code == 500
    error = whole.json()["error"]
    assert (
        error["type"] == "internal_error" and "InjectedFailure: simulated out of memory" in error["message"]
    )
    events = [line.removeprefix("data: ") for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "simulated out of memory" in json.loads(events[-2])["error"]["message"]
    assert after.status_code == 200
    assert after.json()["usage"]["completion_tokens"] == 8
    reference = _reference(CLASS, tuple(prompt), 8)
    assert after.json()["choices"][0]["text"] == tokenizer.decode(reference, skip_special_tokens=True)
    assert 'suffixspec_requests_total{outcome="error"} 2.0' in metrics
    assert "suffixspec_kv_blocks_used 0.0" in metrics
