"""RequestParams, SLO and RequestOutput: typed, validated, torch-free."""

from __future__ import annotations

import subprocess
import sys

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
        {"stop_token_ids": [1, -2]},
        {"stop_token_ids": "ab"},
        {"stop": "x"},
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
