"""Fuzzing ``suffixspec.generate`` (the other public entry point besides the cache and trees):
whatever its arguments, only ``SuffixSpecError`` subclasses escape, and a failed call leaves a
shared cache exactly as it was (``stats()`` and ``check_integrity()``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from suffixspec.errors import SuffixSpecError  # noqa: E402

ODD = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.just([1, 2]),
    st.just({"a": 1}),
    st.just(object()),
    st.sampled_from([np.int32(2), np.float32(1.5), np.True_]),
)
SMALL_INTS = st.one_of(st.integers(min_value=-2, max_value=70), ODD)
PROMPTS = st.one_of(
    st.lists(st.integers(min_value=0, max_value=63), min_size=1, max_size=6),
    st.lists(st.lists(st.integers(min_value=-1, max_value=70), max_size=5), max_size=3),
    ODD,
)
KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": SMALL_INTS,
        "do_sample": st.one_of(st.booleans(), ODD),
        "temperature": st.one_of(st.floats(min_value=-1, max_value=3), ODD),
        "top_k": SMALL_INTS,
        "top_p": st.one_of(st.floats(min_value=-1, max_value=2), ODD),
        "eos_token_id": SMALL_INTS,
        "pad_token_id": SMALL_INTS,
        "seed": SMALL_INTS,
        "attention": st.one_of(st.sampled_from(["auto", "torch", "cuda", "nope"]), ODD),
        "spec": st.one_of(st.just(suffixspec.SpecConfig(max_spec_tokens=4)), ODD),
        "max_time": st.one_of(st.floats(min_value=-1, max_value=10), ODD),
    },
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    return transformers.LlamaForCausalLM(config).eval()


def _shared_cache() -> suffixspec.SuffixCache:
    cache = suffixspec.SuffixCache()
    cache.start_request("seen", [1, 2, 3, 4])
    cache.add_active_response("seen", [5, 6, 7])
    cache.stop_request("seen")
    return cache


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=PROMPTS, kwargs=KWARGS)
def test_generate_raises_only_typed_errors_and_a_failure_changes_no_cache(model, prompt, kwargs):
    cache = _shared_cache()
    before = cache.stats()
    kwargs = {"max_new_tokens": 3, **kwargs}
    if isinstance(kwargs["max_new_tokens"], int) and not isinstance(kwargs["max_new_tokens"], bool):
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], 6)  # keep each example fast
    try:
        suffixspec.generate(model, prompt, cache=cache, **kwargs)
    except SuffixSpecError:
        assert cache.stats() == before
        cache.check_integrity()  # raises on a broken invariant
