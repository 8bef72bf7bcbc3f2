"""``suffixspec replay``: what would speculation buy on this workload? (model-free)"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from suffixspec.config import SpecConfig
from suffixspec.errors import InvalidParameterError, SuffixSpecError
from suffixspec.replay.engine import replay_all
from suffixspec.replay.methods import DEFAULT_MAX_NGRAM, METHODS, available_methods, make_method
from suffixspec.replay.metrics import VerifyCost, summarize
from suffixspec.replay.report import format_table, write_json
from suffixspec.replay.sweep import SWEEP_GRID, Evaluator, recommend, sweep
from suffixspec.replay.tokenize import TokenizedTrace, default_cache_dir, load_tokenizer, tokenize_trace
from suffixspec.replay.traces import read_trace

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``suffixspec replay``."""
    d = SpecConfig()
    parser.add_argument("traces", nargs="+", type=Path, help="JSONL trace files (one request per line)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (needed unless traces hold token ids)")
    parser.add_argument("--limit", type=int, help="replay only the first N requests of each trace")
    parser.add_argument("--warmup", type=Path, help="trace fed to each method's cache before the replay")
    parser.add_argument("--warmup-limit", type=int, help="use only the first N requests of --warmup")
    parser.add_argument(
        "--methods",
        help=f"comma-separated, from: {', '.join(METHODS)} (default: those of "
        "suffixspec, suffixspec-arctic, suffixspec-tree, arctic, prompt-lookup that are installed)",
    )
    g = parser.add_argument_group("speculation settings (shared by the methods)")
    g.add_argument("--max-depth", type=int, default=d.max_depth, help="suffix tree depth (%(default)s)")
    g.add_argument(
        "--max-spec-tokens", type=int, default=d.max_spec_tokens, help="longest draft (%(default)s)"
    )
    g.add_argument(
        "--max-spec-factor",
        type=float,
        default=d.max_spec_factor,
        help="drafts at most FACTOR * match length + OFFSET tokens (%(default)s)",
    )
    g.add_argument("--max-spec-offset", type=float, default=d.max_spec_offset, help="(%(default)s)")
    g.add_argument(
        "--min-token-prob",
        type=float,
        default=d.min_token_prob,
        help="drop draft tokens less frequent than this after their prefix (%(default)s)",
    )
    g.add_argument(
        "--max-tree-nodes", type=int, default=d.max_tree_nodes, help="node budget of tree mode (%(default)s)"
    )
    g.add_argument(
        "--min-match-len",
        type=int,
        default=d.min_match_len,
        help="drafts matched on fewer context tokens are skipped, as suffixspec's own loop does; "
        "0 reproduces arctic-inference's behaviour (%(default)s)",
    )
    g.add_argument(
        "--max-ngram", type=int, default=DEFAULT_MAX_NGRAM, help="prompt lookup: longest n-gram (%(default)s)"
    )
    c = parser.add_argument_group("implied speedup")
    c.add_argument(
        "--verify-cost",
        default="linear:0.02",
        help="cost of verifying k draft tokens relative to one decode step: 'linear:A' = 1 + A*k, "
        "or measured points 'table:0=1,16=1.1,64=1.5' (default: %(default)s)",
    )
    c.add_argument("--decode-ms", type=float, help="time of one decode step: adds proposal time to the cost")
    s = parser.add_argument_group("sweeps")
    s.add_argument("--sweep", action="store_true", help="sweep " + ", ".join(SWEEP_GRID) + " one at a time")
    s.add_argument("--recommend", action="store_true", help="search the settings with the best speedup")
    s.add_argument("--sweep-method", default="suffixspec-arctic", help="method swept (default: %(default)s)")
    o = parser.add_argument_group("output")
    o.add_argument("--out", type=Path, help="directory for report.json and plots")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--no-cache", action="store_true", help="do not cache tokenized traces on disk")


def _params(args: argparse.Namespace) -> SpecConfig:
    return SpecConfig(
        max_depth=args.max_depth,
        max_spec_tokens=args.max_spec_tokens,
        max_spec_factor=args.max_spec_factor,
        max_spec_offset=args.max_spec_offset,
        min_token_prob=args.min_token_prob,
        max_tree_nodes=args.max_tree_nodes,
        min_match_len=args.min_match_len,
    )


def _load(path: Path, limit: int | None, tokenizer: Any, cache_dir: Path | None) -> TokenizedTrace:
    trace = read_trace(path, limit)
    if tokenizer is None and trace.needs_tokenizer():
        raise InvalidParameterError(f"{path} holds text: pass --tokenizer PATH/tokenizer.json")
    return tokenize_trace(trace, tokenizer, cache_dir)


def run(args: argparse.Namespace) -> int:
    """Runs the replay; returns the exit status (2 on bad input, with the reason on stderr)."""
    try:
        return _run(args)
    except SuffixSpecError as e:
        print(f"suffixspec replay: error: {e}", file=sys.stderr)
        return 2


def _check_out_dir(out: Path) -> None:
    """Checked before the replay runs, not after: a directory that exists or can be created."""
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidParameterError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InvalidParameterError(f"--out {out}: the directory is not writable")


def _run(args: argparse.Namespace) -> int:
    if args.out:
        _check_out_dir(args.out)
    params = _params(args)
    verify_cost = VerifyCost.parse(args.verify_cost, args.decode_ms)
    methods = available_methods(args.methods.split(",") if args.methods else None)
    if args.sweep or args.recommend:
        available_methods([args.sweep_method])
    progress = not args.no_progress
    cache_dir = None if args.no_cache else default_cache_dir()
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    warmup = _load(args.warmup, args.warmup_limit, tokenizer, cache_dir) if args.warmup else None

    rows: list[dict[str, Any]] = []
    sweeps: dict[str, list[dict[str, Any]]] = {}
    recommendations: dict[str, dict[str, Any]] = {}
    for path in args.traces:
        trace = _load(path, args.limit, tokenizer, cache_dir)
        proposers = [make_method(name, params, args.max_ngram) for name in methods]
        rows += [summarize(r, verify_cost) for r in replay_all(trace, proposers, warmup, progress)]
        if args.sweep or args.recommend:
            evaluate = Evaluator(trace, args.sweep_method, verify_cost, warmup, progress)
            if args.sweep:
                sweeps[trace.name] = sweep(evaluate, params)
            if args.recommend:
                recommendations[trace.name] = recommend(evaluate, params).to_json()

    print(format_table(rows))
    print(f"(speedup: output tokens / total verification cost, cost model {verify_cost.spec})")
    for workload, rec in recommendations.items():
        print(_recommendation_line(workload, args.sweep_method, rec))
    if args.out:
        return _write_outputs(args, params, verify_cost, methods, rows, sweeps, recommendations)
    return 0


def _recommendation_line(workload: str, method: str, rec: dict[str, Any]) -> str:
    p, s, b = rec["params"], rec["summary"], rec["baseline"]
    flags = " ".join(f"--{k.replace('_', '-')} {p[k]:g}" for k in SWEEP_GRID)
    return (
        f"recommended for {workload} ({method}): {flags} -> speedup {s['speedup']:.2f}x, "
        f"{s['tokens_per_step']:.2f} tok/step (given settings: {b['speedup']:.2f}x, "
        f"{b['tokens_per_step']:.2f} tok/step)"
    )


def _write_outputs(
    args: argparse.Namespace,
    params: SpecConfig,
    verify_cost: VerifyCost,
    methods: list[str],
    rows: list[dict[str, Any]],
    sweeps: dict[str, list[dict[str, Any]]],
    recommendations: dict[str, dict[str, Any]],
) -> int:
    settings = {
        "traces": [str(t) for t in args.traces],
        "tokenizer": str(args.tokenizer) if args.tokenizer else None,
        "limit": args.limit,
        "warmup": str(args.warmup) if args.warmup else None,
        "methods": methods,
        "params": asdict(params),
        "verify_cost": verify_cost.spec,
        "decode_ms": verify_cost.decode_ms,
    }
    payload = {"settings": settings, "results": rows, "sweeps": sweeps, "recommendations": recommendations}
    written = [write_json(args.out / "report.json", payload)]
    try:
        from suffixspec.replay.plots import plot_sweep, plot_tokens_per_step

        written.append(plot_tokens_per_step(rows, args.out / "tokens_per_step.png"))
        if sweeps:
            written.append(plot_sweep(sweeps, args.out / "sweep.png"))
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "matplotlib":
            raise
        print(f"wrote {written[0]}")  # the report stays; only the plots are missing
        print(
            f"suffixspec replay: error: the plots need {e.name}: pip install 'suffixspec[replay]'",
            file=sys.stderr,
        )
        return 2
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
