"""Lossless under serving: every request's output through `suffixspec.Engine` equals
`model.generate` of that request alone (fp32 greedy), whatever the engine does around it:
ragged prompts, arrivals while others run, preemption by a tiny KV pool, chunked prefill by a
tiny token budget, aborts; sampled outputs follow the target distribution."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import suffixspec
from suffixspec import (
    SLO,
    DuplicateRequestError,
    Engine,
    IncompatibleModelError,
    InvalidParameterError,
    InvalidTokenError,
    RequestParams,
    SuffixSpecError,
    UnknownRequestError,
)
from tiny_models import VOCAB, PromptKeyedProposer, tiny_model

ARCHITECTURES = ["LlamaForCausalLM", "Qwen3ForCausalLM"]
NEW = 24


def _prompts(seed: int, count: int, lo: int = 3, hi: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(count):
        n = int(rng.integers(lo, hi))
        base = rng.integers(2, VOCAB, size=max(2, n // 3)).tolist()
        prompts.append((base * 3)[:n])  # repetitive: the prompt itself yields drafts
    return prompts


@functools.cache
def _reference(class_name: str, prompt: tuple[int, ...], new: int) -> list[int]:
    model = tiny_model(class_name)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False)
    return out[0, len(prompt) :].tolist()


def _check_exact(class_name: str, prompt: list[int], tokens: list[int], new: int = NEW) -> None:
    assert tokens == _reference(class_name, tuple(prompt), new), f"prompt {prompt}"


@pytest.mark.parametrize("policy", ["adaserve", "greedy", "uniform", "none"])
@pytest.mark.parametrize("class_name", ARCHITECTURES)
def test_offline_batch_is_exact_and_speculates(class_name: str, policy: str) -> None:
    model = tiny_model(class_name)
    engine = Engine(model, num_blocks=64, block_size=16, policy=policy)
    prompts = _prompts(1, 5)
    params = [RequestParams(max_new_tokens=NEW, slo=SLO(tpot_ms=5.0) if i % 2 else None) for i in range(5)]
    for _ in range(2):  # the second pass drafts from the first pass's cached responses
        outputs = engine.generate(prompts, params)
        for prompt, out in zip(prompts, outputs, strict=True):
            _check_exact(class_name, prompt, out.token_ids)
            assert out.finished and out.finish_reason == "length"
            assert out.prompt_token_ids == prompt and out.new_token_ids == out.token_ids
    accepted = sum(o.stats.accepted_tokens for o in outputs)
    steps = sum(o.stats.steps for o in outputs)
    if policy == "none":
        assert sum(o.stats.draft_tokens for o in outputs) == 0 and steps == NEW * len(prompts)
    else:
        assert accepted > NEW * len(prompts) // 2  # drafts from the cache really were accepted
        assert steps < NEW * len(prompts)
    assert not engine.has_unfinished()
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    engine.scheduler.check_integrity()


def _drain(engine: Engine, streams: dict, finished: dict) -> None:
    for out in engine.step():
        streams.setdefault(out.request_id, []).extend(out.new_token_ids)
        assert streams[out.request_id] == out.token_ids  # steps' tokens add up to the output
        if out.finished:
            assert out.request_id not in finished
            finished[out.request_id] = out


@pytest.mark.parametrize("policy", ["adaserve", "uniform"])
@pytest.mark.parametrize("class_name", ARCHITECTURES)
def test_exact_with_arrivals_preemption_chunked_prefill_and_aborts(class_name: str, policy: str) -> None:
    model = tiny_model(class_name)
    cache = suffixspec.SuffixCache()
    prompts = _prompts(2, 8, lo=10, hi=36)
    # Warm a shared cache so that the constrained engine speculates from the start.
    Engine(model, cache=cache, num_blocks=64).generate(prompts[:4], RequestParams(max_new_tokens=NEW))
    # 10 blocks of 8 slots: fewer than the running requests need, so some are preempted;
    # at most 8 prefill tokens per step, so every prompt enters in chunks.
    engine = Engine(
        model,
        cache=cache,
        num_blocks=10,
        block_size=8,
        policy=policy,
        max_tokens_per_step=16,
        max_prefill_tokens_per_step=8,
        max_running=8,
    )
    params = RequestParams(max_new_tokens=NEW)
    streams: dict = {}
    finished: dict = {}
    for i in range(3):
        engine.add_request(f"r{i}", prompts[i], params)
    for _ in range(4):
        _drain(engine, streams, finished)
    for i in range(3, 8):  # arrivals while others run
        engine.add_request(f"r{i}", prompts[i], RequestParams(max_new_tokens=NEW, priority=i % 2))
        _drain(engine, streams, finished)
    aborted = [rid for rid in ("r1", "r6") if rid not in finished]
    for rid in aborted:
        engine.abort(rid)
    while engine.has_unfinished():
        _drain(engine, streams, finished)
        engine.scheduler.check_integrity()
    assert set(finished) == {f"r{i}" for i in range(8)} - set(aborted)
    for rid, out in finished.items():
        _check_exact(class_name, prompts[int(rid[1:])], out.token_ids)
    assert sum(o.stats.preemptions for o in finished.values()) > 0
    assert sum(o.stats.accepted_tokens for o in finished.values()) > 0
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks
    with pytest.raises(UnknownRequestError):
        engine.abort("r1")


class BranchingProposer(PromptKeyedProposer):
    """Trees whose first branch is wrong and whose right path continues under a second child,
    so accepted nodes are never a chain prefix and their K/V must be compacted."""

    def __init__(self, refs: dict[tuple[int, ...], list[int]]) -> None:
        super().__init__()
        self.refs = refs  # each prompt's plain greedy continuation

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = []
        for rid, ctx in zip(req_ids, contexts, strict=True):
            prompt = self.prompts[rid]
            ref = [*self.refs[prompt][len(ctx) - len(prompt) :], 0, 0, 0]
            wrong = [(t + 1) % VOCAB for t in ref]
            tokens = [wrong[0], ref[0], wrong[1], ref[1], ref[2]]
            parents = [-1, -1, 1, 1, 3]
            probs = [0.3, 0.6, 0.2, 0.5, 0.4]
            trees.append(suffixspec.TokenTree(np.array(tokens, np.int32), np.array(parents, np.int32), probs))
        return trees


def check_branching_drafts(
    model: torch.nn.Module,
    reference: Any,
    prompts: list[list[int]],
    *,
    new: int,
    num_blocks: int,
    max_running: int,
) -> None:
    """Branching drafts (:class:`BranchingProposer`) on a pool of ``num_blocks`` blocks of 8 slots
    and 8 prefill tokens a step: outputs of ``new`` tokens equal ``reference(prompt)`` (plain
    greedy), most drafted nodes are accepted, requests are preempted, and the pool is whole
    again at the end."""
    proposer = BranchingProposer({tuple(p): reference(tuple(p)) for p in prompts})
    engine = Engine(
        model,
        proposer=proposer,
        num_blocks=num_blocks,
        block_size=8,
        policy="greedy",
        max_tokens_per_step=32,
        max_prefill_tokens_per_step=8,
        max_running=max_running,
        cost_points=[(1, 0.01), (4096, 0.01)],
    )
    outputs = engine.generate(prompts, RequestParams(max_new_tokens=new))
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.token_ids == reference(tuple(prompt)), f"prompt {prompt}"
    assert sum(o.stats.accepted_tokens for o in outputs) > new * len(prompts) // 2
    assert sum(o.stats.preemptions for o in outputs) > 0
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


@pytest.mark.parametrize("class_name", ARCHITECTURES)
def test_branching_drafts_are_compacted_exactly(class_name: str) -> None:
    check_branching_drafts(
        tiny_model(class_name),
        lambda prompt: _reference(class_name, prompt, NEW),
        _prompts(5, 6, lo=5, hi=30),
        new=NEW,
        num_blocks=12,
        max_running=6,
    )


@pytest.mark.parametrize("class_name", ARCHITECTURES)
def test_exact_while_requests_ahead_of_their_pace_sit_out(class_name: str) -> None:
    """Under "adaserve", SLO requests far ahead of their TPOT pace sit steps out (not fed, K/V
    kept) while a late one is behind; their outputs stay exactly plain greedy decoding's."""
    model = tiny_model(class_name)
    prompts = _prompts(7, 6, lo=8, hi=30)
    cache = suffixspec.SuffixCache()
    Engine(model, cache=cache, num_blocks=64).generate(prompts, RequestParams(max_new_tokens=NEW))
    now = [0.0]
    # A 10 ms step on a virtual clock: a 1 ms pace is always behind, a 30 ms one soon far ahead.
    engine = Engine(
        model,
        cache=cache,
        num_blocks=64,
        policy="adaserve",
        cost_points=[(1, 0.01), (4096, 0.01)],
        clock=lambda: now[0],
        sit_out_margin=1.0,  # off by default
    )
    targets = [0.001, 30.0, 30.0, None, 0.001, 30.0]  # tpot_ms per request, None: best effort
    params = [RequestParams(max_new_tokens=NEW, slo=None if t is None else SLO(tpot_ms=t)) for t in targets]
    for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
        engine.add_request(i, prompt, p)
    finished: dict = {}
    streams: dict = {}
    while engine.has_unfinished():
        _drain(engine, streams, finished)
        now[0] += 0.010
    for i, prompt in enumerate(prompts):
        _check_exact(class_name, prompt, finished[i].token_ids)
    sit_outs = [finished[i].stats.sit_outs for i in range(len(prompts))]
    assert all(sit_outs[i] > 0 for i in (1, 2, 5)), sit_outs  # the relaxed ones sat out
    assert all(sit_outs[i] == 0 for i in (0, 3, 4)), sit_outs  # late and best-effort ones never
    assert engine.scheduler.stats()["sit_outs"] == sum(sit_outs)
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


def test_sit_out_margin_is_checked_and_sit_outs_are_off_by_default() -> None:
    model = tiny_model("LlamaForCausalLM")
    with pytest.raises(InvalidParameterError, match="sit_out_margin"):
        Engine(model, num_blocks=8, sit_out_margin=-1.0)
    with pytest.raises(SuffixSpecError, match="sit_out_margin"):
        Engine(model, num_blocks=8, sit_out_margin="1")
    with pytest.raises(InvalidParameterError, match="sit_out_min_target_steps"):
        Engine(model, num_blocks=8, sit_out_min_target_steps=-1.0)
    assert Engine(model, num_blocks=8).scheduler.sit_out_margin == float("inf")
    assert Engine(model, num_blocks=8, sit_out_margin=1.0).scheduler.sit_out_margin == 1.0


def test_stop_tokens_and_finished_responses_feed_the_cache() -> None:
    class_name = "LlamaForCausalLM"
    prompt = _prompts(3, 1)[0]
    ref = _reference(class_name, tuple(prompt), NEW)
    stop = ref[5]
    cut = ref.index(stop) + 1
    engine = Engine(tiny_model(class_name), num_blocks=32)
    (out,) = engine.generate([prompt], RequestParams(max_new_tokens=NEW, stop_token_ids=[stop]))
    assert out.token_ids == ref[:cut] and out.finish_reason == "stop"
    assert len(engine.cache.cached_requests) == 1


def test_seeded_sampling_is_reproducible_whatever_runs_alongside() -> None:
    model = tiny_model("LlamaForCausalLM")
    prompt = _prompts(4, 1)[0]
    params = RequestParams(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=20, seed=11)
    alone = Engine(model, num_blocks=32).generate([prompt], params)[0].token_ids
    others = [RequestParams(max_new_tokens=12, do_sample=True, seed=s) for s in (1, 2)]
    crowd = Engine(model, num_blocks=32).generate([prompt, prompt, prompt], [others[0], params, others[1]])
    assert crowd[1].token_ids == alone
    assert all(t < VOCAB for t in alone)


def test_sampled_outputs_follow_the_target_distribution() -> None:
    from test_generate_sampling import NEW as S_NEW
    from test_generate_sampling import PROMPT, SAMPLES, chi_square_p_value, target_joint
    from test_generate_sampling import VOCAB as S_VOCAB
    from test_generate_sampling import model as sampling_model

    settings = (("temperature", 0.8), ("top_k", 6))
    spec = suffixspec.SpecConfig(use_tree_spec=True, min_token_prob=0.0, min_match_len=1)
    # A flat step cost: verifying draft nodes is free, so every request gets its tree.
    flat_cost = [(1, 0.01), (4096, 0.01)]
    engine = Engine(
        sampling_model(), spec=spec, num_blocks=2048, block_size=8, cost_points=flat_cost, policy="greedy"
    )
    torch.manual_seed(5)
    params = RequestParams(max_new_tokens=S_NEW, do_sample=True, temperature=0.8, top_k=6)
    engine.generate([PROMPT] * 40, params)  # cached responses: drafts exist and often hit
    outputs = engine.generate([PROMPT] * SAMPLES, params)
    counts = np.zeros((S_VOCAB,) * S_NEW, dtype=np.int64)
    for out in outputs:
        counts[tuple(out.token_ids)] += 1
    drafted = sum(o.stats.draft_tokens for o in outputs)
    accepted = sum(o.stats.accepted_tokens for o in outputs)
    assert accepted > SAMPLES // 4, (drafted, accepted)
    assert chi_square_p_value(counts, target_joint(settings)) > 1e-3


def test_bad_input_is_typed_and_changes_nothing() -> None:
    model = tiny_model("LlamaForCausalLM")
    engine = Engine(model, num_blocks=4, block_size=8)
    engine.add_request("a", [5, 6, 7], RequestParams(max_new_tokens=4))
    bad = [
        (DuplicateRequestError, ("a", [1, 2])),
        (InvalidTokenError, ("b", [1, VOCAB])),
        (InvalidTokenError, ("b", [1, -1])),
        (InvalidParameterError, ("b", [])),
        (InvalidParameterError, ("b", "text without a tokenizer")),
        (InvalidParameterError, ("b", [1, 2], {"max_new_tokens": 4})),  # params not a RequestParams
        (InvalidParameterError, ("b", [1] * 250, RequestParams(max_new_tokens=10))),  # past positions
        (SuffixSpecError, ("b", [1] * 30, RequestParams(max_new_tokens=10))),  # larger than the pool
        (InvalidParameterError, (["unhashable"], [1, 2])),
        (InvalidParameterError, ("b", [1, 2], RequestParams(stop=["\n"]))),  # stop strings, no tokenizer
    ]
    for error, args in bad:
        with pytest.raises(error):
            engine.add_request(*args)
        assert list(engine._requests) == ["a"] and len(engine.scheduler) == 1
    with pytest.raises(UnknownRequestError):
        engine.abort("nope")
    (out,) = [o for o in _run(engine) if o.finished]
    _check_exact("LlamaForCausalLM", [5, 6, 7], out.token_ids, new=4)
    assert engine.scheduler.num_free_blocks == 4


def _run(engine: Engine) -> list:
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    return outs


def test_greedy_rows_are_scored_in_one_call_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy rows without logits processors get their argmax from one device call and one
    transfer per step (on a GPU: one host sync per step, not one per row), never row by row."""
    from suffixspec.generation.logits import TargetScorer

    def row_by_row(self, logits):
        raise AssertionError("a greedy row was scored on its own")

    monkeypatch.setattr(TargetScorer, "greedy", row_by_row)
    prompts = _prompts(3, 6)
    outputs = Engine(tiny_model("LlamaForCausalLM"), num_blocks=64).generate(
        prompts, RequestParams(max_new_tokens=NEW)
    )
    for prompt, out in zip(prompts, outputs, strict=True):
        _check_exact("LlamaForCausalLM", prompt, out.token_ids)
    assert sum(o.stats.accepted_tokens for o in outputs) > 0


def test_unverified_architectures_are_refused() -> None:
    with pytest.raises(IncompatibleModelError, match="paged"):
        Engine(tiny_model("GPTJForCausalLM"))
    with pytest.raises(IncompatibleModelError):
        Engine(torch.nn.Linear(2, 2))


def test_text_prompts_stop_strings_and_streamed_text_with_the_default_model() -> None:
    from suffixspec.default_model.store import load_default_model

    model, tokenizer, _ = load_default_model()
    engine = Engine(model, tokenizer, num_blocks=64)
    prompt = "def add(a, b):\n"
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids) :].tolist()
    eos = set(_eos(model))
    ref = ref[: next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))]
    streamed, text, outs = [], "", []
    engine.add_request("t", prompt, RequestParams(max_new_tokens=20))
    while engine.has_unfinished():
        for out in engine.step():
            streamed.extend(out.new_token_ids)
            text += out.new_text
            outs.append(out)
    assert outs[-1].prompt_token_ids == ids and streamed == ref
    assert text == outs[-1].text == tokenizer.decode(ref, skip_special_tokens=True)
    full = outs[-1].text
    if len(full.strip()) > 2:  # a stop string cuts the text before it and ends the request
        stop = full.strip()[1:3]
        (cut,) = engine.generate([prompt], RequestParams(max_new_tokens=20, stop=[stop]))
        assert cut.finish_reason == "stop" and cut.text == full[: full.find(stop)]


def _eos(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
