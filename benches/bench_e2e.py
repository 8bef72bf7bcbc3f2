"""End-to-end, trace-forced: suffixspec's speculative loop vs plain decoding on real-size models.

Models: the architectures of Llama-3.2-1B and Llama-3.1-8B in bf16 on the GPU, with random
weights (no model hub is reachable). Random weights do not produce the traced outputs, so
acceptance is *forced from the trace*: each request carries its traced output, and at every step
the loop runs the real proposal (suffix cache), tree build, forward pass (CUDA tree-attention
kernel or torch), and KV compaction, but accepts the draft path that matches the traced
continuation (and emits the next traced token as the bonus) instead of the model's argmax.
Plain decoding is measured four ways side by side (`--baselines`): `loop` (one token per
forward pass with a `DynamicCache`, teacher-forced with the traced tokens, finished rows leave the
batch), `generate` (HF `model.generate`, dynamic cache), `compiled` (`model.generate` with a static
cache and its forward compiled by `torch.compile`) and `graph` (suffixspec's CUDA-graph decode
steps, `suffixspec.generation.cuda_graphs`; on a CPU the same static-buffer step runs uncaptured).
Every speedup is against the fastest of them. Every method runs each workload twice from a fresh
state and the second run is timed (`--no-repeat`: the first), so first-sight costs per shape
(library plans, compilation, allocator growth) count for none of them; the first run's decode
time is kept as `cold_decode_s`. Every figure is **trace-forced**: the speed a model that
generated these traces would get. On a GPU the weight-read limit (parameter bytes / nominal
bandwidth per forward pass) is reported beside the figures.

Workloads (`../shared/workloads`): agentic (mini-SWE-agent / deepseek-chat), SQL (Spider),
code (HumanEval), chat (AlpacaEval), tokenized with the Llama-3 tokenizer. Prompts keep their
last `--max-prompt-tokens`, outputs their first `--max-new-tokens`; the `--warm` requests before
the measured ones are cached first (as a server would have them), then `--limit` requests run
in batches of each `--batch` size (finished responses enter the cache; finished rows leave the
batch, in both methods).

    ./dev bench bench_e2e [--models 1b,8b] [--workloads agentic,sql,code,chat] [--batch 1,16]
        [--limit 16] [--warm 64] [--attention auto,torch] [--baselines loop,generate,compiled,graph]
        [--no-repeat] [--out FILE.json]
    ./dev bench bench_e2e --tiny        # a tiny random Llama on CPU (smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from options import csv_items, fill_sizes  # noqa: E402
from roofline import nominal, weight_read_s  # noqa: E402
from workloads import DEFAULT_WORKLOADS  # noqa: E402

LABEL = "trace-forced"

#: Workload name -> trace file stem; any other name is taken as a stem itself.
WORKLOADS = {
    "agentic": "agentic_swe_minisweagent_deepseek-chat",
    "sql": "text2sql_spider_dev",
    "code": "code_humaneval",
    "chat": "chat_alpaca_eval",
}

_LLAMA3_VOCAB = 128256
_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
}
#: Architectures (config fields of the published checkpoints).
MODELS: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        rope_parameters={**_LLAMA3_ROPE, "factor": 32.0, "original_max_position_embeddings": 8192},
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        rope_parameters={**_LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 8192},
    ),
}
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
#: Plain-decoding baselines (see the module docstring).
BASELINES = ("loop", "generate", "compiled", "graph")
# Real runs / --tiny defaults of the size settings.
SIZES = {
    "limit": (16, 4),
    "warm": (64, 4),
    "max_prompt_tokens": (4096, 64),
    "max_new_tokens": (128, 16),
    "batch": ("1,16", "1,2"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama on CPU with small limits")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--models", default="1b,8b", help=f"of {sorted(MODELS)} (ignored with --tiny)")
    p.add_argument("--workloads", default="agentic,sql,code,chat", help=f"names of {WORKLOADS} or file stems")
    p.add_argument(
        "--trace-dir", type=Path, default=DEFAULT_WORKLOADS, help="directory of the *.jsonl traces"
    )
    p.add_argument("--tokenizer", type=Path, help="default: TRACE_DIR/tokenizers/llama3/tokenizer.json")
    p.add_argument("--batch", default=None, help="batch sizes (default 1,16; --tiny 1,2)")
    p.add_argument("--limit", type=int, default=None, help="measured requests per workload (16; --tiny 4)")
    p.add_argument("--warm", type=int, default=None, help="earlier requests cached first (64; --tiny 4)")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="prompt tail kept (4096; --tiny 64)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="output head kept (128; --tiny 16)")
    p.add_argument("--attention", default="auto,torch", help="suffixspec attention modes: auto, cuda, torch")
    p.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"plain-decoding baselines of {BASELINES}; speedups are against the fastest",
    )
    p.add_argument(
        "--no-repeat",
        action="store_true",
        help="time each method's first run (default: run twice from a fresh state, time the second)",
    )
    p.add_argument("--max-spec-tokens", type=int, default=16)
    p.add_argument("--tree", action="store_true", help="tree drafts (default: path drafts)")
    p.add_argument(
        "--no-phase-sync",
        action="store_true",
        help="no CUDA syncs around tree build and compaction (their shares are then host time only)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    fill_sizes(args, SIZES, small=args.tiny)
    args.batch = [int(b) for b in csv_items(str(args.batch))]
    args.attention = csv_items(args.attention)
    args.baselines = csv_items(args.baselines)
    if not args.baselines or set(args.baselines) - set(BASELINES):
        p.error(f"--baselines: choose from {BASELINES}")
    args.models = ["tiny"] if args.tiny else csv_items(args.models)
    args.workloads = csv_items(args.workloads)
    unknown = [m for m in args.models if m != "tiny" and m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    if min(args.batch, default=0) < 1 or args.limit < 1 or args.warm < 0:
        p.error("--batch sizes and --limit must be >= 1, --warm >= 0")
    if args.max_prompt_tokens < 1 or args.max_new_tokens < 1:
        p.error("--max-prompt-tokens and --max-new-tokens must be >= 1")
    return args


# -- workloads ------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    trace: str
    warm: list[tuple[np.ndarray, np.ndarray]]  # (prompt, output) cached before the measured ones
    requests: list[tuple[np.ndarray, np.ndarray]]  # measured (prompt, output), outputs non-empty

    @property
    def max_token(self) -> int:
        return int(np.concatenate([a for pair in self.warm + self.requests for a in pair]).max())


def load_workload(name: str, args: argparse.Namespace) -> Workload:
    """The first `warm` requests of the trace, then the next `limit` with a non-empty output."""
    from suffixspec.replay.tokenize import default_cache_dir, load_tokenizer, tokenize_trace
    from suffixspec.replay.traces import read_trace

    stem = WORKLOADS.get(name, name)
    # Requests with an empty output cannot be measured: read some slack to replace them.
    trace = read_trace(args.trace_dir / f"{stem}.jsonl", limit=args.warm + 2 * args.limit)
    tokenizer = None
    if trace.needs_tokenizer():
        path = args.tokenizer or args.trace_dir / "tokenizers" / "llama3" / "tokenizer.json"
        tokenizer = load_tokenizer(path)
    tokens = tokenize_trace(trace, tokenizer, cache_dir=default_cache_dir())
    pairs = [
        (prompt[-args.max_prompt_tokens :].astype(np.int32), out[: args.max_new_tokens].astype(np.int32))
        for prompt, out in zip(tokens.prompts(), tokens.outputs, strict=True)
    ]
    measured = [(p, o) for p, o in pairs[args.warm :] if p.size and o.size][: args.limit]
    if not measured:
        raise SystemExit(f"{stem}: no request with a prompt and an output after the first {args.warm}")
    return Workload(name, stem, pairs[: args.warm], measured)


# -- models ---------------------------------------------------------------------------------------
def build_model(name: str, vocab: int, device: torch.device) -> tuple[Any, str]:
    """A random-weight Llama of architecture `name`, built directly on `device` without the slow
    initialisation (weights are then filled on the device: finite, N(0, 0.02), norms 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    arch = TINY if name == "tiny" else MODELS[name]
    dtype = torch.float32 if name == "tiny" else torch.bfloat16
    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,  # the trace decides when a request ends
        pad_token_id=0,
        **arch,
    )
    with torch.device(device), no_init_weights():
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.tie_weights()
    model.requires_grad_(False)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(1.0) if param.ndim == 1 else param.normal_(0.0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    return (
        model.eval(),
        f"{name}: Llama {arch['hidden_size']}h x {arch['num_hidden_layers']}L, {params / 1e9:.2f}B {dtype}",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- plain decoding -------------------------------------------------------------------------------
@dataclass
class Timing:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    new_tokens: int = 0
    decode_tokens: int = 0  # tokens emitted after the prefill's first one
    steps: int = 0  # forward passes after the prefill

    def add(self, other: Timing) -> None:
        for f in ("prefill_s", "decode_s", "new_tokens", "decode_tokens", "steps"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def plain_decode(model: Any, group: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device) -> Timing:
    """One token per forward pass with a `DynamicCache`, as `model.generate` decodes; the token fed
    back is the traced one (the model's argmax is still computed and read back, as generate does).
    Finished rows leave the batch."""
    with torch.inference_mode():
        return _plain_decode(model, group, device)


def _plain_decode(model: Any, group: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device) -> Timing:
    from transformers import DynamicCache

    from suffixspec.generation.batch import left_pad

    ids, mask = left_pad([p for p, _ in group], pad_id=0)
    forced, lengths = _forced_tokens(group)
    forced_t = torch.from_numpy(forced).to(device)
    mask_t = torch.from_numpy(mask).to(device)
    positions = (mask_t.cumsum(-1) - 1).masked_fill_(mask_t == 0, 1)
    cache = DynamicCache()
    _sync(device)
    t0 = time.perf_counter()
    out = model(
        input_ids=torch.from_numpy(ids).to(device),
        attention_mask=mask_t,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    out.logits[:, -1].argmax(-1).cpu()
    t1 = time.perf_counter()
    rows = np.arange(len(group))
    next_pos = positions[:, -1:] + 1
    for i in range(1, int(lengths.max())):
        alive = rows[lengths[rows] > i]
        if alive.size < rows.size:  # finished rows leave the batch
            keep = torch.from_numpy(np.searchsorted(rows, alive)).to(device)
            cache.batch_select_indices(keep)
            mask_t, next_pos, forced_t = mask_t[keep], next_pos[keep], forced_t[keep]
            rows = alive
        mask_t = torch.cat([mask_t, mask_t.new_ones((rows.size, 1))], dim=1)
        out = model(
            input_ids=forced_t[:, i - 1 : i],
            attention_mask=mask_t,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        out.logits[:, -1].argmax(-1).cpu()
        next_pos = next_pos + 1
    _sync(device)
    t2 = time.perf_counter()
    total = int(lengths.sum())
    return Timing(t1 - t0, t2 - t1, total, total - len(group), int(lengths.max()) - 1)


def _forced_tokens(group: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The traced outputs as a right-padded `[B, longest]` int64 array, and their lengths."""
    lengths = np.asarray([o.size for _, o in group])
    forced = np.zeros((len(group), lengths.max()), dtype=np.int64)
    for b, (_, out) in enumerate(group):
        forced[b, : out.size] = out
    return forced, lengths


def graph_decode(
    decoder: Any, group: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> Timing:
    """The plain loop on suffixspec's `GraphDecoder`: one replayed CUDA graph per step over a
    static cache (uncaptured on a CPU), teacher-forced, argmax read back each step. Rows stay in
    the batch until the longest finishes (static shapes); only their real tokens count."""
    forced, lengths = _forced_tokens(group)
    forced_t = torch.from_numpy(forced).to(device)
    _sync(device)
    t0 = time.perf_counter()
    decoder.start([p for p, _ in group]).argmax(-1).cpu()
    t1 = time.perf_counter()
    for i in range(1, int(lengths.max())):
        decoder.step(forced_t[:, i - 1]).argmax(-1).cpu()
    _sync(device)
    t2 = time.perf_counter()
    total = int(lengths.sum())
    return Timing(t1 - t0, t2 - t1, total, total - len(group), int(lengths.max()) - 1)


def generate_decode(
    model: Any, group: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device, **kwargs: Any
) -> Timing:
    """HF `model.generate` (greedy) on the left-padded group for as many tokens as its longest
    traced output. It cannot be teacher-forced, so it decodes the model's own tokens: the same
    shapes and steps. The prefill ends where generate first checks its stopping criteria (a
    criterion that synchronises and reads the clock once). Every row runs to the end (generate
    keeps finished rows); only the traced tokens count."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    from suffixspec.generation.batch import left_pad

    class FirstTokenClock(StoppingCriteria):
        at: float | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
            if self.at is None:
                _sync(device)
                self.at = time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    _, lengths = _forced_tokens(group)
    ids, mask = left_pad([p for p, _ in group], pad_id=0)
    n = int(lengths.max())
    clock = FirstTokenClock()
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        model.generate(
            input_ids=torch.from_numpy(ids).to(device),
            attention_mask=torch.from_numpy(mask).to(device),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
        _sync(device)
        t2 = time.perf_counter()
    assert clock.at is not None
    total = int(lengths.sum())
    return Timing(clock.at - t0, t2 - clock.at, total, total - len(group), n - 1)


class PlainBaselines:
    """The plain-decoding baselines of one model (module docstring), each run on a group of
    requests. `compiled` keeps one static cache per batch size of `max_len` positions (so groups
    of one size share one compiled graph) and uses transformers' own `torch.compile` of the
    decode forward (`compile_config`; mode reduce-overhead on CUDA)."""

    def __init__(self, model: Any, device: torch.device, max_len: int) -> None:
        self.model, self.device, self.max_len = model, device, max_len
        self._graph: Any = None

    @property
    def graph_captured(self) -> bool:
        return self._graph is not None and bool(self._graph.captured_buckets)

    def graph_decoder(self) -> Any:
        """The `GraphDecoder` of the `graph` baseline (built on first use)."""
        if self._graph is None:
            from suffixspec.generation.cuda_graphs import GraphDecoder

            self._graph = GraphDecoder(self.model, max_len=self.max_len)
        return self._graph

    def run(self, name: str, group: Sequence[tuple[np.ndarray, np.ndarray]]) -> Timing:
        if name == "loop":
            return plain_decode(self.model, group, self.device)
        if name == "generate":
            return generate_decode(self.model, group, self.device)
        if name == "compiled":
            return generate_decode(self.model, group, self.device, **self._compile_kwargs())
        if name == "graph":
            return graph_decode(self.graph_decoder(), group, self.device)
        raise ValueError(f"unknown baseline {name!r}")

    def _compile_kwargs(self) -> dict[str, Any]:
        from transformers import CompileConfig

        cuda = self.device.type == "cuda"
        config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if cuda else "default")
        config._compile_all_devices = not cuda  # transformers compiles on accelerators only unless told
        return {"cache_implementation": "static", "max_cache_len": self.max_len, "compile_config": config}


# -- speculative decoding, forced from the trace --------------------------------------------------
class TimedProposer:
    """A proposer wrapper that times the proposal calls and the cache updates apart."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.propose_s = 0.0
        self.update_s = 0.0

    def _timed(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            setattr(self, what, getattr(self, what) + time.perf_counter() - t0)

    def start(self, req_id: Any, prompt: np.ndarray) -> None:
        self._timed("update_s", self.inner.start, req_id, prompt)

    def extend(self, req_id: Any, tokens: np.ndarray) -> None:
        self._timed("update_s", self.inner.extend, req_id, tokens)

    def finish(self, req_id: Any) -> None:
        self._timed("update_s", self.inner.finish, req_id)

    def propose(self, *args: Any) -> list[Any]:
        return self._timed("propose_s", self.inner.propose, *args)


@dataclass
class SpecRun:
    timing: Timing = field(default_factory=Timing)
    steps: int = 0  # verification steps summed over requests
    forward_passes: int = 0
    drafted: int = 0
    accepted: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    mismatches: int = 0
    backend: str = ""
    forcing_s: float = 0.0
    outputs: list[np.ndarray] = field(default_factory=list)  # generated tokens per request


def warmed_proposer(workload: Workload, args: argparse.Namespace) -> Any:
    """A suffix-cache proposer that has served the workload's warm requests."""
    from suffixspec import SpecConfig, SuffixCache
    from suffixspec.proposer import SuffixProposer

    spec = SpecConfig(max_spec_tokens=args.max_spec_tokens, use_tree_spec=args.tree)
    cache = SuffixCache(**spec.cache_kwargs())
    for i, (prompt, output) in enumerate(workload.warm):
        cache.start_request(("warm", i), prompt)
        cache.add_active_response(("warm", i), output)
        cache.stop_request(("warm", i))
    return SuffixProposer(cache, spec), spec


def spec_decode(
    model: Any, workload: Workload, batch: int, attention: str, args: argparse.Namespace
) -> SpecRun:
    """The measured requests through suffixspec's loop in groups of `batch`, acceptance forced."""
    from transformers import GenerationConfig, LogitsProcessorList

    from suffixspec.generation.attention import AttentionBackend
    from suffixspec.generation.batch import Request
    from suffixspec.generation.compat import inspect_model
    from suffixspec.generation.config import validate_decode_config
    from suffixspec.generation.logits import TargetScorer

    info = inspect_model(model)
    inner, spec = warmed_proposer(workload, args)
    proposer = TimedProposer(inner)
    backend = AttentionBackend(model, attention)
    decode = validate_decode_config(
        GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0),
        vocab_size=info.vocab_size,
        max_new_tokens=args.max_new_tokens,
    )
    from suffixspec.generation.forcing import TraceForcedAcceptance
    from suffixspec.generation.loop import SpeculativeLoop

    forcer = TraceForcedAcceptance()
    run = SpecRun(
        backend={"cuda": "cuda-kernel", "torch": "torch-reference"}.get(backend.backend, "sdpa-mask")
    )
    phases: dict[str, float] = {}
    for start in range(0, len(workload.requests), batch):
        group = workload.requests[start : start + batch]
        requests = []
        for i, (prompt, output) in enumerate(group, start=start):
            req_id = (workload.name, i)
            forcer.outputs[req_id] = output
            requests.append(Request.new(req_id, prompt, int(output.size)))
        loop = SpeculativeLoop(
            model, info, decode, spec, TargetScorer(LogitsProcessorList()), proposer, backend,
            acceptance=forcer, sync_phases=not args.no_phase_sync,
        )  # fmt: skip
        _sync(info.device)
        forced_before = forcer.elapsed_s
        with torch.inference_mode():
            loop.run(requests)
        stats = loop.batch
        forcing = forcer.elapsed_s - forced_before
        run.forcing_s += forcing
        run.timing.add(
            Timing(
                stats.prefill_time_s,
                stats.total_time_s - stats.prefill_time_s - forcing,
                stats.new_tokens,
                stats.new_tokens - len(requests),
            )
        )
        run.forward_passes += stats.forward_passes - 1
        for key, value in stats.phases.items():
            if key != "prefill_forward":
                phases[f"{key}_s"] = phases.get(f"{key}_s", 0.0) + value
        for r, (_, output) in zip(requests, group, strict=True):
            run.steps += r.stats.steps
            run.drafted += r.stats.drafted_tokens
            run.accepted += r.stats.accepted_tokens
            run.mismatches += int(not np.array_equal(r.generated, output))
            run.outputs.append(r.generated.copy())
    # Prompt ingestion by the proposer happens outside the prefill: it counts as decode time.
    phases["propose_s"] = proposer.propose_s
    phases["cache_update_s"] = proposer.update_s
    phases["other_s"] = run.timing.decode_s - sum(phases.values())
    run.phases = phases
    return run


# -- report ---------------------------------------------------------------------------------------
PHASES = ("propose", "cache_update", "tree", "forward", "compact", "other")


@dataclass
class Row:
    label: str
    model: str
    workload: str
    batch: int
    attention: str
    backend: str
    requests: int
    new_tokens: int
    plain_tok_s: float  # decode phase: tokens after the prefill's first one / decode time
    spec_tok_s: float
    speedup: float
    plain_e2e_tok_s: float  # prefill included
    spec_e2e_tok_s: float
    e2e_speedup: float
    tokens_per_step: float
    acceptance: float
    mean_draft: float
    forward_passes: int
    plain_forward_passes: int
    shares: dict[str, float]  # of suffixspec's decode time
    forcing_s: float  # the trace forcing itself (benchmark work, not counted in suffixspec's time)
    mismatches: int  # requests whose forced output differs from the trace (must be 0)
    fastest_plain: str = ""  # the baseline behind plain_tok_s and the speedups
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # every plain baseline
    spec_cold_decode_s: float = 0.0  # suffixspec's first (untimed) run, for comparison
    weight_read_step_s: float | None = None  # parameter bytes / nominal bandwidth (GPU only)
    plain_limit_tok_s: float | None = None  # decode tokens / (loop steps x weight_read_step_s)
    spec_limit_tok_s: float | None = None  # decode tokens / (suffixspec passes x weight_read_step_s)


def baseline_figures(timed: Timing, cold: Timing) -> dict[str, Any]:
    """One plain baseline's figures (decode phase unless named e2e)."""
    e2e = timed.prefill_s + timed.decode_s
    return {
        "tok_s": timed.decode_tokens / timed.decode_s if timed.decode_s else 0.0,
        "e2e_tok_s": timed.new_tokens / e2e if e2e else 0.0,
        "decode_s": timed.decode_s,
        "prefill_s": timed.prefill_s,
        "cold_decode_s": cold.decode_s,
        "steps": timed.steps,
        "step_s": timed.decode_s / timed.steps if timed.steps else None,
    }


def fastest(baselines: dict[str, Timing]) -> str:
    """The baseline with the highest decode tokens/s (the one speedups are computed against)."""
    return max(
        baselines,
        key=lambda k: baselines[k].decode_tokens / baselines[k].decode_s if baselines[k].decode_s else 0.0,
    )


def make_row(
    model: str,
    workload: Workload,
    batch: int,
    attention: str,
    baselines: dict[str, tuple[Timing, Timing]],
    spec: SpecRun,
    spec_cold: SpecRun | None = None,
    weight_read_step_s: float | None = None,
) -> Row:
    """`baselines`: name -> (timed, cold) plain timings; `spec`: the timed suffixspec run."""
    best = fastest({k: timed for k, (timed, _) in baselines.items()})
    plain = baselines[best][0]
    plain_e2e = plain.prefill_s + plain.decode_s
    spec_e2e = spec.timing.prefill_s + spec.timing.decode_s
    plain_passes = _plain_passes(workload, batch)
    limit = weight_read_step_s
    decode_tokens = spec.timing.decode_tokens
    return Row(
        label=LABEL,
        model=model,
        workload=workload.name,
        batch=batch,
        attention=attention,
        backend=spec.backend,
        requests=len(workload.requests),
        new_tokens=spec.timing.new_tokens,
        plain_tok_s=plain.decode_tokens / plain.decode_s if plain.decode_s else 0.0,
        spec_tok_s=spec.timing.decode_tokens / spec.timing.decode_s if spec.timing.decode_s else 0.0,
        speedup=plain.decode_s / spec.timing.decode_s if spec.timing.decode_s else 0.0,
        plain_e2e_tok_s=plain.new_tokens / plain_e2e,
        spec_e2e_tok_s=spec.timing.new_tokens / spec_e2e,
        e2e_speedup=plain_e2e / spec_e2e,
        tokens_per_step=spec.timing.decode_tokens / spec.steps if spec.steps else 1.0,
        acceptance=spec.accepted / spec.drafted if spec.drafted else 0.0,
        mean_draft=spec.drafted / spec.steps if spec.steps else 0.0,
        forward_passes=spec.forward_passes,
        plain_forward_passes=plain_passes,
        shares={k: spec.phases.get(f"{k}_s", 0.0) / spec.timing.decode_s for k in PHASES}
        if spec.timing.decode_s
        else dict.fromkeys(PHASES, 0.0),
        forcing_s=spec.forcing_s,
        mismatches=spec.mismatches,
        fastest_plain=best,
        baselines={k: baseline_figures(timed, cold) for k, (timed, cold) in baselines.items()},
        spec_cold_decode_s=(spec_cold or spec).timing.decode_s,
        weight_read_step_s=limit,
        plain_limit_tok_s=decode_tokens / (plain_passes * limit) if limit and plain_passes else None,
        spec_limit_tok_s=decode_tokens / (spec.forward_passes * limit)
        if limit and spec.forward_passes
        else None,
    )


def sum_timings(timings: Iterable[Timing]) -> Timing:
    total = Timing()
    for t in timings:
        total.add(t)
    return total


def _plain_passes(workload: Workload, batch: int) -> int:
    """Decode forward passes of the plain baseline: per group, its longest output minus one."""
    sizes = [o.size for _, o in workload.requests]
    return sum(max(sizes[i : i + batch]) - 1 for i in range(0, len(sizes), batch))


def print_table(rows: list[Row], header: str) -> None:
    print(f"{LABEL.upper()} ({header})")
    names = list(dict.fromkeys(k for r in rows for k in r.baselines))
    head = (
        "model", "workload", "batch", "attention", "tokens", *(f"{k} tok/s" for k in names), "fastest plain",
        "spec tok/s", "speedup", "e2e speedup", "weight-read limit plain/spec tok/s", "tok/step", "accept",
        "shares prop/upd/tree/fwd/comp/other %", "mismatch",
    )  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        shares = "/".join(f"{100 * r.shares[k]:.0f}" for k in PHASES)
        plain = " | ".join(f"{r.baselines[k]['tok_s']:.1f}" if k in r.baselines else "-" for k in names)
        limit = (
            f"{r.plain_limit_tok_s:.0f}/{r.spec_limit_tok_s:.0f}"
            if r.plain_limit_tok_s and r.spec_limit_tok_s
            else "-"
        )
        print(
            f"| {r.model} | {r.workload} | {r.batch} | {r.backend} | {r.new_tokens} | {plain} | "
            f"{r.fastest_plain} | {r.spec_tok_s:.1f} | {r.speedup:.2f}x | {r.e2e_speedup:.2f}x | {limit} | "
            f"{r.tokens_per_step:.2f} | {100 * r.acceptance:.0f}% | {shares} | {r.mismatches} |"
        )


# -- main -----------------------------------------------------------------------------------------
def resolve_device(args: argparse.Namespace) -> torch.device | None:
    """The device to run on, or None (after saying why) where the GPU benchmark cannot run."""
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_e2e: no CUDA device is visible (torch.cuda.is_available() is False). This benchmark "
            "measures real-size models on a GPU; run it on a GPU machine, or pass --tiny for the CPU "
            "smoke test (or --device cpu to force real sizes on the CPU). Nothing was measured.",
            file=sys.stderr,
        )
        return None
    return device


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every model x workload x batch x attention mode; returns the report."""
    device = resolve_device(args)
    if device is None:
        return {"label": LABEL, "skipped": "no CUDA device", "rows": []}
    torch.manual_seed(args.seed)
    workloads = [load_workload(name, args) for name in args.workloads]
    vocab = max(w.max_token for w in workloads) + 1
    if args.tiny:
        vocab = max(vocab, 256)
    elif vocab > _LLAMA3_VOCAB:
        raise SystemExit(f"token id {vocab - 1} does not fit the Llama-3 vocabulary of {_LLAMA3_VOCAB}")
    else:
        vocab = _LLAMA3_VOCAB
    rows: list[Row] = []
    models = {}
    repeats = 1 if args.no_repeat else 2
    for name in args.models:
        model, models[name] = build_model(name, vocab, device)
        print(f"[bench_e2e] {models[name]} on {device}", file=sys.stderr)
        _explain_fallback(model, device, args)
        _warm_up(model, workloads[0], device, args)
        bandwidth = nominal(torch.cuda.get_device_name(device))[0] if device.type == "cuda" else None
        limit = weight_read_s(model, bandwidth)
        plain = PlainBaselines(model, device, args.max_prompt_tokens + args.max_new_tokens)
        for workload in workloads:
            for batch in args.batch:
                groups = [workload.requests[i : i + batch] for i in range(0, len(workload.requests), batch)]
                baselines = {}
                for baseline in args.baselines:
                    runs = [sum_timings(plain.run(baseline, g) for g in groups) for _ in range(repeats)]
                    baselines[baseline] = (runs[-1], runs[0])
                for attention in args.attention:
                    specs = [spec_decode(model, workload, batch, attention, args) for _ in range(repeats)]
                    row = make_row(name, workload, batch, attention, baselines, specs[-1], specs[0], limit)
                    if "graph" in row.baselines:
                        row.baselines["graph"]["captured"] = plain.graph_captured
                    rows.append(row)
                    print(
                        f"[bench_e2e] {name} {workload.name} b{batch} {row.backend}: "
                        f"{row.plain_tok_s:.1f} ({row.fastest_plain}) -> {row.spec_tok_s:.1f} tok/s "
                        f"({row.speedup:.2f}x)",
                        file=sys.stderr,
                    )
        del plain
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "label": LABEL,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "models": models,
        "workloads": {w.name: w.trace for w in workloads},
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("out", "tokenizer", "device")
        },
        "rows": [asdict(r) for r in rows],
    }


def _explain_fallback(model: Any, device: torch.device, args: argparse.Namespace) -> None:
    """Says why attention="auto" will not run the CUDA kernel on a GPU (its rows then read sdpa-mask)."""
    from suffixspec.kernels import resolve_mode, unavailable_reason

    if device.type == "cuda" and "auto" in args.attention and resolve_mode(model, "auto") is None:
        reason = unavailable_reason(device) or "the model's attention is not one the kernel implements"
        print(f"[bench_e2e] attention=auto runs the model's sdpa with a tree mask: {reason}", file=sys.stderr)


def _warm_up(model: Any, workload: Workload, device: torch.device, args: argparse.Namespace) -> None:
    """One short request through both methods (allocator, cuBLAS, kernel compilation), unmeasured."""
    prompt, output = workload.requests[0]
    short = Workload("warm-up", workload.trace, workload.warm, [(prompt, output[:8])])
    plain_decode(model, short.requests, device)
    for attention in args.attention:
        spec_decode(model, short, 1, attention, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if not report["rows"]:
        return 0
    header = f"{report['device']}; max prompt {args.max_prompt_tokens}, max new {args.max_new_tokens}"
    print_table([Row(**r) for r in report["rows"]], header)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if all(r["mismatches"] == 0 for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
