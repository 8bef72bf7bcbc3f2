"""``suffixspec.SpecConfig``: one settings type, its defaults defined once in the Rust core."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import suffixspec
from suffixspec import SpecConfig
from suffixspec._native import SPEC_DEFAULTS
from suffixspec.errors import InvalidParameterError, SuffixSpecError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_come_from_the_rust_core() -> None:
    """Every field's default is the core crate's constant of the same name, read through the bindings."""
    source = (ROOT / "rust" / "suffix-cache" / "src" / "defaults.rs").read_text()
    constants = dict(re.findall(r"pub const ([A-Z_]+): [^=]+ = ([^;]+);", source))
    fields = {f.name: f.default for f in dataclasses.fields(SpecConfig)}
    assert set(fields) == set(SPEC_DEFAULTS)
    for name, default in fields.items():
        assert default == SPEC_DEFAULTS[name]
        literal = constants[name.upper()].replace("true", "True").replace("false", "False")
        assert default == eval(literal, {"__builtins__": {}}), name  # int/float/bool/str literals only


def test_one_settings_type_everywhere() -> None:
    assert suffixspec.SpecConfig is SpecConfig
    from suffixspec.generation import config as generation_config

    assert generation_config.SpecConfig is SpecConfig
    import suffixspec.replay.methods as methods

    assert not hasattr(methods, "SpecParams")


@pytest.mark.parametrize(
    "changes",
    [
        {"max_spec_tokens": -1},
        {"max_spec_tokens": 2.5},
        {"max_spec_tokens": True},
        {"max_tree_nodes": 0},
        {"min_token_prob": 2.0},
        {"min_token_prob": float("nan")},
        {"min_match_len": -1},
        {"max_spec_factor": -0.5},
        {"max_spec_offset": float("inf")},
        {"max_depth": 0},
        {"max_cached_requests": -1},
        {"max_cached_tokens": None},
        {"use_tree_spec": 1},
        {"drafter": "nope"},
        {"drafter": None},
    ],
)
def test_bad_settings_raise_typed_errors(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidParameterError) as info:
        SpecConfig(**changes)  # type: ignore[arg-type]
    assert isinstance(info.value, SuffixSpecError) and isinstance(info.value, ValueError)
    with pytest.raises(InvalidParameterError):
        SpecConfig().replace(**changes)


def test_replace_and_derived_arguments() -> None:
    spec = SpecConfig().replace(max_spec_tokens=8, use_tree_spec=True, max_tree_nodes=5)
    assert spec.node_budget == 5
    assert spec.speculate_kwargs() == {
        "max_spec_tokens": 8,
        "max_spec_factor": SPEC_DEFAULTS["max_spec_factor"],
        "max_spec_offset": SPEC_DEFAULTS["max_spec_offset"],
        "min_token_prob": SPEC_DEFAULTS["min_token_prob"],
        "use_tree_spec": True,
        "drafter": SPEC_DEFAULTS["drafter"],
    }
    cache = suffixspec.SuffixCache(**spec.cache_kwargs())
    assert cache.max_depth == spec.max_depth
    with pytest.raises(InvalidParameterError, match="unknown"):
        spec.replace(max_spec_token=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.max_spec_tokens = 3  # type: ignore[misc]
