"""The plain-decode stage of the GPU check (`gpu_check.py`, stage `decode`): one decode step of
the Llama-3.2-1B and Llama-3.1-8B architectures (random weights, bf16) measured by each plain
baseline of `bench_e2e` (HF eager loop, `model.generate`, `model.generate` with a static cache and
`torch.compile`, suffixspec's CUDA-graph decode), beside the step's weight-read limit.

Each point decodes `new_tokens` teacher-forced random tokens after a random prompt of `prompt`
tokens, twice: the second run is timed (the first pays compilation, graph capture and library
plans, and is kept as `cold_step_s`). `--dry-run`: the tiny CPU model and small sizes (the graph
baseline then runs its step uncaptured; compiling is skipped, it takes minutes on a CPU and the
bench's own test covers it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench_e2e import PlainBaselines, build_model
from roofline import weight_bytes

#: (model, batch, baselines) of a GPU run, in order (the budget cuts the tail): the CUDA-graph
#: and eager steps of both models first, compiling last (the 1B only, as the issue's quick check
#: asks: compiling the 8B takes minutes).
POINTS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("1b", 1, ("loop", "generate", "graph")),
    ("1b", 8, ("loop", "generate", "graph")),
    ("8b", 1, ("loop", "graph")),
    ("8b", 8, ("loop", "graph")),
    ("1b", 1, ("compiled",)),
)
DRY_POINTS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("tiny", 1, ("loop", "generate", "graph")),
    ("tiny", 3, ("loop", "graph")),
)
#: The issue's target for a plain decode step: at most this multiple of its weight-read time.
STEP_TARGET = 1.3


def group(
    batch: int, prompt: int, new_tokens: int, vocab: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(3, vocab, prompt).astype(np.int32), rng.integers(3, vocab, new_tokens).astype(np.int32))
        for _ in range(batch)
    ]


def decode_rows(
    rows: list[dict[str, Any]],
    *,
    dry_run: bool,
    bandwidth: float | None,
    time_left: Callable[[], float],
    log: Callable[[str], None],
    save: Callable[[], None] = lambda: None,
    prompt: int = 512,
    new_tokens: int = 64,
) -> None:
    """Appends one row per (model, batch, baseline) to `rows`, calling `save` after each (a run
    killed at its time cap keeps what it measured); rows after the budget is spent say `skipped`."""
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:
        prompt, new_tokens = 24, 8
    current: tuple[str, Any, PlainBaselines] | None = None
    for name, batch, baselines in DRY_POINTS if dry_run else POINTS:
        vocab = 256 if name == "tiny" else 128256
        for baseline in baselines:
            row: dict[str, Any] = {"model": name, "batch": batch, "baseline": baseline}
            row.update(prompt=prompt, new_tokens=new_tokens)
            rows.append(row)
            if time_left() <= 0:
                row["skipped"] = "time budget spent"
                continue
            try:
                if current is None or current[0] != name:
                    current = model = plain = None  # free the previous model (and its static caches) first
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    torch.manual_seed(0)
                    model, description = build_model(name, vocab, device)
                    log(f"decode: {description} on {device}")
                    current = (name, model, PlainBaselines(model, device, max_len=prompt + new_tokens))
                _, model, plain = current
                row["weight_bytes"] = weight_bytes(model)
                row["weight_read_s"] = row["weight_bytes"] / bandwidth if bandwidth else None
                requests = group(batch, prompt, new_tokens, vocab, seed=batch)
                start = time.monotonic()
                cold, timed = (plain.run(baseline, requests) for _ in range(2))
                row["seconds"] = round(time.monotonic() - start, 2)
            except Exception as exc:  # one baseline's failure must not end the stage
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"decode: {name} b{batch} {baseline}: {row['error']}")
                save()
                continue
            row["step_s"] = timed.decode_s / timed.steps
            row["cold_step_s"] = cold.decode_s / cold.steps
            row["tok_s"] = timed.decode_tokens / timed.decode_s
            if baseline == "graph":
                row["captured"] = plain.graph_captured
            if row["weight_read_s"]:
                row["step_over_weight_read"] = row["step_s"] / row["weight_read_s"]
                row["target"] = STEP_TARGET
            log(summary(row))
            save()


def summary(row: dict[str, Any]) -> str:
    head = f"decode {row['model']} b{row.get('batch', '-')} {row.get('baseline', '')}"
    if "step_s" not in row:
        return f"{head}: {row.get('skipped') or row.get('error')}"
    text = f"{head}: {row['step_s'] * 1e3:.2f} ms/step (cold {row['cold_step_s'] * 1e3:.2f})"
    text += f", {row['tok_s']:.0f} tok/s"
    limit = row.get("step_over_weight_read")
    if limit is not None:
        text += f", {limit:.2f}x the weight-read limit ({row['weight_read_s'] * 1e3:.2f} ms)"
    return text
