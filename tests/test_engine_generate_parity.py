"""What `suffixspec.generate` offers, `suffixspec.Engine` offers too (docs/decoding_loops.md):
`max_time` (and a per-request deadline), a `put`/`end` streamer and per-phase timings in
`generate`'s `BatchStats`."""

from __future__ import annotations

import math
import time

import pytest
import torch

pytest.importorskip("transformers")

import suffixspec
from suffixspec import Engine, InvalidParameterError, RequestParams
from suffixspec.generation.stats import BatchStats
from test_engine import BranchingProposer, _reference
from tiny_models import PromptKeyedProposer, plain_greedy_tokens, random_prompts, tiny_model

LLAMA = "LlamaForCausalLM"
NEW = 24
LONG = 200  # more tokens than any test lets a deadline-cut request reach


class Clock:
    """A virtual engine clock that a proposer advances one second per `propose` call."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TickingProposer(BranchingProposer):
    """`BranchingProposer`'s drafts (the right path under a wrong sibling); every call advances
    `clock` by one second, so a deadline falls after a known number of steps."""

    def __init__(self, clock: Clock, prompts: list[list[int]], new: int) -> None:
        super().__init__({tuple(p): _reference(LLAMA, tuple(p), new) for p in prompts})
        self.clock = clock

    def propose(self, req_ids, contexts, budgets, max_depths):
        self.clock.now += 1.0
        return super().propose(req_ids, contexts, budgets, max_depths)


class Collect:
    """A streamer that records what it is given."""

    def __init__(self) -> None:
        self.puts: list[list] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts.append(value.tolist())

    def end(self) -> None:
        self.ended += 1

    def streamed(self) -> list[int]:
        return [t for chunk in self.puts[1:] for t in chunk]


def _engine(**kwargs) -> Engine:
    kwargs.setdefault("cost_points", [(1, 0.01), (4096, 0.01)])
    return Engine(tiny_model(LLAMA), num_blocks=64, block_size=16, policy="greedy", **kwargs)


def _assert_idle(engine: Engine) -> None:
    assert not engine.has_unfinished()
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks  # every KV block freed
    engine.scheduler.check_integrity()


# -- max_time -----------------------------------------------------------------------------------
def test_max_time_ends_the_batch_at_the_first_step_boundary_after_it() -> None:
    model = tiny_model(LLAMA)
    prompts = random_prompts([6, 13], seed=11)
    clock = Clock()
    engine = _engine(proposer=TickingProposer(clock, prompts, LONG), clock=clock)
    # Step 1 prefills (nothing to draft); steps 2.. draft, one virtual second each: the deadline
    # at 3.5 s falls inside step 5, after which both requests end.
    outputs = engine.generate(prompts, RequestParams(max_new_tokens=LONG), max_time=3.5)
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.finished and out.finish_reason == "time"
        assert out.stats.steps == 5
        assert 5 < len(out.token_ids) < LONG  # drafts were accepted, and the deadline cut it
        assert out.token_ids == plain_greedy_tokens(model, prompt, LONG)[: len(out.token_ids)]
    _assert_idle(engine)
    # Without a deadline the same engine runs to the end.
    (full,) = engine.generate(prompts[:1], RequestParams(max_new_tokens=NEW))
    assert full.finish_reason == "length" and len(full.token_ids) == NEW


def test_a_deadline_cut_response_feeds_the_suffix_cache_as_in_generate() -> None:
    """`generate` finishes its requests at `max_time` into the cache; the engine does the same."""
    model = tiny_model(LLAMA)
    prompts = random_prompts([7, 10], seed=12)
    firsts = [plain_greedy_tokens(model, p, 1) for p in prompts]
    loop_cache, engine_cache = suffixspec.SuffixCache(), suffixspec.SuffixCache()
    out = suffixspec.generate(model, prompts, max_new_tokens=NEW, max_time=0.0, cache=loop_cache)
    assert [s.finish_reason for s in out.stats] == ["time", "time"] and out.generated == firsts
    engine = _engine(cache=engine_cache)
    served = engine.generate(prompts, RequestParams(max_new_tokens=NEW), max_time=0.0)
    assert [o.finish_reason for o in served] == ["time", "time"]
    assert [o.token_ids for o in served] == firsts  # the prefill step's token, then the deadline
    assert len(engine_cache.cached_requests) == len(loop_cache.cached_requests) == len(prompts)
    assert not engine_cache.active_requests
    _assert_idle(engine)


def test_request_deadline_ends_a_queued_request_and_spares_the_others() -> None:
    model = tiny_model(LLAMA)
    prompts = random_prompts([9, 5], seed=13)
    clock = Clock()
    engine = _engine(clock=clock, max_running=1)  # "b" waits while "a" runs
    engine.add_request("a", prompts[0], RequestParams(max_new_tokens=NEW))
    engine.add_request("b", prompts[1], RequestParams(max_new_tokens=NEW, max_time=0.5))
    assert engine.step()[0].request_id == "a"  # a's prefill; b still waits
    clock.now = 1.0
    outputs = {o.request_id: o for o in engine.step()}
    assert outputs["b"].finished and outputs["b"].finish_reason == "time"
    assert outputs["b"].token_ids == [] and "b" not in engine
    assert not outputs["a"].finished
    finished = {}
    while engine.has_unfinished():
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    assert finished["a"].finish_reason == "length"
    assert finished["a"].token_ids == plain_greedy_tokens(model, prompts[0], NEW)
    _assert_idle(engine)


def test_call_deadline_and_request_deadline_the_earlier_wins() -> None:
    prompts = random_prompts([8, 8], seed=14)
    clock = Clock()
    engine = _engine(proposer=TickingProposer(clock, prompts, LONG), clock=clock)
    params = [RequestParams(max_new_tokens=LONG, max_time=1.5), RequestParams(max_new_tokens=LONG)]
    outputs = engine.generate(prompts, params, max_time=3.5)
    assert [o.finish_reason for o in outputs] == ["time", "time"]
    assert [o.stats.steps for o in outputs] == [3, 5]
    _assert_idle(engine)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True])
def test_bad_max_time_is_refused_and_changes_nothing(bad) -> None:
    with pytest.raises(InvalidParameterError):
        RequestParams(max_time=bad)
    cache = suffixspec.SuffixCache()
    engine = _engine(cache=cache)
    streamer = Collect()
    with pytest.raises(InvalidParameterError):
        engine.generate(
            random_prompts([6], seed=15), RequestParams(max_new_tokens=4), max_time=bad, streamer=streamer
        )
    _assert_idle(engine)
    assert not cache.cached_requests and not cache.active_requests
    assert streamer.puts == [] and streamer.ended == 0
    assert engine.step_stats.forward_passes == 0


# -- streamer -----------------------------------------------------------------------------------
def test_streamer_gets_the_prompt_then_the_output_in_order_and_end_once() -> None:
    model = tiny_model(LLAMA)
    (prompt,) = random_prompts([12], seed=16)
    cache = suffixspec.SuffixCache()
    engine = _engine(cache=cache)
    engine.generate([prompt], RequestParams(max_new_tokens=NEW))  # the cache learns the response
    streamer = Collect()
    (out,) = engine.generate([prompt], RequestParams(max_new_tokens=NEW), streamer=streamer)
    assert out.token_ids == plain_greedy_tokens(model, prompt, NEW)
    assert streamer.puts[0] == [prompt]  # the prompt first, as model.generate streams it
    assert streamer.streamed() == out.token_ids
    assert len(streamer.puts) - 1 < NEW  # several tokens per put: speculation happened
    assert streamer.ended == 1


def test_streamer_when_max_time_cuts_the_output() -> None:
    (prompt,) = random_prompts([10], seed=17)
    clock = Clock()
    engine = _engine(proposer=TickingProposer(clock, [prompt], LONG), clock=clock)
    streamer = Collect()
    (out,) = engine.generate([prompt], RequestParams(max_new_tokens=LONG), max_time=2.5, streamer=streamer)
    assert out.finish_reason == "time" and 0 < len(out.token_ids) < LONG
    assert streamer.puts[0] == [prompt]
    assert streamer.streamed() == out.token_ids
    assert streamer.ended == 1
    _assert_idle(engine)


class FailingProposer(PromptKeyedProposer):
    def propose(self, req_ids, contexts, budgets, max_depths):
        raise RuntimeError("drafting failed")


def test_streamer_ends_once_when_the_request_fails() -> None:
    model = tiny_model(LLAMA)
    (prompt,) = random_prompts([8], seed=23)
    engine = _engine(proposer=FailingProposer())
    streamer = Collect()
    with pytest.raises(suffixspec.RequestFailedError):
        engine.generate([prompt], RequestParams(max_new_tokens=NEW), streamer=streamer)
    assert streamer.puts[0] == [prompt]
    assert streamer.streamed() == plain_greedy_tokens(model, prompt, 1)  # the prefill's token
    assert streamer.ended == 1
    _assert_idle(engine)


def test_text_streamer_prints_the_decoded_output(capsys) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(96)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    (prompt,) = random_prompts([10], seed=18)
    engine = _engine()
    streamer = transformers.TextStreamer(hf_tok, skip_prompt=True)
    (out,) = engine.generate([prompt], RequestParams(max_new_tokens=NEW), streamer=streamer)
    assert capsys.readouterr().out.split() == hf_tok.decode(out.token_ids).split()


@pytest.mark.parametrize(
    ("prompts", "streamer"),
    [(2, Collect()), (1, object())],
    ids=["two-prompts", "no-put-end"],
)
def test_bad_streamer_use_is_refused_and_changes_nothing(prompts: int, streamer) -> None:
    engine = _engine()
    with pytest.raises(InvalidParameterError):
        engine.generate(
            random_prompts([5] * prompts, seed=19), RequestParams(max_new_tokens=4), streamer=streamer
        )
    _assert_idle(engine)
    if isinstance(streamer, Collect):
        assert streamer.puts == [] and streamer.ended == 0


# -- per-phase timings --------------------------------------------------------------------------
ALL_PHASES = {"propose", "schedule", "tree", "prefill_forward", "forward", "verify", "compact", "output"}


def _check_timings(stats: BatchStats, wall: float) -> None:
    assert all(v >= 0.0 for v in stats.phases.values())
    assert sum(stats.phases.values()) <= stats.total_time_s <= wall
    assert stats.forward_time_s == pytest.approx(
        stats.phases["prefill_forward"] + stats.phases.get("forward", 0.0)
    )
    assert stats.propose_time_s == pytest.approx(stats.phases.get("propose", 0.0))
    assert stats.prefill_time_s > 0.0 and stats.prefill_time_s + stats.verify_time_s <= stats.total_time_s


def test_phase_timings_with_speculation_report_every_phase_run() -> None:
    prompts = random_prompts([7, 15, 11], seed=20)
    engine = _engine(
        proposer=BranchingProposer({tuple(p): _reference(LLAMA, tuple(p), NEW) for p in prompts})
    )
    start = time.perf_counter()
    outputs = engine.generate(prompts, RequestParams(max_new_tokens=NEW))
    wall = time.perf_counter() - start
    stats = engine.step_stats
    assert set(stats.phases) == ALL_PHASES  # the branching drafts make every step compact
    _check_timings(stats, wall)
    assert stats.verify_time_s > 0.0
    # One prefill step for the batch, then one verification step per step the requests took.
    assert stats.forward_passes == max(o.stats.steps for o in outputs)
    assert stats.new_tokens == sum(len(o.token_ids) for o in outputs)
    assert sum(o.stats.accepted_tokens for o in outputs) > 0


def test_phase_timings_without_speculation_report_no_drafting() -> None:
    engine = Engine(tiny_model(LLAMA), num_blocks=64, policy="none")
    prompts = random_prompts([6, 9], seed=21)
    start = time.perf_counter()
    outputs = engine.generate(prompts, RequestParams(max_new_tokens=8))
    wall = time.perf_counter() - start
    stats = engine.step_stats
    assert set(stats.phases) == ALL_PHASES - {"propose", "compact"}
    _check_timings(stats, wall)
    assert stats.forward_passes == 8 and stats.new_tokens == 16
    assert all(o.stats.draft_tokens == 0 for o in outputs)


def test_a_prefill_only_run_reports_no_verification() -> None:
    engine = Engine(tiny_model(LLAMA), num_blocks=64, policy="none")
    engine.step_stats = BatchStats()
    start = time.perf_counter()
    engine.generate(random_prompts([6], seed=22), RequestParams(max_new_tokens=1))
    wall = time.perf_counter() - start
    stats = engine.step_stats
    assert set(stats.phases) == {"schedule", "tree", "prefill_forward", "verify", "output"}
    _check_timings(stats, wall)
    assert stats.verify_time_s == 0.0 and stats.forward_passes == 1 and stats.new_tokens == 1
