"""RequestParams, SLO and RequestOutput: typed, validated, torch-free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import suffixspec
from suffixspec import SLO, InvalidParameterError, RequestParams


def test_defaults_and_sampling_overrides() -> None:
    params = RequestParams()
    assert params.max_new_tokens == 64 and not params.do_sample and params.slo is None
    assert params.sampling_overrides() == {"do_sample": False}
    sampled = RequestParams(do_sample=True, temperature=0.7, top_k=5, seed=3, stop=["\n"])
    assert sampled.sampling_overrides() == {"do_sample": True, "temperature": 0.7, "top_k": 5}
    assert sampled.stop == ("\n",)
    assert RequestParams(stop_token_ids=[2, 3]).stop_token_ids == (2, 3)
    assert RequestParams(stop=None).stop == ()  # OpenAI's null: no stop strings
    assert RequestParams(slo=SLO(tpot_ms=20.0)).slo == SLO(tpot_ms=20.0, ttft_ms=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": 2.0},
        {"do_sample": 1},
        {"do_sample": True, "temperature": 0.0},
        {"do_sample": True, "top_k": 0},
        {"do_sample": True, "top_p": 1.5},
        {"temperature": 0.5},  # warpers without sampling
        {"seed": -1},
        {"seed": 2**64},  # beyond what torch.Generator.manual_seed takes
        {"stop_token_ids": [1, -2]},
        {"stop_token_ids": "ab"},
        {"stop": "x"},
        {"stop": 3},
        {"stop": [None]},
        {"stop": [""]},
        {"slo": {"tpot_ms": 10}},
        {"priority": True},
    ],
)
def test_bad_params_are_typed(kwargs: dict) -> None:
    with pytest.raises(InvalidParameterError):
        RequestParams(**kwargs)


@pytest.mark.parametrize("kwargs", [{"tpot_ms": 0.0}, {"ttft_ms": -1.0}, {"tpot_ms": float("nan")}])
def test_bad_slo_is_typed(kwargs: dict) -> None:
    with pytest.raises(InvalidParameterError):
        SLO(**kwargs)


def test_params_import_without_torch() -> None:
    make = "suffixspec.RequestParams(); suffixspec.SLO()"
    code = f"import sys, suffixspec; {make}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert suffixspec.RequestOutput.__module__ == "suffixspec.engine.params"


def test_streamed_text_holds_back_a_possible_stop_string() -> None:
    from suffixspec.engine.request import EngineRequest

    class CharTokenizer:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(chr(i) for i in ids)

    params = RequestParams(max_new_tokens=20, stop=["END"])
    request = EngineRequest("r", 0, [1], params, None, (), None, tokens=[1])  # type: ignore[arg-type]
    streamed = ""
    for chunk in ("ab", "cE", "N", "xyE", "ND"):
        request.emit(np.array([ord(c) for c in chunk]), now=0.0)
        request.update_text(CharTokenizer())
        out = request.take_output()
        streamed += out.new_text
        assert out.text.startswith(streamed)
    assert out.finished and out.finish_reason == "stop"
    assert streamed == out.text == "abcENxy"
