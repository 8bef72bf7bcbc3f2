"""The one-command GPU check: device facts, the GPU test suite, and the tree-attention autotuning
sweep (contiguous and paged KV), written to ONE JSON report (schema in ``benches/README.md``).

Runs on the GPU machine's system Python (no Rust, no network) from the project root:

    PYTHONPATH=python python3 benches/gpu_check.py --out $OUT/report.json [--budget-s 420]

with the abi3 native module built here (``python/suffixspec/_native.abi3.so``) carried along.
Locally: ``./dev gpu-check [ARGS]``. ``--dry-run`` runs every stage on the CPU at tiny shapes
(the torch reference stands in for the kernel, ``time.perf_counter`` for CUDA events), so a
broken script is caught without a GPU; ``tests/test_gpu_check.py`` runs it that way.

Robustness: every stage runs in try/except and records its error; the report is rewritten after
every stage (and every sweep point), and a global time budget skips the remaining work cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from suffixspec import kernels  # noqa: E402
from suffixspec.kernels import cuda_backend, paged, reference  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import nominal  # noqa: E402
from timing import CudaTimer  # noqa: E402

SCHEMA = 1
HEADS, KV_HEADS = 32, 8
# --reduced: the grid and caps of a short lent run (at most 7 minutes of device time): the whole GPU
# test selection capped at 90 s, the plain-decode stage capped at 180 s, then both layouts, every
# variant, batch 1/8/64, trees of 16/64/128 nodes, the shortest and longest prefix (4k, 32k), head
# dim 128 plus the one d64 point. Options given explicitly still win.
REDUCED = {"prefix": [4096, 32768], "budget_s": 420.0, "tests_budget_s": 90.0, "decode_budget_s": 180.0}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "gpu_check.json")
    p.add_argument("--log", type=Path, help="log file (default: the report path with .log)")
    p.add_argument("--budget-s", type=float, default=420.0, help="global time budget (seconds)")
    p.add_argument("--tests-budget-s", type=float, default=150.0, help="cap of the pytest stage")
    p.add_argument("--test-timeout-s", type=float, default=60.0, help="per-test timeout (pytest-timeout)")
    p.add_argument("--maxfail", type=int, default=25)
    p.add_argument(
        "--decode-budget-s", type=float, default=180.0, help="cap of the plain-decode stage (decode_check.py)"
    )
    p.add_argument(
        "--tests",
        help="pytest paths run with -m gpu, space-separated (default: tests/test_*_gpu.py; not the whole "
        "folder, whose other modules may need packages the GPU machine lacks)",
    )
    p.add_argument("--batch", type=ints, default=[1, 8, 64])
    p.add_argument("--prefix", type=ints, default=[4096, 16384, 32768])
    p.add_argument("--nodes", type=ints, default=[16, 64, 128], help="tree sizes (root included)")
    p.add_argument("--iters", type=int, default=10, help="timed calls per candidate (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--block-size", type=int, default=16, help="paged KV block size")
    p.add_argument("--max-gib", type=float, default=24.0, help="skip points whose KV exceeds this")
    p.add_argument(
        "--skip", default="", help="comma-separated stages to skip: device,tests,decode,sweep,paged"
    )
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, reference for the kernel")
    p.add_argument(
        "--reduced",
        action="store_true",
        help=f"the short-run preset (explicit options win): {REDUCED}",
    )
    # Internal: each sweep runs in a child process (a kernel fault is sticky for a CUDA context,
    # so it must not poison the other stages); the child runs one layout's sweep and reads the
    # device facts from the parent's report.
    p.add_argument("--child-layout", choices=["contiguous", "paged", "decode"], help=argparse.SUPPRESS)
    p.add_argument("--facts-from", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reduced:  # the preset replaces the defaults only, so explicit options still win
        p.set_defaults(**REDUCED)
        args = p.parse_args(argv)
    return args


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Report:
    """The JSON report, rewritten in full after every change (a killed run keeps what it did)."""

    def __init__(self, path: Path, log_path: Path, args: argparse.Namespace):
        self.path = path
        self.log_path = log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_path.open("w")
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "dry_run": args.dry_run,
            "host": {"python": platform.python_version(), "torch": torch.__version__},
            "stages": {},
            "device": None,
            "tests": None,
            "sweep": [],
            "best": [],
            "decode": [],
        }
        self.save()

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def run_stage(report: Report, budget: Budget, name: str, fn: Callable[[], Any], skip: set[str]) -> None:
    """Runs one stage with its status, time and error recorded; never raises."""
    stage: dict[str, Any] = {"status": "running"}
    report.data["stages"][name] = stage
    if name in skip:
        stage["status"] = "skipped"
        stage["reason"] = "--skip"
    elif budget.left() <= 0:
        stage["status"] = "skipped"
        stage["reason"] = "time budget spent"
    else:
        report.log(f"stage {name}: start ({budget.left():.0f} s left)")
        start = time.monotonic()
        try:
            fn()
            stage["status"] = "ok"
        except BaseException as exc:  # a stage's failure must not end the check
            stage["status"] = "failed"
            stage["error"] = f"{type(exc).__name__}: {exc}"
            stage["traceback"] = traceback.format_exc()
            report.log(f"stage {name}: FAILED {stage['error']}")
            if isinstance(exc, KeyboardInterrupt):
                raise
        stage["seconds"] = round(time.monotonic() - start, 2)
    report.log(f"stage {name}: {stage['status']}")
    report.save()


# ---------------------------------------------------------------- device facts


def device_facts(dry_run: bool) -> dict[str, Any]:
    if dry_run or not torch.cuda.is_available():
        return {
            "name": "cpu (dry run)",
            "sms": 132,
            "nominal_bandwidth": 4.8e12,
            "nominal_bf16_flops": 989e12,
            "measured_bandwidth": None,
            "measured_bf16_flops": None,
            "kernels_available": kernels.is_available(),
            "unavailable_reason": kernels.unavailable_reason(),
        }
    props = torch.cuda.get_device_properties(0)
    bandwidth, flops = nominal(props.name)
    facts: dict[str, Any] = {
        "name": props.name,
        "capability": list(torch.cuda.get_device_capability(0)),
        "sms": props.multi_processor_count,
        "memory_gib": props.total_memory / 2**30,
        "l2_bytes": props.L2_cache_size,
        "nominal_bandwidth": bandwidth,
        "nominal_bf16_flops": flops,
        "kernels_available": kernels.is_available(),
        "unavailable_reason": kernels.unavailable_reason(),
    }
    timer = CudaTimer(iters=5, warmup=2)
    facts["measured_bandwidth"] = measured_bandwidth(timer)
    facts["measured_bf16_flops"] = measured_bf16_flops(timer)
    return facts


def measured_bandwidth(timer: CudaTimer) -> float:
    """Device-to-device copy of 1 GiB: bytes read + written per second."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / timer(lambda: dst.copy_(src))


def measured_bf16_flops(timer: CudaTimer) -> float:
    """One 8192^3 bf16 matmul (cuBLAS): FLOP/s."""
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn_like(a)
    return 2 * 8192**3 / timer(lambda: a @ b)


# ---------------------------------------------------------------- timing


class CpuTimer:
    """Dry-run stand-in: one call, wall time (exercises the plumbing, measures nothing useful)."""

    def __call__(self, fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


# ---------------------------------------------------------------- tests


def run_tests(report: Report, args: argparse.Namespace, budget: Budget) -> None:
    junit = report.path.with_name(report.path.stem + "_pytest.xml")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--maxfail={args.maxfail}",
        "--tb=short",
        "--continue-on-collection-errors",
        f"--junitxml={junit}",
        *test_paths(args.tests),
    ]
    try:
        import pytest_timeout  # noqa: F401

        cmd.append(f"--timeout={args.test_timeout_s:g}")
    except ImportError:
        report.log("pytest-timeout is not installed: the stage's own time cap is the only limit")
    limit = max(1.0, min(args.tests_budget_s, budget.left()))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "python"), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
        ),
    }
    result: dict[str, Any] = {"command": " ".join(cmd), "time_cap_s": limit}
    report.data["tests"] = result
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        result["returncode"] = proc.returncode
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        result["returncode"] = None
        result["timed_out"] = True
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    report.log_file.write(output)
    result["output_tail"] = output[-4000:]
    result.update(junit_counts(junit))
    report.log(f"tests: {json.dumps({k: result.get(k) for k in ('passed', 'failed', 'errors', 'skipped')})}")


def test_paths(option: str | None) -> list[str]:
    if option:
        return option.split()
    return [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_*_gpu.py"))]


def junit_counts(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"junit": None}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {
        key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")
    }
    failed = [
        f"{c.get('classname')}::{c.get('name')}"
        for s in suites
        for c in s
        if c.find("failure") is not None or c.find("error") is not None
    ]
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return {
        "junit": str(path),
        "passed": passed,
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": total["skipped"],
        "failed_tests": failed[:50],
    }


# ---------------------------------------------------------------- sweep


def shapes(args: argparse.Namespace) -> list[dict[str, int]]:
    if args.dry_run:
        grid = [
            dict(batch=b, prefix=p, nodes=n, head_dim=d)
            for b, p, n, d in ((1, 40, 5, 64), (2, 70, 9, 128), (3, 33, 17, 64))
        ]
    else:
        grid = [
            dict(batch=b, prefix=p, nodes=n, head_dim=128)
            for b in args.batch
            for p in args.prefix
            for n in args.nodes
        ]
        grid.append(dict(batch=8, prefix=16384, nodes=64, head_dim=64))
    return grid


def tree_mask(batch: int, n: int, device: str) -> torch.Tensor:
    """bool [B, n, n]: four chains under the root (a typical suffix-tree draft)."""
    mask = torch.eye(n, dtype=torch.bool)
    mask[:, 0] = True
    for i in range(1, n):
        j = i
        while j > 0:
            mask[i, j] = True
            j = j - 4 if j > 4 else 0
    return mask.expand(batch, n, n).contiguous().to(device)


def roofline_s(shape: dict[str, int], dtype_bytes: int, bandwidth: float | None, flops: float | None) -> dict:
    b, p, n, d = shape["batch"], shape["prefix"], shape["nodes"], shape["head_dim"]
    heads, kv_heads = shape.get("heads", HEADS), shape.get("kv_heads", KV_HEADS)
    flop = 4 * b * heads * n * (p + n) * d
    kv_bytes = 2 * b * kv_heads * (p + n) * d * dtype_bytes
    compute = flop / flops if flops else None
    memory = kv_bytes / bandwidth if bandwidth else None
    bound = max(x for x in (compute, memory, 0.0) if x is not None)
    return {
        "flops": flop,
        "kv_bytes": kv_bytes,
        "roofline_s": bound or None,
        "roofline_bound": "compute" if (compute or 0) >= (memory or 0) else "memory",
    }


# The torch reference materialises fp32 scores [B, Hq, n, T]; above this it would not fit (or
# would dominate the run), and the candidates are checked against the default kernel instead
# (itself checked against the reference by the GPU tests).
REFERENCE_MAX_BYTES = 4 << 30


def expected_output(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: Any, dry: bool
) -> tuple[torch.Tensor, str]:
    batch, heads, n, _ = q.shape
    if dry or 4 * batch * heads * n * k.shape[2] <= REFERENCE_MAX_BYTES:
        return reference.tree_attention(q, k, v, step), "torch reference"
    out = cuda_backend.tree_attention(q, k, v, step, candidate=cuda_backend.Candidate())
    return out, "default kernel (contiguous)"


def sweep_point(
    shape: dict[str, int], layout: str, args: argparse.Namespace, facts: dict, timer: Any
) -> dict[str, Any]:
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    b, prefix, n, d = shape["batch"], shape["prefix"], shape["nodes"], shape["head_dim"]
    heads, kv_heads = (4, 2) if dry else (HEADS, KV_HEADS)
    row: dict[str, Any] = {
        **shape,
        "layout": layout,
        "heads": heads,
        "kv_heads": kv_heads,
        "dtype": "fp32" if dry else "bf16",
    }
    row.update(
        roofline_s(
            row,
            2,
            facts.get("nominal_bandwidth") or facts.get("measured_bandwidth"),
            facts.get("nominal_bf16_flops") or facts.get("measured_bf16_flops"),
        )
    )
    if row["kv_bytes"] / 2**30 > args.max_gib:
        row["skipped"] = "KV exceeds --max-gib"
        return row
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, n, heads, d, generator=gen, dtype=dtype, device=device).transpose(1, 2)
    step = kernels.plan(tree_mask=tree_mask(b, n, device))
    out = torch.empty(b, n, heads, d, dtype=dtype, device=device)
    if layout == "contiguous":
        k = torch.randn(b, kv_heads, prefix + n, d, generator=gen, dtype=dtype, device=device)
        v = torch.randn_like(k)
        expected, row["checked_against"] = expected_output(q, k, v, step, dry)

        def run(cand: cuda_backend.Candidate) -> Callable[[], Any]:
            return lambda: cuda_backend.tree_attention(q, k, v, step, out=out, candidate=cand)
    else:
        cache = paged.random_paged_kv(
            b, kv_heads, [prefix] * b, n, d, args.block_size, dtype=dtype, device=device, generator=gen
        )
        k, v = paged.gather_contiguous(cache, n)
        contiguous_step = kernels.plan(tree_mask=step.tree_mask, prefix_lens=cache.context_lens)
        expected, row["checked_against"] = expected_output(q, k, v, contiguous_step, dry)

        def run(cand: cuda_backend.Candidate) -> Callable[[], Any]:
            return lambda: cuda_backend.paged_tree_attention(
                q, cache, step, out=out, candidate=cand, max_context=prefix
            )

    sms = int(facts.get("sms") or 132)
    cands = cuda_backend.tuning_candidates(
        batch=b, kv_heads=kv_heads, rows=(heads // kv_heads) * n, t_prefix=prefix, head_dim=d, num_sms=sms
    )
    results = []
    for cand in cands:
        entry: dict[str, Any] = {"candidate": cand.as_dict()}
        try:
            if dry:  # the kernel cannot run here: check the launch plumbing, time the reference
                cuda_backend.launch_config(
                    batch=b,
                    kv_heads=kv_heads,
                    rows=(heads // kv_heads) * n,
                    t_prefix=prefix,
                    head_dim=d,
                    num_sms=sms,
                    num_splits=cand.num_splits,
                    variant=cand.variant,
                )
                got = (
                    paged.tree_attention(q, cache, step)
                    if layout == "paged"
                    else reference.tree_attention(q, k, v, step)
                )
                entry["seconds"] = timer(lambda: reference.tree_attention(q, k, v, step))
            else:
                fn = run(cand)
                out.fill_(float("nan"))  # an element the kernel never writes fails the check
                fn()
                got = out.clone()
                entry["seconds"] = timer(fn)
            entry["max_abs_err"] = (got.float() - expected.float()).abs().max().item()
            # NaN compares False: an unwritten or non-finite output is never "ok".
            entry["ok"] = entry["max_abs_err"] <= (0.05 if dtype == torch.bfloat16 else 1e-4)
        except Exception as exc:  # one bad candidate must not end the sweep
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results.append(entry)
    row["candidates"] = results
    timed = [r for r in results if r.get("ok") and r.get("seconds")]
    if timed:
        best = min(timed, key=lambda r: r["seconds"])
        row["best"] = best["candidate"]
        row["best_s"] = best["seconds"]
        row["best_tflops"] = row["flops"] / best["seconds"] / 1e12
        row["roofline_share"] = row["roofline_s"] / best["seconds"] if row["roofline_s"] else None
    if layout == "contiguous":
        dense = step.dense_mask(prefix)[:, None]
        try:
            row["sdpa_s"] = timer(
                lambda: torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=dense, enable_gqa=True
                )
            )
            if row.get("best_s"):
                row["speedup_vs_sdpa"] = row["sdpa_s"] / row["best_s"]
        except torch.OutOfMemoryError:
            row["sdpa_s"] = None
    return row


CHILD_DROPPED = {"--out", "--budget-s", "--log", "--child-layout", "--facts-from"}


def child_argv(argv: list[str]) -> list[str]:
    """``argv`` without the options the parent sets for its children."""
    kept, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in CHILD_DROPPED:
            skip_next = True
        elif arg.split("=", 1)[0] not in CHILD_DROPPED:
            kept.append(arg)
    return kept


def run_isolated(
    report: Report, argv: list[str], budget: Budget, layout: str, share: float = 1.0, cap: float | None = None
) -> None:
    """One layout's sweep in a child process, given ``share`` of the time left; its rows are
    merged into this report (also what a crashed or timed-out child wrote before it died)."""
    child_out = report.path.with_name(f"{report.path.stem}_{layout}.json")
    child_out.unlink(missing_ok=True)
    left = max(1.0, min(share * budget.left(), cap if cap is not None else float("inf")))
    cmd = [
        sys.executable, str(Path(__file__).resolve()), *child_argv(argv), "--child-layout", layout,
        "--out", str(child_out), "--budget-s", f"{left:.0f}", "--facts-from", str(report.path),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left + 60)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = None
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    report.log_file.write(output)
    if child_out.exists():
        child = json.loads(child_out.read_text())
        report.data["sweep"].extend(child.get("sweep", []))
        report.data["best"].extend(child.get("best", []))
        report.data["decode"].extend(child.get("decode", []))
    if returncode != 0:
        raise RuntimeError(f"the {layout} sweep child exited with {returncode}: {output[-2000:]}")


def run_sweep(report: Report, args: argparse.Namespace, budget: Budget, layout: str) -> None:
    facts = report.data["device"]
    if facts is None and args.facts_from is not None and args.facts_from.exists():
        facts = json.loads(args.facts_from.read_text()).get("device")
    facts = facts or device_facts(args.dry_run)
    timer: Any = CpuTimer() if args.dry_run else CudaTimer(args.iters, args.warmup)
    if not args.dry_run:
        kernels.require()
    for shape in shapes(args):
        if budget.left() <= 0:
            report.data["sweep"].append({**shape, "layout": layout, "skipped": "time budget spent"})
            continue
        try:
            row = sweep_point(shape, layout, args, facts, timer)
        except Exception as exc:
            row = {**shape, "layout": layout, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            if not args.dry_run:
                torch.cuda.empty_cache()
        report.data["sweep"].append(row)
        if "best" in row:
            report.data["best"].append(
                {
                    key: row.get(key)
                    for key in (
                        "layout",
                        "batch",
                        "prefix",
                        "nodes",
                        "head_dim",
                        "best",
                        "best_s",
                        "roofline_share",
                        "speedup_vs_sdpa",
                    )
                }
            )
        report.log(summary(row))
        report.save()


def run_decode(report: Report, args: argparse.Namespace, budget: Budget) -> None:
    """Plain decode steps: every baseline of bench_e2e beside the weight-read limit (decode_check.py)."""
    from decode_check import decode_rows

    facts = report.data["device"]
    if facts is None and args.facts_from is not None and args.facts_from.exists():
        facts = json.loads(args.facts_from.read_text()).get("device")
    facts = facts or device_facts(args.dry_run)
    decode_rows(
        report.data["decode"],
        dry_run=args.dry_run,
        bandwidth=facts.get("nominal_bandwidth") or facts.get("measured_bandwidth"),
        flops=facts.get("nominal_bf16_flops") or facts.get("measured_bf16_flops"),
        time_left=budget.left,
        log=report.log,
        save=report.save,
    )


def summary(row: dict[str, Any]) -> str:
    head = f"{row['layout']:>10} b={row['batch']} prefix={row['prefix']} n={row['nodes']} d={row['head_dim']}"
    if "best_s" not in row:
        return f"{head}: {row.get('skipped') or row.get('error') or 'no candidate ran'}"
    share = row.get("roofline_share")
    sdpa = row.get("speedup_vs_sdpa")
    return (
        f"{head}: best {row['best']} {row['best_s'] * 1e6:.1f} us, {row['best_tflops']:.1f} TFLOP/s, "
        f"{'-' if share is None else f'{100 * share:.1f}'}% of roofline, "
        f"{'-' if sdpa is None else f'{sdpa:.2f}'}x SDPA"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    log_path = args.log or args.out.with_suffix(".log")
    report = Report(args.out, log_path, args)
    budget = Budget(args.budget_s)
    skip = {s for s in args.skip.split(",") if s}
    if args.child_layout is not None:
        run_stage(
            report,
            budget,
            args.child_layout,
            lambda: (
                run_decode(report, args, budget)
                if args.child_layout == "decode"
                else run_sweep(report, args, budget, args.child_layout)
            ),
            set(),
        )
        return 1 if report.data["stages"][args.child_layout]["status"] == "failed" else 0

    def device() -> None:
        report.data["device"] = device_facts(args.dry_run)
        report.log(f"device: {json.dumps(report.data['device'], default=str)}")

    run_stage(report, budget, "device", device, skip)
    run_stage(report, budget, "tests", lambda: run_tests(report, args, budget), skip)
    cap = args.decode_budget_s
    run_stage(report, budget, "decode", lambda: run_isolated(report, argv, budget, "decode", cap=cap), skip)
    # The contiguous sweep leaves the paged one at least 45% of the time, so a slow device still
    # reports both layouts.
    share = 1.0 if "paged" in skip else 0.55
    run_stage(report, budget, "sweep", lambda: run_isolated(report, argv, budget, "contiguous", share), skip)
    run_stage(report, budget, "paged", lambda: run_isolated(report, argv, budget, "paged"), skip)
    report.data["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.save()
    failed = [name for name, stage in report.data["stages"].items() if stage["status"] == "failed"]
    report.log(f"report: {args.out}; failed stages: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
