"""Plots of a replay report (matplotlib, imported on first use, drawn off-screen)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_sweep", "plot_tokens_per_step"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_tokens_per_step(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Grouped bars: tokens per step of each method, grouped by workload."""
    plt = _pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    value = {(r["workload"], r["method"]): r["tokens_per_step"] for r in rows}
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(workloads))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(workloads) * max(1, len(methods)) / 2), 4.5))
    for i, method in enumerate(methods):
        heights = [value.get((w, method), 0.0) for w in workloads]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, workloads, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("tokens per verification step")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=8)
    ax.set_title("Tokens per step by workload and method")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_sweep(sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike[str]) -> Path:
    """One panel per swept parameter: tokens per step (solid) and implied speedup (dashed)
    against the parameter, one line per workload. ``sweeps`` maps workload -> sweep records."""
    plt = _pyplot()
    params = list(dict.fromkeys(rec["param"] for recs in sweeps.values() for rec in recs))
    fig, axes = plt.subplots(1, max(len(params), 1), figsize=(4.2 * max(len(params), 1), 4), squeeze=False)
    for ax, param in zip(axes[0], params, strict=False):
        for i, (workload, records) in enumerate(sweeps.items()):
            points = [r for r in records if r["param"] == param]
            xs = [r["value"] for r in points]
            color = f"C{i % 10}"
            ax.plot(xs, [r["summary"]["tokens_per_step"] for r in points], "o-", color=color, label=workload)
            ax.plot(xs, [r["summary"]["speedup"] for r in points], "s--", color=color, alpha=0.6)
        ax.set_xlabel(param)
        if param == "max_depth":
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("tokens per step (solid), speedup (dashed)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Parameter sweep")
    fig.tight_layout()
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
