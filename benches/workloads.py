"""Where the benchmarks find the shared traces (read by path from ``../shared/workloads``, never
copied into the project) and the tokenizer they were recorded with."""

from __future__ import annotations

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
