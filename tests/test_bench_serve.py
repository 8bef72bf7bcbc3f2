"""The serving benchmark (`benches/bench_serve.py`) run as a program with `--quick` on a handmade
trace: the JSON report is complete and consistent (every policy on the same arrivals, attainment
in [0, 1], forced acceptance recorded and reproducing the trace), whatever the machine's speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches" / "bench_serve.py"
POLICIES = ["none", "uniform", "greedy", "adaserve"]


def write_trace(path: Path, n: int = 16, seed: int = 0) -> None:
    """Pre-tokenized requests (ids within the default model's vocabulary) that repeat a shared
    phrase, so that drafts from earlier responses are accepted and others rejected."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(3, 2000, 30).tolist()
    with path.open("w") as f:
        for i in range(n):
            prompt = rng.integers(3, 2000, 5 + i % 7).tolist() + phrase[:8]
            output = phrase[8:] + rng.integers(3, 2000, 4).tolist() + phrase[: 3 + i % 5]
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt, "output": output}) + "\n")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.parametrize("arrival", ["poisson", "burst"])
def test_quick_run_reports_every_policy_on_the_same_arrivals(tmp_path: Path, arrival: str) -> None:
    write_trace(tmp_path / "mini.jsonl")
    out = tmp_path / "out"
    done = run_bench(
        "--quick", "--models", "default", "--workloads", "mini", "--trace-dir", str(tmp_path),
        "--requests", "6", "--warm", "4", "--loads", "1,16", "--arrival", arrival, "--burst-size", "3",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bench_serve.json").read_text())
    assert report["label"] == "trace-forced" and report["clock"] == "virtual"
    assert report["policies"] == POLICIES
    assert [c["share"] for c in report["slo_classes"]] == [0.6, 0.2, 0.2]
    (result,) = report["results"]
    assert result["model"] == "default" and result["workload"] == "mini" and result["requests"] == 6
    assert (out / "default_mini.png").stat().st_size > 0
    # The step-cost model was measured: distinct increasing token counts, non-decreasing times,
    # and the clock's fit (non-negative coefficients).
    assert result["step_cost"]["source"] == "measured on this machine"
    fit = result["step_cost"]["fit"]
    assert min(fit["fixed_s"], fit["per_request_s"], fit["per_token_s"]) >= 0
    assert fit["fixed_s"] + fit["per_request_s"] + fit["per_token_s"] > 0
    points = result["step_cost"]["points"]
    assert points and all(t > 0 for _, t in points)
    assert [n for n, _ in points] == sorted({n for n, _ in points})
    assert [t for _, t in points] == sorted(t for _, t in points)
    targets = result["slo_targets_ms"]
    assert targets["tight"] < targets["chat"] < targets["batch"]
    runs = result["runs"]
    assert len(runs) == 2 * len(POLICIES)
    assert {(r["load"], r["policy"]) for r in runs} == {(load, p) for load in (1.0, 16.0) for p in POLICIES}
    for run in runs:
        s = run["summary"]
        assert 0.0 <= s["attainment"] <= 1.0
        assert all(v is None or 0.0 <= v <= 1.0 for v in s["attainment_by_class"].values())
        assert 0.0 <= s["goodput_tok_s"] <= s["throughput_tok_s"]
        assert s["ttft_ms_p50"] <= s["ttft_ms_p99"] and s["tpot_ms_p50"] <= s["tpot_ms_p99"]
        # Forced acceptance: every output is the traced one, and speculation ran when enabled.
        assert s["forced_outputs_match"]
        assert s["tokens_per_step"] >= 1.0
        if run["policy"] == "none":
            assert s["drafted"] == 0 and s["tokens_per_step"] == 1.0
        else:
            assert 0 < s["accepted"] <= s["drafted"]
        # Sit-outs are off by default (adaserve-sitout turns them on).
        assert s["sit_outs"] == 0
        assert set(s["tpot_ms_p50_by_class"]) == {"tight", "chat", "batch"}
    # The same arrivals and SLO classes for every policy at a load.
    for load in (1.0, 16.0):
        same = {(tuple(r["arrivals_s"]), tuple(r["classes"])) for r in runs if r["load"] == load}
        assert len(same) == 1
        (arrivals, classes) = same.pop()
        assert len(arrivals) == 6 and sorted(classes) == ["batch", "chat"] + ["tight"] * 4
    assert isinstance(result["targets"], list)
    for check in result["targets"]:
        assert set(check["met"]) == {"attainment_vs_uniform", "attainment_vs_none", "goodput_vs_uniform"}
    assert "adaserve" in done.stdout and "trace-forced" in done.stdout


def test_bad_arguments_are_refused() -> None:
    done = run_bench("--quick", "--policies", "fastest")
    assert done.returncode != 0 and "unknown policies" in done.stderr
    done = run_bench("--quick", "--sit-out-margin", "-1")
    assert done.returncode != 0 and "--sit-out-margin" in done.stderr


def test_an_injected_fit_is_the_clock_and_labelled(tmp_path: Path) -> None:
    """`--cost-fit` (a what-if from another machine's step costs): the report says so, the plain
    TPOT is the one-token step, and no step takes less than it under the virtual clock."""
    write_trace(tmp_path / "mini.jsonl")
    out = tmp_path / "out"
    done = run_bench(
        "--quick", "--models", "default", "--workloads", "mini", "--trace-dir", str(tmp_path),
        "--requests", "6", "--warm", "4", "--loads", "4", "--policies", "none,adaserve,adaserve-sitout",
        "--cost-fit", "0.004:0.0005:0.0001", "--cost-source", "a test curve", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads((out / "bench_serve.json").read_text())["results"]
    cost = result["step_cost"]
    assert cost["source"] == "injected (--cost-fit), a test curve"
    assert cost["fit"]["fixed_s"] == 0.004 and cost["fit"]["per_request_s"] == 0.0005
    assert abs(result["plain_tpot_ms"] - 4.6) < 1e-9
    # The scheduler's token-only points: the fit at one request.
    assert [n for n, _ in cost["points"]] == [1, 8192]
    assert [t for _, t in cost["points"]] == pytest.approx([0.0046, 0.0045 + 0.0001 * 8192])
    for run in result["runs"]:
        s = run["summary"]
        # Plain decoding: every step costs at least the one-token step, so TPOT >= plain TPOT.
        if run["policy"] == "none":
            assert s["tpot_ms_p50"] >= 4.6 - 1e-9
        assert s["forced_outputs_match"]
        assert s["sit_outs"] == 0 or run["policy"] == "adaserve-sitout"


BAD_COST_FITS = [
    ["--cost-fit", "1:2"],
    ["--cost-fit", "-1:0:0"],
    ["--cost-fit", "0.1:0:0", "--cost-points", "1:0.1"],
]


@pytest.mark.parametrize("args", BAD_COST_FITS)
def test_bad_cost_fits_are_refused(args: list[str]) -> None:
    done = run_bench("--quick", *args)
    assert done.returncode != 0 and "--cost-fit" in done.stderr
