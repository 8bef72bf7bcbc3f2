"""The plain-decode stage of the GPU check (`gpu_check.py`, stage `decode`): one decode step of
the Llama-3.2-1B and Llama-3.1-8B architectures (random weights, bf16) measured by each plain
baseline of `bench_e2e` (HF eager loop, `model.generate`, `model.generate` with a static cache and
`torch.compile`, suffixspec's CUDA-graph decode), beside the step's weight-read limit; and the
captured fixed-shape verification step (`GraphDecoder.verify`, a 64-node tree per row) beside
the captured decode step and its own compute roofline.

Each point decodes `new_tokens` teacher-forced random tokens after a random prompt of `prompt`
tokens, twice: the second run is timed (the first pays compilation, graph capture and library
plans, and is kept as `cold_step_s`). `--dry-run`: the tiny CPU model and small sizes (the graph
steps then run uncaptured; compiling is skipped, it takes minutes on a CPU and the bench's own
test covers it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench_e2e import PlainBaselines, Timing, _sync, build_model
from roofline import weight_bytes

#: The verification step measured: a tree of this many nodes per row (root included), four chains.
VERIFY_NODES = 64
VERIFY_REPEATS = 20


@dataclass(frozen=True)
class Point:
    model: str
    batch: int
    baselines: tuple[str, ...]  # bench_e2e's plain baselines, or "graph-verify"
    prompt: int | None = None  # None: the stage's prompt length
    cudnn_sdp: bool | None = None  # diagnostic: SDPA's cuDNN backend forced on/off (None: as is)


#: The points of a GPU run, in order (the budget cuts the tail): the CUDA-graph and eager steps of
#: both models first; the captured 64-node verification of the 8B at a 4k context beside its
#: captured decode step; then a diagnostic of the first-sight cost of the eager loop (prompt
#: lengths not run before, so every shape is new in the first run: cold vs timed step with SDPA's
#: cuDNN backend on and off); compiling last (the 1B only, as the issue's quick check asks:
#: compiling the 8B takes minutes).
POINTS = (
    Point("1b", 1, ("loop", "generate", "graph")),
    Point("1b", 8, ("loop", "generate", "graph")),
    Point("8b", 1, ("loop", "graph")),
    Point("8b", 8, ("loop", "graph")),
    Point("8b", 1, ("graph", "graph-verify"), prompt=4096),
    Point("8b", 8, ("graph", "graph-verify"), prompt=4096),
    Point("1b", 8, ("loop",), prompt=600, cudnn_sdp=True),
    Point("1b", 8, ("loop",), prompt=700, cudnn_sdp=False),
    Point("1b", 1, ("compiled",)),
)
DRY_POINTS = (
    Point("tiny", 1, ("loop", "generate", "graph")),
    Point("tiny", 3, ("loop", "graph")),
    Point("tiny", 2, ("graph", "graph-verify"), prompt=40),
    Point("tiny", 3, ("loop",), prompt=30, cudnn_sdp=False),
)
#: The issue's target for a plain decode step (x its weight-read time) and for a verification
#: step (x max(decode step, the verification's compute roofline)).
STEP_TARGET = 1.3


def group(
    batch: int, prompt: int, new_tokens: int, vocab: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(3, vocab, prompt).astype(np.int32), rng.integers(3, vocab, new_tokens).astype(np.int32))
        for _ in range(batch)
    ]


def chain_tree(batch: int, nodes: int) -> torch.Tensor:
    """bool [B, n, n] ancestor mask of four chains under the root (a typical suffix-tree draft)."""
    parents = [-1] + [0 if i <= 4 else i - 4 for i in range(1, nodes)]
    mask = torch.eye(nodes, dtype=torch.bool)
    for i in range(nodes):
        j = parents[i]
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask.expand(batch, nodes, nodes)


def graph_verify(decoder: Any, requests: list[tuple[np.ndarray, np.ndarray]], device: torch.device) -> Timing:
    """`VERIFY_REPEATS` captured verification steps of a `VERIFY_NODES`-node tree per row after the
    prefill, each read back (argmax) as the speculative loop does; decode_s = their time."""
    batch = len(requests)
    decoder.start([p for p, _ in requests])
    tokens = torch.randint(3, 200, (batch, VERIFY_NODES), device=device)
    tree = chain_tree(batch, VERIFY_NODES).to(device)
    decoder.verify(tokens, tree).argmax(-1).cpu()  # the first call captures this shape
    _sync(device)
    start = time.perf_counter()
    for _ in range(VERIFY_REPEATS):
        decoder.verify(tokens, tree).argmax(-1).cpu()
    _sync(device)
    elapsed = time.perf_counter() - start
    return Timing(0.0, elapsed, 0, batch * VERIFY_REPEATS, VERIFY_REPEATS)


def verify_flops(model: Any, batch: int, context: int, nodes: int) -> float:
    """FLOPs of one verification forward: the GEMMs (2 x non-embedding parameters per token) and
    the attention (4 x heads x head dim x attended keys per token and layer)."""
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    params = sum(p.numel() for p in model.parameters()) - embedding
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * (context + nodes)
    return batch * nodes * (2 * params + attention)


def decode_rows(
    rows: list[dict[str, Any]],
    *,
    dry_run: bool,
    bandwidth: float | None,
    flops: float | None = None,
    time_left: Callable[[], float],
    log: Callable[[str], None],
    save: Callable[[], None] = lambda: None,
    prompt: int = 512,
    new_tokens: int = 64,
) -> None:
    """Appends one row per (point, baseline) to `rows`, calling `save` after each (a run killed at
    its time cap keeps what it measured); rows after the budget is spent say `skipped`."""
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:
        prompt, new_tokens = 24, 8
    current: tuple[str, Any, dict[int, PlainBaselines]] | None = None
    for point in DRY_POINTS if dry_run else POINTS:
        name, batch = point.model, point.batch
        vocab = 256 if name == "tiny" else 128256
        length = point.prompt or prompt
        for baseline in point.baselines:
            row: dict[str, Any] = {"model": name, "batch": batch, "baseline": baseline}
            row.update(prompt=length, new_tokens=0 if baseline == "graph-verify" else new_tokens)
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
                    current = (name, model, {})
                _, model, plains = current
                # One set of static caches per context length: a graph step attends to all of them.
                max_len = length + max(new_tokens, VERIFY_NODES)
                plain = plains.setdefault(max_len, PlainBaselines(model, device, max_len=max_len))
                row["weight_bytes"] = weight_bytes(model)
                row["weight_read_s"] = row["weight_bytes"] / bandwidth if bandwidth else None
                requests = group(batch, length, new_tokens, vocab, seed=batch)
                start = time.monotonic()
                with cudnn_sdp(point.cudnn_sdp):
                    if baseline == "graph-verify":
                        runs = [graph_verify(plain.graph_decoder(), requests, device) for _ in range(2)]
                    else:
                        runs = [plain.run(baseline, requests) for _ in range(2)]
                cold, timed = runs
                row["seconds"] = round(time.monotonic() - start, 2)
            except Exception as exc:  # one baseline's failure must not end the stage
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"decode: {name} b{batch} {baseline}: {row['error']}")
                save()
                continue
            row["step_s"] = timed.decode_s / max(timed.steps, 1)
            row["cold_step_s"] = cold.decode_s / max(cold.steps, 1)
            if baseline == "graph-verify":
                row["captured"] = bool(plain.graph_decoder().captured_verifiers)
                add_verify_targets(row, rows, model, flops)
                log(summary(row))
                save()
                continue
            row["tok_s"] = timed.decode_tokens / timed.decode_s if timed.decode_s else 0.0
            if baseline == "graph":
                row["captured"] = plain.graph_captured
            if row["weight_read_s"]:
                row["step_over_weight_read"] = row["step_s"] / row["weight_read_s"]
                row["target"] = STEP_TARGET
            log(summary(row))
            save()


def add_verify_targets(
    row: dict[str, Any], rows: list[dict[str, Any]], model: Any, flops: float | None
) -> None:
    """The verification step against max(the captured decode step at the same point, its compute
    roofline): the issue's target is <= 1.3x."""
    row["nodes"] = VERIFY_NODES
    row["flops"] = verify_flops(model, row["batch"], row["prompt"], VERIFY_NODES)
    row["compute_roofline_s"] = row["flops"] / flops if flops else None
    decode = next(
        (
            r.get("step_s")
            for r in rows
            if r["baseline"] == "graph"
            and (r["model"], r["batch"], r["prompt"]) == (row["model"], row["batch"], row["prompt"])
        ),
        None,
    )
    row["decode_step_s"] = decode
    floor = max(x for x in (decode, row["compute_roofline_s"], 0.0) if x is not None)
    if floor:
        row["verify_over_floor"] = row["step_s"] / floor
        row["target"] = STEP_TARGET


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
    if row.get("tok_s") is not None:
        text += f", {row['tok_s']:.0f} tok/s"
    if row.get("step_over_weight_read") is not None:
        limit = row["weight_read_s"] * 1e3
        text += f", {row['step_over_weight_read']:.2f}x the weight-read limit ({limit:.2f} ms)"
    if row.get("verify_over_floor") is not None:
        text += f", {row['verify_over_floor']:.2f}x max(decode step, compute roofline)"
    return text
