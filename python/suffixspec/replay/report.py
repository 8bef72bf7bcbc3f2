"""The replay report: a terminal table and a JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "format_table", "write_json"]

Row = Mapping[str, Any]

#: (header, row key, format) of the terminal table.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("workload", "workload", "{}"),
    ("method", "method", "{}"),
    ("reqs", "requests", "{:d}"),
    ("tok/step", "tokens_per_step", "{:.2f}"),
    ("accept", "acceptance_rate", "{:.1%}"),
    ("draft", "mean_draft", "{:.1f}"),
    ("prop us", "propose_us_mean", "{:.1f}"),
    ("p99 us", "propose_us_p99", "{:.1f}"),
    ("us/tok", "propose_us_per_token_mean", "{:.2f}"),
    ("app us/tok", "observe_us_per_token_mean", "{:.2f}"),
    ("mem MiB", "memory_bytes", "mib"),
    ("B/tok", "bytes_per_cached_token", "{:.0f}"),
    ("speedup", "speedup", "{:.2f}x"),
)


def _cell(value: Any, fmt: str) -> str:
    if fmt == "mib":
        return f"{value / 2**20:.1f}"
    return fmt.format(value)


def format_table(rows: Sequence[Row], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """Rows as an aligned text table (text columns left-aligned, numbers right-aligned)."""
    cells = [[_cell(row[key], fmt) for _, key, fmt in columns] for row in rows]
    headers = [h for h, _, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    left = [fmt == "{}" for _, _, fmt in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if lft else v.rjust(w) for v, w, lft in zip(values, widths, left, strict=True)
        )

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    return "\n".join(out)


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Writes ``payload`` as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
