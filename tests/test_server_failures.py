"""A request that fails inside the engine of a real `suffixspec serve` process (its proposer raises,
tests/faulty_serve.py) gets OpenAI's error shape (a 500, or an error event closing its stream),
while concurrent requests get exactly the text of plain greedy decoding, /health stays ok and the
server goes on serving; /metrics counts the failures as errors and all KV is free again."""

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

from faulty_serve import POISON
from server_harness import ServerProcess, greedy_text, make_model_dir, running_server

MAX_TOKENS = 24
PROMPTS = ["def f(x", "import os\n"]
POISONED = [*POISON, 20, 30, 40, 50]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("served") / "tiny-llama", chat_template=False)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    with running_server(model_dir, log, launcher="faulty_serve") as server:
        yield server


def _complete(client: Any, model: str, prompt: Any, stream: bool) -> str | BaseException:
    """The text of one greedy completion, or the error the client raised."""
    args = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    try:
        if not stream:
            return client.completions.create(**args).choices[0].text
        return "".join(c.choices[0].text for c in client.completions.create(**args, stream=True))
    except openai.APIError as exc:
        return exc


def test_a_failing_request_leaves_concurrent_ones_and_the_server_intact(
    server: ServerProcess, model_dir: Path
) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    jobs = [(POISONED, False), (POISONED, True)] + [(p, s) for p in PROMPTS for s in (False, True)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: _complete(client, server.model, *job), jobs))
    whole, streamed = results[:2]
    assert isinstance(whole, openai.InternalServerError) and whole.status_code == 500
    assert "proposer.extend" in whole.message and "injected proposer failure" in whole.message
    # The error event that ends the stream: the client raises it.
    assert isinstance(streamed, openai.APIError) and "injected proposer failure" in streamed.message
    for (prompt, _), text in zip(jobs[2:], results[2:], strict=True):
        assert text == greedy_text(model_dir, prompt, MAX_TOKENS)[1], prompt
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    after = _complete(client, server.model, PROMPTS[0], stream=False)
    assert after == greedy_text(model_dir, PROMPTS[0], MAX_TOKENS)[1]
    metrics = server.metrics()
    assert metrics["suffixspec_requests_total{outcome=error}"] == 2
    assert metrics["suffixspec_kv_blocks_used"] == 0
    assert server.log().count("proposer.extend failed") == 2  # logged once per failure
