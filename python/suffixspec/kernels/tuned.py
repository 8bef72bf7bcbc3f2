"""The kernel's default variant and split-K factor per shape, from a measured sweep.

A call without ``candidate=`` takes the choice of the nearest measured point of the same layout
and head dim (nearest on a log scale in each of: query rows per KV head = GQA group x tree
nodes, (request, KV head) pairs = batch x KV heads, and prefix length); the autotuning sweep of
``benches/gpu_check.py`` still tries every candidate and overrides nothing here.

Source: the third H200 run (2026-11-28 21:05 UTC, ``benches/gpu_check.py --reduced`` report.json
``best[]``, all five variants w4/w8/q4/l4/l8; 32 query / 8 KV heads, bf16, 132 SMs; split counts
are absolute, so they fit that SM count).
Regenerate from a new report's ``best[]`` rows (rows = 4 x nodes, groups = 8 x batch there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TUNED", "TunedPoint", "nearest_point"]


@dataclass(frozen=True)
class TunedPoint:
    """One measured point: its layout, head dim and shape, and the fastest candidate there."""

    layout: str  # "contiguous" or "paged"
    head_dim: int
    rows: int  # query rows per KV head (GQA group x tree nodes)
    groups: int  # batch x KV heads
    prefix: int
    variant: str
    num_splits: int | None  # None: the launch heuristic's factor


TUNED: tuple[TunedPoint, ...] = (
    TunedPoint("contiguous", 128, 64, 8, 4096, "l4", 33),
    TunedPoint("contiguous", 128, 256, 8, 4096, "w8", 16),
    TunedPoint("contiguous", 128, 512, 8, 4096, "l4", 4),
    TunedPoint("contiguous", 128, 64, 8, 32768, "l8", 16),
    TunedPoint("contiguous", 128, 256, 8, 32768, "l4", 8),
    TunedPoint("contiguous", 128, 512, 8, 32768, "l4", 4),
    TunedPoint("contiguous", 128, 64, 64, 4096, "l4", 4),
    TunedPoint("contiguous", 128, 256, 64, 4096, "l4", 1),
    TunedPoint("contiguous", 128, 512, 64, 4096, "l4", None),
    TunedPoint("contiguous", 128, 64, 64, 32768, "l4", 4),
    TunedPoint("contiguous", 128, 256, 64, 32768, "l4", 1),
    TunedPoint("contiguous", 128, 512, 64, 32768, "l4", None),
    TunedPoint("contiguous", 128, 64, 512, 4096, "l4", None),
    TunedPoint("contiguous", 128, 256, 512, 4096, "l4", None),
    TunedPoint("contiguous", 128, 512, 512, 4096, "l4", None),
    TunedPoint("contiguous", 128, 64, 512, 32768, "l4", None),
    TunedPoint("contiguous", 128, 256, 512, 32768, "l8", None),
    TunedPoint("contiguous", 128, 512, 512, 32768, "l4", None),
    TunedPoint("contiguous", 64, 256, 64, 16384, "l8", 1),
    TunedPoint("paged", 128, 64, 8, 4096, "l8", 33),
    TunedPoint("paged", 128, 256, 8, 4096, "w8", None),
    TunedPoint("paged", 128, 512, 8, 4096, "l4", 4),
    TunedPoint("paged", 128, 64, 8, 32768, "l4", None),
    TunedPoint("paged", 128, 256, 8, 32768, "l8", 8),
    TunedPoint("paged", 128, 512, 8, 32768, "l8", 4),
    TunedPoint("paged", 128, 64, 64, 4096, "l4", 4),
    TunedPoint("paged", 128, 256, 64, 4096, "l8", 1),
    TunedPoint("paged", 128, 512, 64, 4096, "l8", None),
    TunedPoint("paged", 128, 64, 64, 32768, "l4", 8),
    TunedPoint("paged", 128, 256, 64, 32768, "l8", 4),
    TunedPoint("paged", 128, 512, 64, 32768, "l8", None),
    TunedPoint("paged", 128, 64, 512, 4096, "l4", None),
    TunedPoint("paged", 128, 256, 512, 4096, "l8", None),
    TunedPoint("paged", 128, 512, 512, 4096, "l8", None),
    TunedPoint("paged", 128, 64, 512, 32768, "l4", None),
    TunedPoint("paged", 128, 256, 512, 32768, "l8", None),
    TunedPoint("paged", 128, 512, 512, 32768, "l8", None),
    TunedPoint("paged", 64, 256, 64, 16384, "l8", 4),
)


def _log_distance(point: TunedPoint, rows: int, groups: int, prefix: int) -> float:
    def axis(a: int, b: int) -> float:
        return abs(math.log2(max(a, 1)) - math.log2(max(b, 1)))

    return axis(point.rows, rows) + axis(point.groups, groups) + axis(point.prefix, prefix)


def nearest_point(
    *, layout: str, head_dim: int, rows: int, groups: int, prefix: int, table: tuple[TunedPoint, ...] = TUNED
) -> TunedPoint | None:
    """The measured choice nearest to this shape (same layout; same head dim where one was
    measured, else any), or None when the table has nothing for the layout."""
    same_layout = [p for p in table if p.layout == layout]
    same_dim = [p for p in same_layout if p.head_dim == head_dim] or same_layout
    if not same_dim:
        return None
    return min(same_dim, key=lambda p: _log_distance(p, rows, groups, prefix))
