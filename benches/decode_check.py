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

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench_e2e import PlainBaselines, build_model
from roofline import weight_bytes


@dataclass(frozen=True)
class Point:
    model: str
    batch: int
    baselines: tuple[str, ...]
    prompt: int | None = None  # None: the stage's prompt length
    cudnn_sdp: bool | None = None  # diagnostic: SDPA's cuDNN backend forced on/off (None: as is)


#: The points of a GPU run, in order (the budget cuts the tail): the CUDA-graph and eager steps of
#: both models first; then a diagnostic of the first-sight cost of the eager loop (prompt lengths
#: not run before, so every shape is new in the first run: cold vs timed step with SDPA's cuDNN
#: backend on and off); compiling last (the 1B only, as the issue's quick check asks: compiling
#: the 8B takes minutes).
POINTS = (
    Point("1b", 1, ("loop", "generate", "graph")),
    Point("1b", 8, ("loop", "generate", "graph")),
    Point("8b", 1, ("loop", "graph")),
    Point("8b", 8, ("loop", "graph")),
    Point("1b", 8, ("loop",), prompt=600, cudnn_sdp=True),
    Point("1b", 8, ("loop",), prompt=700, cudnn_sdp=False),
    Point("1b", 1, ("compiled",)),
)
DRY_POINTS = (
    Point("tiny", 1, ("loop", "generate", "graph")),
    Point("tiny", 3, ("loop", "graph")),
    Point("tiny", 3, ("loop",), prompt=30, cudnn_sdp=False),
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
    points = DRY_POINTS if dry_run else POINTS
    max_len = max(p.prompt or prompt for p in points) + new_tokens
    current: tuple[str, Any, PlainBaselines] | None = None
    for point in points:
        name, batch = point.model, point.batch
        vocab = 256 if name == "tiny" else 128256
        length = point.prompt or prompt
        for baseline in point.baselines:
            row: dict[str, Any] = {"model": name, "batch": batch, "baseline": baseline}
            row.update(prompt=length, new_tokens=new_tokens)
            if point.cudnn_sdp is not None:
                row["cudnn_sdp"] = point.cudnn_sdp
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
                    current = (name, model, PlainBaselines(model, device, max_len=max_len))
                _, model, plain = current
                row["weight_bytes"] = weight_bytes(model)
                row["weight_read_s"] = row["weight_bytes"] / bandwidth if bandwidth else None
                requests = group(batch, length, new_tokens, vocab, seed=batch)
                start = time.monotonic()
                with cudnn_sdp(point.cudnn_sdp):
                    cold, timed = (plain.run(baseline, requests) for _ in range(2))
                row["seconds"] = round(time.monotonic() - start, 2)
            except Exception as exc:  # one baseline's failure must not end the stage
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"decode: {name} b{batch} {baseline}: {row['error']}")
                save()
                continue
            row["step_s"] = timed.decode_s / max(timed.steps, 1)
            row["cold_step_s"] = cold.decode_s / max(cold.steps, 1)
            row["tok_s"] = timed.decode_tokens / timed.decode_s if timed.decode_s else 0.0
            if baseline == "graph":
                row["captured"] = plain.graph_captured
            if row["weight_read_s"]:
                row["step_over_weight_read"] = row["step_s"] / row["weight_read_s"]
                row["target"] = STEP_TARGET
            log(summary(row))
            save()


@contextlib.contextmanager
def cudnn_sdp(enabled: bool | None) -> Iterator[None]:
    """SDPA's cuDNN backend switched on or off for the block (None: left as it is)."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    if enabled is not None:
        torch.backends.cuda.enable_cudnn_sdp(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def summary(row: dict[str, Any]) -> str:
    head = f"decode {row['model']} b{row['batch']} prompt {row['prompt']} {row['baseline']}"
    if "cudnn_sdp" in row:
        head += f" (SDPA cuDNN {'on' if row['cudnn_sdp'] else 'off'})"
    if "step_s" not in row:
        return f"{head}: {row.get('skipped') or row.get('error')}"
    text = f"{head}: {row['step_s'] * 1e3:.2f} ms/step (cold {row['cold_step_s'] * 1e3:.2f})"
    text += f", {row['tok_s']:.0f} tok/s"
    limit = row.get("step_over_weight_read")
    if limit is not None:
        text += f", {limit:.2f}x the weight-read limit ({row['weight_read_s'] * 1e3:.2f} ms)"
    return text
