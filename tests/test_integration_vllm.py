"""The vLLM proposer and plugin logic without vLLM: a duck-typed input batch with the fields
vLLM 0.32.0's model runner passes (the real engine runs in tests/integrations, ./dev test-engines)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from suffixspec import EngineIntegrationError, SuffixSpecError
from suffixspec.integrations import env_flag
from suffixspec.integrations import vllm as integration
from suffixspec.integrations.vllm import VllmSuffixProposer, spec_config_from_vllm


def vllm_config(num_spec: int = 8, max_model_len: int = 256, **suffix: object) -> SimpleNamespace:
    spec = {
        "num_speculative_tokens": num_spec,
        "suffix_decoding_max_tree_depth": 24,
        "suffix_decoding_max_cached_requests": 10000,
        "suffix_decoding_max_spec_factor": 1.0,
        "suffix_decoding_min_token_prob": 0.1,
        **suffix,
    }
    return SimpleNamespace(
        speculative_config=SimpleNamespace(**spec),
        model_config=SimpleNamespace(max_model_len=max_model_len),
    )


class Batch:
    """vLLM's InputBatch as the suffix proposer reads it."""

    def __init__(self, requests: dict[str, tuple[list[int], list[int]]], width: int = 256):
        self.req_ids = list(requests)
        self.req_id_to_index = {r: i for i, r in enumerate(self.req_ids)}
        self.token_ids_cpu = np.zeros((len(requests), width), dtype=np.int32)
        self.num_prompt_tokens = np.zeros(len(requests), dtype=np.int32)
        self.num_tokens_no_spec = np.zeros(len(requests), dtype=np.int32)
        for i, (prompt, output) in enumerate(requests.values()):
            seq = prompt + output
            self.token_ids_cpu[i, : len(seq)] = seq
            self.num_prompt_tokens[i] = len(prompt)
            self.num_tokens_no_spec[i] = len(seq)


PATTERN = [5, 6, 7, 8, 9, 10, 11, 12]


def test_drafts_are_python_lists_from_one_batched_call(monkeypatch: pytest.MonkeyPatch) -> None:
    proposer = VllmSuffixProposer(vllm_config())
    calls = []
    real = proposer.proposer.cache.speculate_batch
    monkeypatch.setattr(
        proposer.proposer.cache, "speculate_batch", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    prompt = PATTERN * 3
    batch = Batch({"a": (prompt, [5]), "b": (prompt, [5]), "c": ([1, 2, 3], [4])})
    drafts = proposer.propose(8, batch, [[5], [5], [4]], slot_mappings=None)
    assert len(calls) == 1 and len(calls[0][0]) == 3
    # The prompt's continuation after 5, while its estimate exceeds the node cost (0.92 falling to
    # 0.31 at 12; the next 5 would fall below it).
    assert drafts[0] == drafts[1] == PATTERN[1:]
    assert all(type(d) is list and all(type(t) is int for t in d) for d in drafts)
    # What vLLM's scheduler does with them must work: truth value and in-place truncation.
    assert drafts[0] and not drafts[2]
    del drafts[0][3:]


def test_old_signature_and_skipped_requests() -> None:
    proposer = VllmSuffixProposer(vllm_config(max_model_len=30))
    prompt = PATTERN * 3  # 24 tokens
    batch = Batch({"prefill": (prompt, []), "near_limit": (prompt, [5, 6, 7, 8, 9]), "ok": (prompt, [5])})
    drafts = proposer.propose(batch, [[], [9], [5]])  # vLLM 0.11's propose(input_batch, sampled)
    assert drafts[0] == []  # partial prefill
    assert drafts[1] == []  # 29 tokens: no room for a draft within max_model_len=30
    assert drafts[2] == PATTERN[1:5]  # 25 tokens: at most 30 - 25 - 1 = 4 draft tokens
    with pytest.raises(TypeError):
        proposer.propose(8, batch)


def test_requests_start_extend_and_stop_with_the_batch() -> None:
    proposer = VllmSuffixProposer(vllm_config())
    cache = proposer.proposer.cache
    proposer.propose(8, Batch({"a": ([1, 2, 3, 4], [20, 21, 22]), "b": ([1, 2], [3])}), [[20, 21, 22], [3]])
    second = Batch({"a": ([1, 2, 3, 4], [20, 21, 22, 23, 24]), "b": ([1, 2], [3])})
    proposer.propose(8, second, [[23, 24], []])
    assert set(cache.active_requests) == {"a", "b"}
    proposer.propose(8, Batch({"b": ([1, 2], [3, 4])}), [[4]])  # a left the batch: stopped
    assert set(cache.active_requests) == {"b"}
    assert "a" in cache.cached_requests
    # A new request drafts from a's cached response (its prompt [7] cannot have drafted this).
    drafts = proposer.propose(8, Batch({"c": ([7], [20, 21])}), [[20, 21]])
    # suffixspec's drafter after a 2-token match in the global tree: one occurrence, prior 3/8 growing
    # by 40% per step, so the estimates 0.73, 0.48, 0.28 all exceed the node cost 0.2525 and a's whole
    # rest is drafted.
    assert drafts == [[22, 23, 24]]
    assert set(cache.active_requests) == {"c"}


def test_settings_map_onto_spec_config() -> None:
    config = vllm_config(
        num_spec=12,
        suffix_decoding_max_tree_depth=32,
        suffix_decoding_max_spec_factor=2.0,
        suffix_decoding_min_token_prob=0.2,
        suffix_decoding_max_cached_requests=5,
    )
    spec = spec_config_from_vllm(config.speculative_config, drafter="default")
    assert (spec.max_depth, spec.max_spec_tokens, spec.max_spec_factor) == (32, 12, 2.0)
    assert (spec.min_token_prob, spec.max_cached_requests, spec.use_tree_spec) == (0.2, 5, False)
    assert spec.min_match_len == 0 and spec.drafter == "suffixspec"  # drafts on any match, as vLLM+arctic
    arctic = spec_config_from_vllm(config.speculative_config, drafter="arctic")
    assert arctic.min_match_len == 0 and arctic.max_spec_offset == 0.0
    with pytest.raises(EngineIntegrationError):
        spec_config_from_vllm(config.speculative_config, drafter="eagle")
    with pytest.raises(SuffixSpecError):
        VllmSuffixProposer(vllm_config(suffix_decoding_max_tree_depth=0))


def test_both_drafters_draft_on_one_token_matches() -> None:
    prompt = [1, 2, 3, 4, 9, 8]
    default = VllmSuffixProposer(vllm_config())
    assert default.propose(8, Batch({"a": (prompt, [1])}), [[1]]) == [[2]]  # a 1-token match
    arctic_like = VllmSuffixProposer(vllm_config())
    arctic_like.proposer.spec = spec_config_from_vllm(vllm_config().speculative_config, drafter="arctic")
    assert arctic_like.propose(8, Batch({"a": (prompt, [1])}), [[1]]) == [[2]]


@pytest.mark.parametrize(("value", "on"), [("1", True), ("TRUE", True), ("", False), ("0", False)])
def test_env_flag(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("SUFFIXSPEC_VLLM", value)
    assert env_flag("SUFFIXSPEC_VLLM") is on


def test_plugin_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUFFIXSPEC_VLLM", "on please")
    with pytest.raises(EngineIntegrationError, match="expected 1"):
        integration.register()
    monkeypatch.setenv("SUFFIXSPEC_VLLM", "1")
    monkeypatch.setattr(integration, "_installed_vllm_version", lambda: "0.31.0")
    with pytest.raises(EngineIntegrationError, match=r"tested with vLLM 0\.32\.0, not 0\.31\.0") as info:
        integration.register()
    assert "\n" not in str(info.value)
    monkeypatch.setattr(integration, "_installed_vllm_version", lambda: "0.32.0")
    monkeypatch.setattr(integration, "_arctic_plugin_enabled", lambda: True)
    with pytest.raises(EngineIntegrationError, match="both replace"):
        integration.register()


def test_arctic_plugin_detection_follows_its_switch_and_vllm_plugins() -> None:
    assert not integration._arctic_plugin_enabled({})
    assert not integration._arctic_plugin_enabled({"ARCTIC_INFERENCE_ENABLED": "1", "VLLM_PLUGINS": "x"})


def test_importing_the_integrations_imports_no_engine() -> None:
    code = (
        "import sys, suffixspec, suffixspec.integrations.vllm, suffixspec.integrations.sglang\n"
        "bad = [m for m in ('vllm', 'sglang', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
