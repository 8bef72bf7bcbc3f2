"""Serving, trace-forced: SLO attainment and goodput of the engine's speculation policies.

Replays ``../shared/workloads`` traces as arrivals (Poisson at a given rate, or bursts) through
``suffixspec.Engine`` with each scheduler policy (``none``, ``uniform``, ``greedy``,
``adaserve``) on the *same* arrival sequence and the same SLO classes, as in AdaServe's
evaluation (arXiv 2501.12162): 60% tight (a coding agent), 20% chat at a middle target, 20%
relaxed batch, the TPOT targets set as multiples of the plain TPOT measured on this machine.
``adaserve-sitout`` (not run unless named in ``--policies``) is adaserve with sit-outs: SLO
requests far ahead of their pace skip steps while another is behind (off by default in the
engine; ``--sit-out-margin``, ``--sit-out-min-target-steps``).

**Trace-forced.** The CPU models (the built-in default model, a random tiny Llama) do not produce
the traced outputs, so acceptance is forced from the trace through the engine's acceptance seam
(``Engine(acceptance=TraceForcedAcceptance())``, the generation loop's ``AcceptancePolicy``):
the engine drafts from the suffix cache, schedules, runs the model on every scheduled token and
compacts the KV as it would, but accepts the draft path that matches the traced continuation.

**Clock.** Timing on a loaded machine is noisy, and the policies must be compared on equal terms.
The step-cost model (step time against tokens fed) is *measured once* per model on this machine
(engine steps of plain and speculative runs, median per token-count bin; on CPU in this process's
CPU time with one torch thread, which the other processes on a shared machine barely disturb),
given to the scheduler (``cost_points``, step time against tokens), and with ``--clock virtual``
(the default) it is also the clock: each engine step advances time by its measured cost, fitted
as fixed + per request + per token (on CPU the engine's step cost grows with its requests more
than with its tokens; the JSON keeps both models). Every policy then runs on the same arrivals
under the same costs; the engine does all its real work. ``--clock wall`` uses
real time (for a dedicated machine or a GPU).

TPOT of a request = (finish - first token) / (tokens - 1); it meets its SLO when its TPOT is at
most its class's target. Goodput = output tokens of requests that met their SLO per second of the
run (first arrival to last finish). Request rates are swept as multiples (``--loads``) of the
plain single-stream capacity, 1 / (mean output tokens x plain TPOT), or given in requests/s
(``--rates``).

    ./dev bench bench_serve [--models default,tiny] [--workloads agentic,sql] [--loads ...]
        [--arrival poisson|burst] [--slo-multiples 1.5,3,8] [--out DIR]
    ./dev bench bench_serve --quick          # small, for tests
    ./dev bench bench_serve --cost-points 1:0.004,512:0.132   # a what-if cost curve (injected)
    ./dev bench bench_serve --cost-fit 0.02335:0:0.0000474 --cost-source "..."  # fixed:request:token
    ./dev bench bench_serve --device cuda --models 1b --clock wall   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from options import csv_items, fill_sizes
from workloads import DEFAULT_WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
LABEL = "trace-forced"
POLICIES = ("none", "uniform", "greedy", "adaserve")
#: Also selectable: adaserve with sit-outs (off by default in the engine): SLO requests far ahead of
#: their pace skip steps while another is behind (``--sit-out-margin``, default 1 step), on the
#: same arrivals and step costs as the others.
SIT_OUTS = "adaserve-sitout"
SELECTABLE = (*POLICIES, SIT_OUTS)
#: (class, share of requests, default TPOT target as a multiple of the plain TPOT).
SLO_CLASSES = (("tight", 0.6, 1.5), ("chat", 0.2, 3.0), ("batch", 0.2, 8.0))
TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
# Defaults / --quick values of the size settings.
SIZES = {
    "models": ("default,tiny", "default"),
    "workloads": ("agentic,sql", "agentic,sql"),
    "requests": (32, 8),
    "warm": (64, 4),
    "max_prompt_tokens": (256, 48),
    "max_new_tokens": (96, 24),
    "loads": ("1,2,4", "2,8"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (tests)")
    p.add_argument("--models", help="default (built-in), tiny (random Llama), or 1b/8b (random, GPU)")
    p.add_argument("--workloads", help="agentic, sql, code, chat, or trace file stems")
    p.add_argument(
        "--trace-dir", type=Path, default=DEFAULT_WORKLOADS, help="directory of the *.jsonl traces"
    )
    p.add_argument("--requests", type=int, help="requests per run (32; --quick 8)")
    p.add_argument("--warm", type=int, help="earlier requests in the suffix cache first (64; --quick 4)")
    p.add_argument("--max-prompt-tokens", type=int, help="prompt tail kept (256; --quick 48)")
    p.add_argument("--max-new-tokens", type=int, help="output head kept (96; --quick 24)")
    p.add_argument("--loads", help="request rates as multiples of plain single-stream capacity")
    p.add_argument("--rates", help="request rates in requests/s (instead of --loads)")
    p.add_argument("--arrival", choices=("poisson", "burst"), default="poisson")
    p.add_argument("--burst-size", type=int, default=8, help="requests per burst (--arrival burst)")
    p.add_argument(
        "--slo-multiples",
        default=",".join(str(m) for _, _, m in SLO_CLASSES),
        help="TPOT targets of the tight, chat and batch classes as multiples of the plain TPOT",
    )
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--draft-tokens", type=int, default=4, help="draft tokens per request of 'uniform'")
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=512,
        help="prompt tokens per step at most (chunked prefill; every policy alike)",
    )
    p.add_argument("--max-spec-tokens", type=int, default=16, help="draft tree size (SpecConfig)")
    p.add_argument(
        "--sit-out-margin",
        type=float,
        default=1.0,
        help=f"{SIT_OUTS}: an SLO request this many steps' worth of its TPOT target ahead of its pace "
        "skips a step while another is behind (default 1)",
    )
    p.add_argument(
        "--sit-out-min-target-steps",
        type=float,
        help=f"{SIT_OUTS}: only requests whose TPOT target spans this many steps may sit out "
        "(default: the scheduler's, 2)",
    )
    p.add_argument(
        "--cost-points",
        help="inject a step-cost model instead of measuring one, as TOKENS:SECONDS,... (labelled "
        "'injected' in the report: a what-if for another machine's cost curve, not a measurement)",
    )
    p.add_argument(
        "--cost-fit",
        help="inject the virtual clock's step cost as FIXED_S:PER_REQUEST_S:PER_TOKEN_S (a what-if, "
        "labelled 'injected'); the scheduler gets the token-only points fixed + per_request + "
        "per_token x tokens (one request's share of the per-request term)",
    )
    p.add_argument(
        "--cost-source",
        default="",
        help="where an injected cost model comes from (recorded in the report's step_cost.source)",
    )
    p.add_argument("--clock", choices=("virtual", "wall"), default="virtual")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench-results" / "bench_serve",
        help="directory for the JSON and plots",
    )
    args = p.parse_args(argv)
    fill_sizes(args, SIZES, small=args.quick)
    args.models, args.workloads, args.policies = (
        csv_items(args.models),
        csv_items(args.workloads),
        csv_items(args.policies),
    )
    args.multiples = [float(m) for m in csv_items(args.slo_multiples)]
    unknown = [x for x in args.policies if x not in SELECTABLE]
    if unknown:
        p.error(f"unknown policies {unknown}; choose from {SELECTABLE}")
    if len(args.multiples) != len(SLO_CLASSES) or min(args.multiples) <= 0:
        p.error("--slo-multiples needs three positive numbers (tight, chat, batch)")
    if min(args.requests, args.burst_size, args.draft_tokens, args.prefill_chunk) < 1 or args.warm < 0:
        p.error("--requests, --burst-size, --draft-tokens and --prefill-chunk must be >= 1, --warm >= 0")
    try:
        args.rate_values = [float(r) for r in csv_items(args.rates or args.loads)]
    except ValueError:
        p.error("--loads and --rates are comma-separated numbers")
    if not args.rate_values or min(args.rate_values) <= 0:
        p.error("request rates must be positive")
    if args.sit_out_min_target_steps is not None and not args.sit_out_min_target_steps >= 0:
        p.error("--sit-out-min-target-steps must be >= 0")
    if not args.sit_out_margin >= 0:
        p.error("--sit-out-margin must be >= 0 steps (inf: no sit-outs)")
    if args.cost_points:
        try:
            args.cost_points = [
                (int(n), float(t)) for n, t in (x.split(":") for x in csv_items(args.cost_points))
            ]
        except ValueError:
            p.error("--cost-points is TOKENS:SECONDS,...")
        if args.clock == "wall":
            p.error("--cost-points is a what-if for the virtual clock; --clock wall measures real time")
    if args.cost_fit:
        if args.cost_points:
            p.error("give --cost-points or --cost-fit, not both")
        try:
            fixed, per_request, per_token = (float(x) for x in args.cost_fit.split(":"))
        except ValueError:
            p.error("--cost-fit is FIXED_S:PER_REQUEST_S:PER_TOKEN_S")
        if min(fixed, per_request, per_token) < 0 or fixed + per_request + per_token <= 0:
            p.error("--cost-fit needs non-negative terms and a positive one-token step")
        if args.clock == "wall":
            p.error("--cost-fit is a what-if for the virtual clock; --clock wall measures real time")
        args.cost_fit = dict(fixed_s=fixed, per_request_s=per_request, per_token_s=per_token)
    return args


def injected_fit_cost(fit: dict[str, float], source: str) -> dict[str, Any]:
    """The cost record of an injected `fixed + per_request x requests + per_token x tokens`
    model: the clock charges the fit; the scheduler (token-only) gets it at one request, through
    points up to 8192 tokens (piecewise linear, so exact for the per-token part)."""
    one = fit["fixed_s"] + fit["per_request_s"]
    points = [(n, one + fit["per_token_s"] * n) for n in (1, 8192)]
    label = "injected (--cost-fit)" + (f", {source}" if source else "")
    return dict(points=points, fit=dict(fit, r2=None), plain_tpot_s=points[0][1], source=label)


# -- models ---------------------------------------------------------------------------------------
@dataclass
class ModelUnderTest:
    name: str
    model: Any
    tokenizer: Path  # the tokenizer.json the traces are tokenized with
    description: str


def build_model(name: str, device: torch.device, seed: int) -> ModelUnderTest:
    from suffixspec.default_model import default_model_dir, load_default_model

    default_tokenizer = default_model_dir() / "tokenizer.json"
    if name == "default":
        model, _, info = load_default_model()
        return ModelUnderTest(
            name, model.to(device).eval(), default_tokenizer, info.describe().splitlines()[0]
        )
    if name == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        vocab = int(json.loads((default_model_dir() / "config.json").read_text())["vocab_size"])
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=vocab, max_position_embeddings=4096, eos_token_id=None, pad_token_id=0, **TINY_LLAMA
        )
        model = LlamaForCausalLM(config).to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        desc = f"tiny: random Llama {TINY_LLAMA['hidden_size']}h x {TINY_LLAMA['num_hidden_layers']}L"
        return ModelUnderTest(name, model, default_tokenizer, f"{desc}, {params / 1e6:.2f}M fp32")
    import bench_e2e  # the random real-size architectures (GPU) and the Llama 3 tokenizer

    model, desc = bench_e2e.build_model(name, 128256, device)
    return ModelUnderTest(name, model, Path(), desc)


# -- workloads ------------------------------------------------------------------------------------
def load_requests(
    workload: str, mut: ModelUnderTest, args: argparse.Namespace
) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """(workload, measured (prompt, output) pairs) tokenized with the model's tokenizer."""
    import bench_e2e
    from workloads import tokenizer_path

    settings = argparse.Namespace(
        trace_dir=args.trace_dir,
        tokenizer=tokenizer_path(args.trace_dir, mut.tokenizer if mut.tokenizer != Path() else None),
        warm=args.warm,
        limit=args.requests,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
    )
    loaded = bench_e2e.load_workload(workload, settings)
    return loaded, loaded.requests


def warmed_cache(loaded: Any, spec: Any) -> Any:
    """A suffix cache that has served the workload's warm requests (as a running server would)."""
    from suffixspec import SuffixCache

    cache = SuffixCache(**spec.cache_kwargs())
    for i, (prompt, output) in enumerate(loaded.warm):
        cache.start_request(("warm", i), prompt)
        if output.size:
            cache.add_active_response(("warm", i), output)
        cache.stop_request(("warm", i))
    return cache


def arrival_times(n: int, rate: float, pattern: str, burst: int, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of `n` requests at `rate` requests/s on average: Poisson, or bursts of
    `burst` requests at once whose starts are Poisson at `rate / burst`."""
    if pattern == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate, n)) - 1.0 / rate
    starts = np.cumsum(rng.exponential(burst / rate, math.ceil(n / burst))) - burst / rate
    return np.repeat(starts, burst)[:n]


def slo_classes(n: int, rng: np.random.Generator) -> list[int]:
    """Class index per request: exactly the shares of SLO_CLASSES (rounded), in random order."""
    counts = [round(share * n) for _, share, _ in SLO_CLASSES]
    counts[0] = n - sum(counts[1:])
    labels = np.repeat(np.arange(len(SLO_CLASSES)), counts)
    return rng.permutation(labels).tolist()


# -- clocks ---------------------------------------------------------------------------------------
class StepCounter:
    """Counts the model's forward passes (= engine steps that ran the model), their requests and
    tokens; with a cost function `cost(tokens, requests)` it is the virtual clock: each forward
    advances it by the step's cost."""

    def __init__(self, cost: Any = None) -> None:
        from suffixspec.engine.paged_attention import PAGED_KWARG

        self.paged_kwarg = PAGED_KWARG
        self.cost = cost
        self.now = 0.0
        self.steps = 0
        self.tokens = 0
        self.last_tokens = 0
        self.last_requests = 0

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        tokens = int(kwargs["input_ids"].shape[1])
        requests = int(kwargs[self.paged_kwarg].meta.query_lens.shape[0])
        self.steps += 1
        self.tokens += tokens
        self.last_tokens, self.last_requests = tokens, requests
        if self.cost is not None:
            self.now += self.cost(tokens, requests)

    def monotonic(self) -> float:
        return self.now


@contextlib.contextmanager
def counting(model: Any, counter: StepCounter) -> Iterator[None]:
    """Hooks `counter` on `model` for the run."""
    handle = model.register_forward_hook(counter, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# -- one run --------------------------------------------------------------------------------------
@dataclass
class Arrivals:
    times: np.ndarray  # seconds from the start
    classes: list[int]
    targets_ms: list[float]  # TPOT target per request


def make_engine(mut: ModelUnderTest, loaded: Any, policy: str, args: argparse.Namespace, cost_points: Any):
    """An engine for `policy` (one of SELECTABLE) over the workload, from a warmed cache."""
    from suffixspec import Engine, SpecConfig
    from suffixspec.generation.forcing import TraceForcedAcceptance

    spec = SpecConfig(max_spec_tokens=args.max_spec_tokens, use_tree_spec=True)
    requests = loaded.requests
    longest = max(p.size + o.size for p, o in requests)
    block_size = 16
    num_blocks = len(requests) * (-(-longest // block_size) + 2)  # never the bottleneck here
    forcer = TraceForcedAcceptance()
    engine = Engine(
        mut.model,
        spec=spec,
        cache=warmed_cache(loaded, spec),
        num_blocks=num_blocks,
        block_size=block_size,
        policy="adaserve" if policy == SIT_OUTS else policy,
        draft_tokens=args.draft_tokens,
        cost_points=cost_points,
        max_prefill_tokens_per_step=args.prefill_chunk,
        sit_out_margin=args.sit_out_margin if policy == SIT_OUTS else None,
        sit_out_min_target_steps=args.sit_out_min_target_steps if policy == SIT_OUTS else None,
        acceptance=forcer,
    )
    for i, (_, output) in enumerate(requests):
        forcer.outputs[i] = output
    return engine


def run_once(
    mut: ModelUnderTest,
    loaded: Any,
    policy: str,
    arrivals: Arrivals,
    args: argparse.Namespace,
    cost: dict[str, Any],
    virtual: bool,
) -> dict[str, Any]:
    """One policy over one arrival sequence; per-request records and the run's totals. The
    scheduler gets the token-only `cost["points"]`; the virtual clock charges `cost["fit"]`."""
    from suffixspec import SLO, RequestParams

    engine = make_engine(mut, loaded, policy, args, cost["points"])
    requests = loaded.requests
    fit = cost.get("fit")
    if fit is not None:

        def step_cost(tokens: int, requests: int) -> float:
            return fit["fixed_s"] + fit["per_request_s"] * requests + fit["per_token_s"] * tokens

    else:  # an injected token-only model

        def step_cost(tokens: int, requests: int) -> float:
            return engine.scheduler.step_time(tokens)

    counter = StepCounter(step_cost if virtual else None)
    if virtual:
        engine.clock = counter.monotonic  # the engine plans and stamps with the virtual time
    order = np.argsort(arrivals.times, kind="stable")
    finished: dict[int, Any] = {}
    wall0 = time.perf_counter()

    def now() -> float:
        return counter.now if virtual else time.perf_counter() - wall0

    with counting(mut.model, counter), torch.inference_mode():
        start = engine_time = now()
        added = 0
        while added < len(order) or engine.has_unfinished():
            while added < len(order) and arrivals.times[order[added]] <= now():
                i = int(order[added])
                prompt, output = requests[i]
                slo = SLO(tpot_ms=arrivals.targets_ms[i])
                params = RequestParams(max_new_tokens=int(output.size), stop_token_ids=[], slo=slo)
                engine.add_request(i, prompt, params)
                added += 1
            if not engine.has_unfinished():  # idle until the next arrival
                wait = float(arrivals.times[order[added]]) - now()
                if virtual:
                    counter.now += wait
                else:
                    time.sleep(max(0.0, wait))
                continue
            steps_before = counter.steps
            for out in engine.step():
                if out.error is not None:  # a measurement with a failed request is no measurement
                    raise out.error
                if out.finished:
                    finished[int(out.request_id)] = out
            if counter.steps == steps_before and not virtual:
                time.sleep(0.0005)
            elif counter.steps == steps_before:
                raise RuntimeError("the engine ran no step while requests were waiting")
        engine_time = now() - start
    wall = time.perf_counter() - wall0
    records = []
    for i, (_, output) in enumerate(requests):
        out = finished[i]
        st = out.stats
        n = len(out.token_ids)
        first, end = st.first_token_time, st.finish_time
        tpot = (end - first) / (n - 1) if n > 1 else 0.0
        records.append(
            dict(
                cls=SLO_CLASSES[arrivals.classes[i]][0],
                target_ms=arrivals.targets_ms[i],
                arrival_s=float(arrivals.times[i]),
                tokens=n,
                ttft_ms=1e3 * (first - (start + float(arrivals.times[i]))),
                tpot_ms=1e3 * tpot,
                finish_s=end - start,
                met=bool(1e3 * tpot <= arrivals.targets_ms[i] * (1 + 1e-9)),
                steps=st.steps,
                sit_outs=st.sit_outs,
                drafted=st.draft_tokens,
                accepted=st.accepted_tokens,
                forced_match=out.token_ids == output.tolist(),
            )
        )
    return dict(
        records=records,
        engine_steps=counter.steps,
        tokens_fed=counter.tokens,
        duration_s=engine_time,
        wall_s=wall,
        forcing_s=engine.acceptance.elapsed_s if engine.acceptance is not None else 0.0,
    )


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    records = run["records"]
    tokens = np.asarray([r["tokens"] for r in records], dtype=np.float64)
    met = np.asarray([r["met"] for r in records])
    first_arrival = min(r["arrival_s"] for r in records)
    span = max(r["finish_s"] for r in records) - first_arrival
    ttft = np.asarray([r["ttft_ms"] for r in records])
    tpot = np.asarray([r["tpot_ms"] for r in records])
    per_class, tpot_by_class = {}, {}
    for name, _, _ in SLO_CLASSES:
        mine = [r for r in records if r["cls"] == name]
        per_class[name] = float(np.mean([r["met"] for r in mine])) if mine else None
        tpot_by_class[name] = float(np.median([r["tpot_ms"] for r in mine])) if mine else None
    drafted = sum(r["drafted"] for r in records)
    accepted = sum(r["accepted"] for r in records)
    return dict(
        attainment=float(met.mean()),
        attainment_by_class=per_class,
        tpot_ms_p50_by_class=tpot_by_class,
        sit_outs=sum(r["sit_outs"] for r in records),
        goodput_tok_s=float(tokens[met].sum() / span) if span > 0 else 0.0,
        throughput_tok_s=float(tokens.sum() / span) if span > 0 else 0.0,
        ttft_ms_p50=float(np.percentile(ttft, 50)),
        ttft_ms_p99=float(np.percentile(ttft, 99)),
        tpot_ms_p50=float(np.percentile(tpot, 50)),
        tpot_ms_p99=float(np.percentile(tpot, 99)),
        tokens_per_step=float(tokens.sum() / max(1, sum(r["steps"] for r in records))),
        engine_steps=run["engine_steps"],
        tokens_fed_per_step=run["tokens_fed"] / max(1, run["engine_steps"]),
        drafted=drafted,
        accepted=accepted,
        acceptance=accepted / drafted if drafted else 0.0,
        duration_s=run["duration_s"],
        wall_s=run["wall_s"],
        forced_outputs_match=all(r["forced_match"] for r in records),
    )


# -- the step-cost model ----------------------------------------------------------------------------
def step_timer(device: torch.device) -> Any:
    """The clock that step costs are measured with: on CPU this process's CPU time (the benchmark
    runs torch on one thread), which other processes on a shared machine barely disturb; on a
    GPU, wall time to completion."""
    if device.type == "cuda":

        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return wall
    return time.process_time


def measure_step_cost(mut: ModelUnderTest, loaded: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Step time against tokens fed, measured once on this machine: engine steps (``step_timer``)
    of one request decoding alone, then all requests at once without speculation, with uniform
    speculation and with whole trees; the median per token-count bin (powers of two), made
    non-decreasing. The engine's whole step counts (drafting, scheduling, forward, verification)."""
    from suffixspec import RequestParams

    clock = step_timer(torch.device(args.device))
    whole_trees = [(1, 0.01), (1 << 16, 0.01)]  # a flat cost: greedy keeps every drafted node
    samples: list[tuple[int, float]] = []
    runs = [
        ("none", loaded.requests[:1], None),
        ("none", loaded.requests, None),
        ("uniform", loaded.requests, None),
        ("greedy", loaded.requests, whole_trees),
    ]
    for policy, group, points in runs:
        engine = make_engine(mut, loaded, policy, args, points)
        counter = StepCounter()
        with counting(mut.model, counter), torch.inference_mode():
            for i, (prompt, output) in enumerate(group):
                engine.add_request(
                    i, prompt, RequestParams(max_new_tokens=int(output.size), stop_token_ids=[])
                )
            warm = True
            while engine.has_unfinished():
                before = counter.steps
                t0 = clock()
                outputs = engine.step()
                elapsed = clock() - t0
                for out in outputs:  # a failed request (logged by the engine) spoils the fit
                    if out.error is not None:
                        raise out.error
                if counter.steps > before and not warm:
                    samples.append((counter.last_tokens, counter.last_requests, elapsed))
                warm = False  # the first step pays one-time costs
    tokens = np.asarray([t for t, _, _ in samples])
    requests = np.asarray([r for _, r, _ in samples])
    seconds = np.asarray([s for _, _, s in samples])
    bins = np.floor(np.log2(tokens)).astype(int)
    points: list[tuple[int, float]] = []
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() >= 2 or b == 0:
            points.append((int(np.median(tokens[sel])), float(np.median(seconds[sel]))))
    # Distinct token counts, non-decreasing times (noise can invert neighbouring bins).
    dedup: dict[int, float] = {}
    for t, s in points:
        dedup[t] = max(dedup.get(t, 0.0), s)
    ordered = sorted(dedup.items())
    monotone, top = [], 0.0
    for t, s in ordered:
        top = max(top, s)
        monotone.append((t, top))
    fit = fit_step_cost(tokens, requests, seconds)
    return dict(
        points=monotone,
        fit=fit,
        plain_tpot_s=fit["fixed_s"] + fit["per_request_s"] + fit["per_token_s"],
        plain_tpot_measured_s=float(np.median(seconds[tokens == 1])) if (tokens == 1).any() else None,
        samples=len(samples),
    )


def fit_step_cost(tokens: np.ndarray, requests: np.ndarray, seconds: np.ndarray) -> dict[str, float]:
    """Least squares `seconds = fixed + per_request * requests + per_token * tokens`, coefficients
    kept non-negative (a negative one is dropped and the rest refitted). The engine's step cost on
    CPU grows with its requests (per-request attention and verification) more than with its
    tokens, which a cost in tokens alone cannot express: this is the virtual clock's model."""
    columns = [np.ones_like(seconds), requests.astype(np.float64), tokens.astype(np.float64)]
    keep = [0, 1, 2]
    while True:
        design = np.stack([columns[k] for k in keep], axis=1)
        coef, *_ = np.linalg.lstsq(design, seconds, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep.pop(int(np.argmin(coef)))
    full = np.zeros(3)
    full[keep] = np.maximum(coef, 0.0)
    predicted = np.stack(columns, axis=1) @ full
    total = float(((seconds - seconds.mean()) ** 2).sum())
    r2 = 1.0 - float(((seconds - predicted) ** 2).sum()) / total if total > 0 else 1.0
    return dict(fixed_s=float(full[0]), per_request_s=float(full[1]), per_token_s=float(full[2]), r2=r2)


# -- the sweep ------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float | None:
    if b > 0:
        return a / b
    return None if a == 0 else math.inf


def targets_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At every swept rate where plain decoding meets fewer than half of the tight SLOs:
    adaserve vs uniform (>= 1.5x attainment, goodput >= uniform) and vs none (>= 2x attainment)."""
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_rate.setdefault(row["rate"], {})[row["policy"]] = row["summary"]
    checks = []
    for rate in sorted(by_rate):
        runs = by_rate[rate]
        if not {"none", "uniform", "adaserve"} <= set(runs):
            continue
        tight_none = runs["none"]["attainment_by_class"]["tight"]
        if tight_none is None or tight_none >= 0.5:
            continue
        ada, uni, none = runs["adaserve"], runs["uniform"], runs["none"]
        vs_uniform = ratio(ada["attainment"], uni["attainment"])
        vs_none = ratio(ada["attainment"], none["attainment"])
        goodput = ratio(ada["goodput_tok_s"], uni["goodput_tok_s"])
        met = dict(
            attainment_vs_uniform=vs_uniform is not None and vs_uniform >= 1.5,
            attainment_vs_none=vs_none is not None and vs_none >= 2.0,
            goodput_vs_uniform=goodput is not None and goodput >= 1.0,
        )
        checks.append(
            dict(
                rate=rate,
                none_tight_attainment=tight_none,
                attainment_vs_uniform=vs_uniform,
                attainment_vs_none=vs_none,
                goodput_vs_uniform=goodput,
                met=met,
                all_met=all(met.values()),
            )
        )
    return checks


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for policy in SELECTABLE:
        mine = sorted((r["rate"], r["summary"]) for r in rows if r["policy"] == policy)
        if not mine:
            continue
        rates = [r for r, _ in mine]
        # Distinct markers and dashes: policies that coincide stay visible.
        style = dict(
            marker="osD^v"[SELECTABLE.index(policy)],
            linestyle=("-", "--", "-.", ":", (0, (1, 3)))[SELECTABLE.index(policy)],
        )
        ax1.plot(rates, [s["attainment"] for _, s in mine], label=policy, **style)
        ax2.plot(rates, [s["goodput_tok_s"] for _, s in mine], label=policy, **style)
    for ax, label in ((ax1, "SLO attainment"), (ax2, "goodput (tokens/s)")):
        ax.set_xscale("log")
        ax.set_xlabel("request rate (requests/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend()
    fig.suptitle(f"{title} ({LABEL})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # step costs in CPU time (step_timer), unshared by other threads
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = dict(
        label=LABEL,
        clock=args.clock,
        step_cost_timer="process CPU time, 1 torch thread" if device.type == "cpu" else "wall time",
        arrival=args.arrival,
        burst_size=args.burst_size if args.arrival == "burst" else None,
        device=str(device),
        policies=args.policies,
        slo_classes=[
            dict(name=n, share=s, tpot_multiple=m)
            for (n, s, _), m in zip(SLO_CLASSES, args.multiples, strict=True)
        ],
        settings={k: getattr(args, k) for k in ("requests", "warm", "max_prompt_tokens", "max_new_tokens")}
        | dict(
            draft_tokens=args.draft_tokens,
            max_spec_tokens=args.max_spec_tokens,
            sit_out_margin=args.sit_out_margin,
            sit_out_min_target_steps=args.sit_out_min_target_steps,
            prefill_chunk=args.prefill_chunk,
            seed=args.seed,
        ),
        results=[],
    )
    total = len(args.models) * len(args.workloads) * len(args.rate_values) * len(args.policies)
    bar = tqdm(total=total, desc="bench_serve", unit="run", file=sys.stderr)
    for model_name in args.models:
        mut = build_model(model_name, device, args.seed)
        cost = None
        for workload in args.workloads:
            loaded, requests = load_requests(workload, mut, args)
            if cost is None and args.cost_fit:
                cost = injected_fit_cost(args.cost_fit, args.cost_source)
            if cost is None and args.cost_points:
                points = sorted(args.cost_points)
                plain = points[0][1] if points[0][0] == 1 else None
                source = "injected (--cost-points)" + (f", {args.cost_source}" if args.cost_source else "")
                cost = dict(points=points, plain_tpot_s=plain, source=source)
                if plain is None:
                    raise SystemExit("--cost-points needs a point at 1 token (the plain TPOT)")
            if cost is None:  # measured once per model, on its first workload
                bar.set_postfix_str(f"{model_name}: measuring step costs")
                cost = measure_step_cost(mut, loaded, args) | dict(source="measured on this machine")
            plain_ms = 1e3 * cost["plain_tpot_s"]
            mean_out = float(np.mean([o.size for _, o in requests]))
            capacity = 1.0 / (mean_out * cost["plain_tpot_s"])  # plain single-stream requests/s
            rates = args.rate_values if args.rates else [m * capacity for m in args.rate_values]
            rows = []
            for k, rate in enumerate(rates):
                rng = np.random.default_rng([args.seed, k])
                classes = slo_classes(len(requests), rng)
                arrivals = Arrivals(
                    arrival_times(len(requests), rate, args.arrival, args.burst_size, rng),
                    classes,
                    [args.multiples[c] * plain_ms for c in classes],
                )
                for policy in args.policies:
                    bar.set_postfix_str(f"{model_name}/{workload} {rate:.3g} req/s {policy}")
                    run = run_once(mut, loaded, policy, arrivals, args, cost, args.clock == "virtual")
                    rows.append(
                        dict(
                            rate=rate,
                            load=rate / capacity,
                            policy=policy,
                            arrivals_s=arrivals.times.tolist(),
                            classes=[SLO_CLASSES[c][0] for c in classes],
                            summary=summarize(run),
                        )
                    )
                    bar.update()
            plot(rows, f"{model_name} / {workload}", args.out / f"{model_name}_{workload}.png")
            report["results"].append(
                dict(
                    model=model_name,
                    model_description=mut.description,
                    workload=workload,
                    trace=loaded.trace,
                    requests=len(requests),
                    mean_output_tokens=mean_out,
                    step_cost=cost,
                    plain_tpot_ms=plain_ms,
                    slo_targets_ms={
                        n: m * plain_ms for (n, _, _), m in zip(SLO_CLASSES, args.multiples, strict=True)
                    },
                    plain_capacity_req_s=capacity,
                    runs=rows,
                    targets=targets_check(rows),
                )
            )
    bar.close()
    path = args.out / "bench_serve.json"
    path.write_text(json.dumps(report, indent=1))
    print_tables(report)
    print(f"wrote {path}")
    return 0


def print_tables(report: dict[str, Any]) -> None:
    for res in report["results"]:
        print(
            f"\n{res['model']} / {res['workload']} ({LABEL}, {report['clock']} clock): plain TPOT "
            f"{res['plain_tpot_ms']:.2f} ms, SLOs "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in res["slo_targets_ms"].items())
        )
        print(
            "| req/s | load | policy | attain | tight | chat | batch | goodput tok/s "
            "| TTFT p50/p99 ms | TPOT p50/p99 ms | TPOT p50 tight/chat/batch | tok/step | sit-outs |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in res["runs"]:
            s = row["summary"]
            c = s["attainment_by_class"]
            print(
                f"| {row['rate']:.3g} | {row['load']:.3g} | {row['policy']} | {s['attainment']:.2f} | "
                + " | ".join("-" if c[n] is None else f"{c[n]:.2f}" for n, _, _ in SLO_CLASSES)
                + f" | {s['goodput_tok_s']:.0f} | {s['ttft_ms_p50']:.1f}/{s['ttft_ms_p99']:.1f} | "
                f"{s['tpot_ms_p50']:.2f}/{s['tpot_ms_p99']:.2f} | "
                + "/".join("-" if t is None else f"{t:.2f}" for t in s["tpot_ms_p50_by_class"].values())
                + f" | {s['tokens_per_step']:.2f} | {s['sit_outs']} |"
            )
        if not res["targets"]:
            print("targets: no swept rate where plain decoding meets fewer than half of the tight SLOs")
        for t in res["targets"]:
            fmt = lambda x: "-" if x is None else f"{x:.2f}x"  # noqa: E731
            print(
                f"targets at {t['rate']:.3g} req/s (plain meets {t['none_tight_attainment']:.0%} of tight): "
                f"attainment vs uniform {fmt(t['attainment_vs_uniform'])} (>= 1.5x), vs none "
                f"{fmt(t['attainment_vs_none'])} (>= 2x), goodput vs uniform "
                f"{fmt(t['goodput_vs_uniform'])} (>= 1x): {'all met' if t['all_met'] else 'not all met'}"
            )


if __name__ == "__main__":
    sys.exit(main())
