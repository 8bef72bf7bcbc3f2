"""``benches/gpu_check.py`` in its CPU dry-run mode: every stage but the CUDA timing runs, so a
broken script is caught before a lent GPU run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benches" / "gpu_check.py"


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--out",
            str(out),
            "--tests",
            "tests/test_kernels_gpu.py",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, json.loads(out.read_text())


def test_dry_run_writes_a_complete_report(tmp_path):
    proc, report = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["schema"] == 1 and report["dry_run"] is True
    assert {name: stage["status"] for name, stage in report["stages"].items()} == {
        "device": "ok",
        "tests": "ok",
        "decode": "ok",
        "sweep": "ok",
        "paged": "ok",
    }
    assert report["device"]["sms"] > 0
    tests = report["tests"]
    assert tests["failed"] == 0 and tests["errors"] == 0
    assert tests["passed"] + tests["skipped"] > 0  # the GPU suite was collected (and skipped here)
    layouts = {row["layout"] for row in report["sweep"]}
    assert layouts == {"contiguous", "paged"}
    for row in report["sweep"]:
        assert "error" not in row, row
        b, h, n, p, d = (row[key] for key in ("batch", "heads", "nodes", "prefix", "head_dim"))
        assert row["flops"] == 4 * b * h * n * (p + n) * d
        # Every candidate of every point ran and matched the reference (the paged reference
        # against the contiguous one, here).
        assert row["candidates"] and all(c.get("ok") for c in row["candidates"]), row["candidates"]
        assert {c["candidate"]["variant"] for c in row["candidates"]} >= {"w4", "w8"}
        assert row["best"] in [c["candidate"] for c in row["candidates"]]
    assert len(report["best"]) == len(report["sweep"])
    assert (tmp_path / "report.log").read_text().count("stage") >= 10
    # The plain-decode stage: every baseline of every point timed beside its weight-read limit,
    # the verification step beside the decode step and its compute roofline.
    decode = report["decode"]
    assert [(r["batch"], r["prompt"], r["baseline"], r.get("cudnn_sdp")) for r in decode] == [
        (1, 24, "loop", None), (1, 24, "generate", None), (1, 24, "graph", None),
        (3, 24, "loop", None), (3, 24, "graph", None),
        (2, 40, "graph", None), (2, 40, "graph-verify", None),
        (3, 30, "loop", False),
    ]  # fmt: skip
    for row in decode:
        assert "error" not in row and "skipped" not in row, row
        assert row["step_s"] > 0 and row["model"] == "tiny"
        assert row["weight_read_s"] == row["weight_bytes"] / report["device"]["nominal_bandwidth"]
        assert row.get("captured", False) is False  # no CUDA graph on a CPU
        if row["baseline"] == "graph-verify":
            graph = decode[decode.index(row) - 1]
            assert row["decode_step_s"] == graph["step_s"] and row["nodes"] == 64
            floor = max(row["decode_step_s"], row["compute_roofline_s"])
            assert row["verify_over_floor"] == pytest.approx(row["step_s"] / floor)
        else:
            assert row["tok_s"] > 0
            assert row["step_over_weight_read"] == row["step_s"] / row["weight_read_s"]


def test_an_exhausted_budget_skips_stages_cleanly(tmp_path):
    proc, report = run_check(tmp_path, "--budget-s", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(stage["status"] == "skipped" for stage in report["stages"].values())
    assert report["sweep"] == [] and "finished_utc" in report


def test_failing_tests_are_recorded_and_the_sweep_still_runs(tmp_path):
    # An unknown test path makes pytest exit non-zero; the sweep must still run.
    proc, report = run_check(tmp_path, "--tests", "tests/no_such_file.py", "--skip", "paged,decode")
    stages = report["stages"]
    assert stages["tests"]["status"] == "ok" and report["tests"]["returncode"] != 0
    assert stages["sweep"]["status"] == "ok" and stages["paged"]["status"] == "skipped"
    assert stages["decode"]["status"] == "skipped" and report["decode"] == []
    assert proc.returncode == 0


def test_sweep_children_get_the_parents_options_but_their_own_outputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [
        "--dry-run",
        "--out",
        "r.json",
        "--budget-s=30",
        "--iters",
        "3",
        "--log",
        "x.log",
        "--skip",
        "tests",
    ]
    assert module.child_argv(argv) == ["--dry-run", "--iters", "3", "--skip", "tests"]
    gpu_files = {"tests/test_kernels_gpu.py", "tests/test_kernels_paged_gpu.py", "tests/test_engine_gpu.py"}
    assert gpu_files <= set(module.test_paths(None))
    assert "tests/test_gpu_check.py" not in module.test_paths(None)


def test_the_reduced_preset_sets_the_short_run_grid_and_explicit_options_win():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = module.parse_args([])
    reduced = module.parse_args(["--reduced"])
    assert reduced.prefix == [4096, 32768] and reduced.budget_s == 420 and reduced.tests_budget_s == 90
    assert reduced.decode_budget_s == full.decode_budget_s == 180
    assert reduced.batch == full.batch == [1, 8, 64] and reduced.nodes == full.nodes == [16, 64, 128]
    assert reduced.tests is None  # every GPU test file
    grid = module.shapes(reduced)
    assert len(grid) == 3 * 2 * 3 + 1 and sum(s["head_dim"] == 64 for s in grid) == 1
    overridden = module.parse_args(["--budget-s", "200", "--reduced", "--prefix", "8192"])
    assert overridden.decode_budget_s == 180
    assert overridden.budget_s == 200 and overridden.prefix == [8192] and overridden.tests_budget_s == 90
    # Sweep children get --reduced too (their budget is the parent's remainder).
    assert module.child_argv(["--reduced", "--budget-s", "300"]) == ["--reduced"]
