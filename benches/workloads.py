"""Where the benchmarks find the shared traces (read by path from ``../shared/workloads``, never
copied into the project) and the tokenizer they were recorded with."""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``../shared/workloads`` beside the checkout.
DEFAULT_WORKLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "workloads"


def tokenizer_path(workloads: Path, override: Path | None = None) -> Path:
    """The traces' tokenizer (Llama 3's, shipped beside them), unless ``override`` is given."""
    return override or workloads / "tokenizers" / "llama3" / "tokenizer.json"


def trace_paths(workloads: Path, only: str | None = None) -> list[Path]:
    """The ``*.jsonl`` traces in ``workloads``, sorted; ``only``: comma-separated names to keep."""
    paths = sorted(workloads.glob("*.jsonl"))
    if only:
        wanted = set(only.split(","))
        paths = [p for p in paths if p.stem in wanted]
    return paths


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """The options that pick the traces, their tokenizer and how many requests of each are read
    (``--workloads``, ``--tokenizer``, ``--only``, ``--limit``, ``--agentic-limit``): the same in
    every benchmark that replays all the shared traces."""
    p.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS, help="directory of *.jsonl traces")
    p.add_argument("--tokenizer", type=Path, help="default: WORKLOADS/tokenizers/llama3/tokenizer.json")
    p.add_argument("--only", help="comma-separated workload names (file names without .jsonl)")
    p.add_argument("--limit", type=int, default=300, help="requests read per single-turn workload")
    p.add_argument("--agentic-limit", type=int, default=800, help="requests read per agentic_* workload")
