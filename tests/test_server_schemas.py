"""The OpenAI request bodies of `suffixspec serve` mapped onto `RequestParams` (no server)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pydantic")

from pydantic import ValidationError

from suffixspec import SLO, InvalidParameterError, RequestParams
from suffixspec.server.schemas import ChatCompletionRequest, CompletionRequest, to_request_params


def _params(body: dict[str, Any], default_max_tokens: int = 16) -> RequestParams:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p", **body})
    return to_request_params(request, default_max_tokens=default_max_tokens)


def test_temperature_zero_is_greedy_and_drops_the_warpers() -> None:
    params = _params({"temperature": 0, "top_p": 0.5, "top_k": 4, "max_tokens": 9, "seed": 3})
    assert params == RequestParams(max_new_tokens=9, do_sample=False, seed=3)


def test_sampling_maps_every_setting() -> None:
    body = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "seed": 5, "stop": ["a", "bc"], "priority": 2}
    params = _params({**body, "slo": {"tpot_ms": 30, "ttft_ms": 500}})
    assert params == RequestParams(
        max_new_tokens=16,
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        seed=5,
        stop=("a", "bc"),
        slo=SLO(tpot_ms=30, ttft_ms=500),
        priority=2,
    )


def test_openai_defaults_sample_with_the_model_config_and_neutral_values_mean_off() -> None:
    params = _params({"top_p": 1, "top_k": -1})
    assert params.do_sample and (params.temperature, params.top_p, params.top_k) == (None, None, None)
    assert _params({"top_k": 0, "temperature": 1}).top_k is None
    assert _params({}, default_max_tokens=77).max_new_tokens == 77
    assert _params({"stop": "END"}).stop == ("END",)
    assert _params({"slo": {}}).slo is None  # no target: best effort


def test_chat_prefers_max_completion_tokens_and_joins_text_parts() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
        "max_tokens": 5,
        "max_completion_tokens": 7,
    }
    request = ChatCompletionRequest.model_validate(body)
    assert to_request_params(request, default_max_tokens=100).max_new_tokens == 7
    assert request.messages[0].template_dict() == {"role": "user", "content": "ab"}


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0},
        {"top_p": 1.01},
        {"top_k": -2},
        {"max_tokens": 0},
        {"seed": -1},
        {"seed": 2**64},
        {"slo": {"tpot_ms": 0}},
        {"slo": {"tpot": 3}},
        {"prompt": None},
        {"model": 3},
    ],
)
def test_out_of_range_bodies_fail_validation(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "p", **body})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"n": 2}, "n=1"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"logprobs": 2}, "logprobs"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"priority": 2**40}, "priority"),
    ],
)
def test_unsupported_or_invalid_settings_raise_invalid_parameter(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidParameterError, match=words):
        _params(body)


def test_one_prompt_per_completion() -> None:
    assert CompletionRequest(model="m", prompt=["only"]).single_prompt() == "only"
    assert CompletionRequest(model="m", prompt=[1, 2]).single_prompt() == [1, 2]
    assert CompletionRequest(model="m", prompt=[[1, 2]]).single_prompt() == [1, 2]
    for bad in ({"prompt": ["a", "b"]}, {"echo": True}, {"best_of": 2}, {"suffix": "x"}):
        with pytest.raises(InvalidParameterError):
            CompletionRequest.model_validate({"model": "m", "prompt": "p", **bad}).single_prompt()
