"""arctic-inference's own simulator on a shared trace, with arctic's cache and with
``suffixspec.SuffixCache`` dropped in (only its module-level ``SuffixDecodingCache`` changed):
a third, independent check of the tokens-per-step and timing figures of ``bench_cache``.

The trace is tokenized with the replay tool (cached); its first ``--train`` requests fill the
cache, the next ``--eval`` are simulated. Prints, per cache, the simulator's own summary
(``req_speedup``, ``accept_rate``, ``avg_accept_toks``, ``avg_spec_toks``, ``spec_ms_per_tok``,
``update_ms_per_tok``) and how many evaluated requests accept exactly the same tokens.

    ./dev bench bench_simulator [--trace text2sql_spider_dev] [--train 200] [--eval 100] [--tree]
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
from arctic_inference.suffix_decoding import SuffixDecodingCache, simulator

from suffixspec import SuffixCache
from suffixspec.replay.tokenize import default_cache_dir, load_tokenizer, tokenize_trace
from suffixspec.replay.traces import read_trace

WORKLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "workloads"
METRICS = [
    "req_speedup",
    "accept_rate",
    "avg_accept_toks",
    "avg_spec_toks",
    "spec_ms_per_tok",
    "update_ms_per_tok",
]


def frames(trace_name: str, train: int, evals: int, workloads: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    tokenizer = load_tokenizer(workloads / "tokenizers" / "llama3" / "tokenizer.json")
    trace = tokenize_trace(
        read_trace(workloads / f"{trace_name}.jsonl", train + evals), tokenizer, default_cache_dir()
    )
    rows = pd.DataFrame(
        {
            "prompt": [np.asarray(p, dtype=np.int32) for p in trace.prompts()],
            "response": [np.asarray(o, dtype=np.int32) for o in trace.outputs],
        }
    )
    return rows.iloc[train:].reset_index(drop=True), rows.iloc[:train].reset_index(drop=True)


def simulate(
    cache_class: type, evals: pd.DataFrame, train: pd.DataFrame, tree: bool, evict: float
) -> pd.DataFrame:
    simulator.SuffixDecodingCache = cache_class  # the one change: which class the simulator builds
    with contextlib.redirect_stderr(io.StringIO()):
        records = simulator.process_task(
            evals, train, 0, None, None, 0, 64, 0, 1.0, 0.1, tree, True, evict, "oldest", -1
        )
    return pd.DataFrame.from_records(records)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default="text2sql_spider_dev")
    p.add_argument("--workloads", type=Path, default=WORKLOADS)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--eval", type=int, default=100)
    p.add_argument("--tree", action="store_true", help="tree drafts (default: path)")
    p.add_argument("--evict-fraction", type=float, default=0.0)
    args = p.parse_args()
    evals, train = frames(args.trace, args.train, args.eval, args.workloads)
    runs = {
        "arctic": simulate(SuffixDecodingCache, evals, train, args.tree, args.evict_fraction),
        "suffixspec": simulate(SuffixCache, evals, train, args.tree, args.evict_fraction),
    }
    table = pd.concat({name: simulator.results_summary(df, [])[METRICS] for name, df in runs.items()})
    print(f"\n{args.trace}: {args.train} cached + {args.eval} simulated requests, tree={args.tree}")
    print(table.to_string())
    accepted = {name: df.groupby("request_id")["num_accept_toks"].sum() for name, df in runs.items()}
    same = int((accepted["arctic"] == accepted["suffixspec"]).sum())
    print(f"requests accepting the same number of tokens: {same} of {len(accepted['arctic'])}")


if __name__ == "__main__":
    main()
