"""`suffixspec serve` at its limits, against a real server process (one per module, no speculation,
two running requests, one waiting, a model without a chat template, a 4 s shutdown timeout): a
client that disconnects mid-stream has its request aborted and its KV freed, a full queue gets
429, chat without a chat template gets 400, and SIGTERM lets running requests finish up to the
timeout, then aborts the rest."""

from __future__ import annotations

import signal
import time
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

from server_harness import ServerProcess, greedy_text, make_model_dir, running_server

CONTEXT = 8192
LONG = 6000  # tokens: far longer than the shutdown timeout at one token per step
SHUTDOWN_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(
        tmp_path_factory.mktemp("limits") / "no-template", chat_template=False, context=CONTEXT
    )


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--policy", "none", "--max-running", "2", "--max-queued", "1", "--num-blocks", "2048"]
    args += ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT)]
    with running_server(model_dir, tmp_path_factory.mktemp("log") / "server.log", *args) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _long_stream(client: Any, model: str, prompt: str, max_tokens: int = LONG) -> Any:
    """A streaming completion, once its first text has arrived (so it is running)."""
    stream = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
    )
    chunks = iter(stream)
    first = next(chunks)
    return stream, chunks, first.choices[0].text


def _wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_chat_without_a_chat_template_is_400(server: ServerProcess, client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}])


def test_characters_spanning_steps_stream_whole(server: ServerProcess, client: Any, model_dir: Path) -> None:
    """One token per step here: each three-token "€" spans three steps of the stream."""
    stream = client.completions.create(
        model=server.model, prompt="def f(x", max_tokens=40, temperature=0, stream=True
    )
    parts = [chunk.choices[0].text for chunk in stream]
    expected = greedy_text(model_dir, "def f(x", 40)[1]
    # Released too early, a "€" would reach the client as U+FFFD halves and the text would differ.
    assert "".join(parts) == expected and expected.count("€") >= 3


def test_a_client_that_disconnects_mid_stream_has_its_request_aborted_and_kv_freed(
    server: ServerProcess, client: Any
) -> None:
    before = server.metrics()
    stream, chunks, _ = _long_stream(client, server.model, "import os\n")
    next(chunks)
    assert server.metrics()["suffixspec_kv_blocks_used"] > 0
    stream.close()  # the connection goes away
    _wait_until(lambda: server.metrics()["suffixspec_kv_blocks_used"] == 0)
    after = server.metrics()
    assert after["suffixspec_requests_running"] == 0
    aborted = "suffixspec_requests_total{outcome=abort}"
    assert after[aborted] == before[aborted] + 1
    assert after["suffixspec_generated_tokens_total"] - before["suffixspec_generated_tokens_total"] < LONG


def test_a_client_that_leaves_before_a_whole_response_has_its_request_aborted(server: ServerProcess) -> None:
    before = server.metrics()
    body = {"model": server.model, "prompt": "import os\n", "max_tokens": LONG, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=1.0)
    _wait_until(lambda: server.metrics()["suffixspec_kv_blocks_used"] == 0)
    after = server.metrics()
    aborted = "suffixspec_requests_total{outcome=abort}"
    assert after[aborted] == before[aborted] + 1
    assert after["suffixspec_generated_tokens_total"] - before["suffixspec_generated_tokens_total"] < LONG


def test_a_full_queue_gets_429(server: ServerProcess, client: Any, model_dir: Path) -> None:
    running = [_long_stream(client, server.model, p) for p in ("class A:", "hello world")]
    waiting = client.completions.create(
        model=server.model, prompt="def f(x", max_tokens=5, temperature=0, stream=True
    )
    _wait_until(lambda: server.metrics()["suffixspec_requests_waiting"] == 1)
    with pytest.raises(openai.RateLimitError, match="busy") as caught:
        client.completions.create(model=server.model, prompt="return self", max_tokens=5, temperature=0)
    assert caught.value.status_code == 429
    for stream, _, _ in running:
        stream.close()
    # The queued request is admitted once the others leave and completes normally.
    assert "".join(c.choices[0].text for c in waiting) == greedy_text(model_dir, "def f(x", 5)[1]
    metrics = server.metrics()
    assert metrics["suffixspec_requests_total{outcome=queue_full}"] == 1
    _wait_until(lambda: server.metrics()["suffixspec_kv_blocks_used"] == 0)


def test_shutdown_finishes_running_requests_within_the_timeout_and_aborts_the_rest(
    server: ServerProcess, client: Any, model_dir: Path
) -> None:
    _, long_chunks, long_first = _long_stream(client, server.model, "class A:")
    _, short_chunks, short_first = _long_stream(client, server.model, "for i in range(10):", 100)
    server.signal(signal.SIGTERM)
    sent = time.monotonic()

    def drain(chunks: Iterator[Any], first: str) -> tuple[str, str | None, float]:
        parts, finish = [first], None
        for chunk in chunks:
            parts.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        return "".join(parts), finish, time.monotonic() - sent

    with ThreadPoolExecutor(2) as pool:
        short = pool.submit(drain, short_chunks, short_first)
        long = pool.submit(drain, long_chunks, long_first)
        # No new connection is accepted meanwhile.
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/health", timeout=2)
        short_text, short_finish, short_at = short.result(timeout=60)
        long_text, long_finish, long_at = long.result(timeout=60)
    assert (short_text, short_finish) == (greedy_text(model_dir, "for i in range(10):", 100)[1], "length")
    assert short_at < SHUTDOWN_TIMEOUT
    assert long_finish == "abort"
    assert SHUTDOWN_TIMEOUT <= long_at < SHUTDOWN_TIMEOUT + 10
    assert greedy_text(model_dir, "class A:", 60)[1].startswith(long_text[:20])
    server.process.wait(30)
    assert "aborted" in server.log()
