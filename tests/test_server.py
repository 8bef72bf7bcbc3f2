"""`suffixspec serve` through the official `openai` client, against a real server process on
127.0.0.1 (one per module): greedy output equals plain `model.generate` for concurrent streaming
and non-streaming clients, streamed text equals the whole text (characters spanning tokens
included), chat completions use the chat template, every bad request gets a 4xx in OpenAI's
error shape, and /metrics counts what happened."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("openai")

import httpx
import openai
from transformers import AutoTokenizer

from server_harness import ServerProcess, greedy_text, make_model_dir, running_server

CONTEXT = 1024
# Text prompts; "def f(x" reaches the LM head's "x€x€..." chain (three tokens per "€").
PROMPTS = ["def f(x", "import os\n", "class A:", "hello world", "for i in range(10):", "return self"]
EURO_PROMPT = PROMPTS[0]
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(
        tmp_path_factory.mktemp("served") / "tiny-llama", chat_template=True, context=CONTEXT
    )


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(model_dir, tmp_path_factory.mktemp("log") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    # No retries: a 429 or a 5xx must reach the test as it is.
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def _complete(client: Any, model: str, prompt: Any, stream: bool, **kwargs: Any) -> tuple[str, str, Any, int]:
    """(text, finish_reason, usage, number of chunks) of one completion."""
    args = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    if not stream:
        r = client.completions.create(**args)
        return r.choices[0].text, r.choices[0].finish_reason, r.usage, 1
    parts, finish, usage = [], None, None
    for chunk in client.completions.create(**args, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.text)
            finish = choice.finish_reason or finish
    return "".join(parts), finish, usage, len(parts)


def test_health_and_models(server: ServerProcess, client: Any) -> None:
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    models = client.models.list().data
    assert [m.id for m in models] == [server.model]
    assert models[0].model_extra["max_model_len"] == CONTEXT


def test_concurrent_streaming_and_plain_clients_get_plain_greedy_text(
    server: ServerProcess, client: Any, model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    jobs = [(p, stream) for p in PROMPTS for stream in (False, True)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: _complete(client, server.model, *job), jobs))
    for (prompt, stream), (text, finish, usage, chunks) in zip(jobs, results, strict=True):
        tokens, expected = greedy_text(model_dir, prompt, MAX_TOKENS)
        assert text == expected, (prompt, stream)
        assert finish == "length"
        assert usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
        assert usage.completion_tokens == len(tokens) == MAX_TOKENS
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        if stream:
            assert chunks > 1
    # The characters that span tokens came out whole through the stream, never as U+FFFD halves.
    euro = results[jobs.index((EURO_PROMPT, True))][0]
    assert euro.count("€") >= 3 and euro == results[jobs.index((EURO_PROMPT, False))][0]


def test_token_id_prompts_and_stop_strings(server: ServerProcess, client: Any, model_dir: Path) -> None:
    ids = AutoTokenizer.from_pretrained(model_dir)(EURO_PROMPT)["input_ids"]
    _, expected = greedy_text(model_dir, ids, MAX_TOKENS)
    assert _complete(client, server.model, ids, stream=False)[0] == expected
    assert "€" in expected
    cut = expected[: expected.index("€")]
    for stream in (False, True):
        text, finish, _, _ = _complete(client, server.model, ids, stream=stream, stop=["€", "never"])
        assert (text, finish) == (cut, "stop")


def test_chat_completions_use_the_chat_template(server: ServerProcess, client: Any, model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def f(x"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    _, expected = greedy_text(model_dir, ids, 24)
    r = client.chat.completions.create(model=server.model, messages=messages, max_tokens=24, temperature=0)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), 24)
    chunks = list(
        client.chat.completions.create(
            model=server.model, messages=messages, max_completion_tokens=24, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "length"


def test_extra_fields_slo_priority_and_sampling_settings(server: ServerProcess, client: Any) -> None:
    before = server.metrics()
    extra = {"slo": {"tpot_ms": 60_000, "ttft_ms": 60_000}, "priority": 3}
    greedy, _, _, _ = _complete(client, server.model, "class A:", stream=False, extra_body=extra)
    assert greedy == _complete(client, server.model, "class A:", stream=False)[0]
    after = server.metrics()
    met = "suffixspec_slo_requests_total{result=met}"
    assert after[met] == before[met] + 1
    # Sampling whose warpers keep only the argmax is greedy: top_k (an extra field) and top_p
    # reach the engine.
    for settings in ({"extra_body": {"top_k": 1}}, {"top_p": 1e-9}):
        text, finish, _, _ = _complete(
            client, server.model, "class A:", stream=False, temperature=1.0, **settings
        )
        assert (text, finish) == (greedy, "length")
    text, finish, usage, _ = _complete(client, server.model, "class A:", stream=True, temperature=0.8, seed=3)
    assert finish == "length" and usage.completion_tokens == MAX_TOKENS


def _error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "nope", "prompt": "a"}, 404, ["'nope' does not exist"]),
        ({"prompt": "a"}, 400, ["model", "Field required"]),
        ({"model": "M", "prompt": "a", "temperature": -1}, 400, ["temperature"]),
        ({"model": "M", "prompt": "a", "temperature": 3}, 400, ["temperature"]),
        ({"model": "M", "prompt": "a", "top_p": 0}, 400, ["top_p"]),
        ({"model": "M", "prompt": "a", "top_p": 1.5}, 400, ["top_p"]),
        ({"model": "M", "prompt": "a", "max_tokens": 0}, 400, ["max_tokens"]),
        ({"model": "M", "prompt": "a", "seed": -1}, 400, ["seed"]),
        ({"model": "M", "prompt": "a", "n": 2}, 400, ["n=1"]),
        ({"model": "M", "prompt": "a", "presence_penalty": 1}, 400, ["presence_penalty"]),
        ({"model": "M", "prompt": "a", "stop": [""]}, 400, ["stop"]),
        ({"model": "M", "prompt": "a", "slo": {"tpot_ms": -5}}, 400, ["slo.tpot_ms"]),
        ({"model": "M", "prompt": "a", "priority": 2**40}, 400, ["priority"]),
        ({"model": "M", "prompt": "a", "max_tokens": "many"}, 400, ["max_tokens"]),
        ({"model": "M", "prompt": [1, 5000]}, 400, ["5000", "outside"]),
        ({"model": "M", "prompt": ""}, 400, ["empty"]),
        ({"model": "M", "prompt": ["a", "b"]}, 400, ["one prompt"]),
        ({"model": "M", "prompt": [7] * (CONTEXT + 5)}, 400, [f"{CONTEXT + 5} tokens", "context"]),
        ({"model": "M", "prompt": [7] * 1000, "max_tokens": 100}, 400, ["exceeds", f"{CONTEXT} positions"]),
    ],
)
def test_bad_completion_requests_get_a_clear_4xx(
    server: ServerProcess, body: dict[str, Any], status: int, words: list[str]
) -> None:
    if body.get("model") == "M":
        body = {**body, "model": server.model}
    _error(httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=30), status, *words)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"messages": []}, 400, ["messages"]),
        ({"messages": [{"content": "hi"}]}, 400, ["role"]),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, ["text content"]),
        ({"messages": [{"role": "user", "content": " ".join(map(str, range(1500)))}]}, 400, ["context"]),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, ["tools"]),
    ],
)
def test_bad_chat_requests_get_a_clear_4xx(
    server: ServerProcess, body: dict[str, Any], status: int, words: list[str]
) -> None:
    body = {"model": server.model, **body}
    _error(httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30), status, *words)


def test_malformed_json_and_unknown_routes(server: ServerProcess, client: Any) -> None:
    headers = {"content-type": "application/json"}
    for path in ("/v1/completions", "/v1/chat/completions"):
        _error(
            httpx.post(f"{server.base_url}{path}", content=b'{"model": ', headers=headers),
            400,
            "malformed JSON",
        )
    _error(httpx.get(f"{server.base_url}/v1/nothing"), 404, "Not Found")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="a", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=server.model, prompt="a", temperature=-0.5)


def test_metrics_parse_and_count_requests(server: ServerProcess, client: Any) -> None:
    before = server.metrics()
    for stream in (False, True):
        _complete(client, server.model, "return self", stream=stream)
    httpx.post(f"{server.base_url}/v1/completions", json={"model": server.model, "prompt": "a", "n": 3})
    after = server.metrics()

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta("suffixspec_requests_total{outcome=length}") == 2
    assert delta("suffixspec_requests_total{outcome=invalid}") == 1
    assert delta("suffixspec_generated_tokens_total") == 2 * MAX_TOKENS
    assert delta("suffixspec_time_to_first_token_seconds_count") == 2
    assert delta("suffixspec_time_per_output_token_seconds_count") == 2
    assert delta("suffixspec_step_tokens_sum") == 2 * MAX_TOKENS
    assert delta("suffixspec_engine_steps_total") >= 1
    # Idle again: nothing queued or running, every KV block back in the pool.
    assert after["suffixspec_requests_running"] == after["suffixspec_requests_waiting"] == 0
    assert after["suffixspec_kv_blocks_used"] == 0 and after["suffixspec_kv_blocks_total"] > 0
    text = httpx.get(f"{server.base_url}/metrics").text
    assert "# TYPE suffixspec_time_to_first_token_seconds histogram" in text
