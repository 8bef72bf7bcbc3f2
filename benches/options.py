"""Command-line helpers the benchmarks share: comma-separated lists and size presets."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def csv_items(text: Any) -> list[str]:
    """The non-empty, stripped items of a comma-separated option (``"a, b,"`` -> ``["a", "b"]``)."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def fill_sizes(args: argparse.Namespace, sizes: Mapping[str, tuple[Any, Any]], small: bool) -> None:
    """Gives every size option left unset its preset: ``sizes`` maps an option's name to its
    (full run, small run) values; ``small`` picks the second (``--quick``, ``--tiny``)."""
    for name, (full, reduced) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, reduced if small else full)
