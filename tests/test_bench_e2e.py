"""Trace-forced generation (the loop's public acceptance seam) and the end-to-end benchmark built on it
(`benches/bench_e2e.py`, run as a program on a tiny CPU model and a handmade trace): forced outputs
equal the trace, speculation really runs, and the report is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from suffixspec.errors import InvalidParameterError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches" / "bench_e2e.py"


def run_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "python"), **(env or {})}
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, env=environment, timeout=600
    )


def write_trace(path: Path, n: int = 9, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Requests that repeat a shared phrase (drafts from earlier responses get accepted) with
    request-specific tokens in between (drafts there get rejected). Line 2 has no output."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(3, 300, 24).tolist()
    records = []
    for i in range(n):
        prompt = rng.integers(3, 300, 6 + i).tolist() + phrase[:8]
        # Outputs of different lengths: finished rows leave a batch while others go on.
        output = [] if i == 2 else phrase[8:] + rng.integers(3, 300, 5).tolist() + phrase[: 2 + 3 * (i % 3)]
        records.append((prompt, output))
    with path.open("w") as f:
        for i, (prompt, output) in enumerate(records):
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt, "output": output}) + "\n")
    return records


def tiny_args(trace_dir: Path, *extra: str) -> list[str]:
    return [
        "--tiny", "--trace-dir", str(trace_dir), "--workloads", "mini", "--warm", "3", "--limit", "4",
        "--max-new-tokens", "40", "--max-prompt-tokens", "64", *extra,
    ]  # fmt: skip


def tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    return LlamaForCausalLM(config).eval()


def forced_loop(model, spec, proposer, do_sample: bool = False, **kwargs):
    from transformers import GenerationConfig, LogitsProcessorList

    from suffixspec.generation.attention import AttentionBackend
    from suffixspec.generation.compat import inspect_model
    from suffixspec.generation.config import validate_decode_config
    from suffixspec.generation.logits import TargetScorer
    from suffixspec.generation.loop import SpeculativeLoop

    info = inspect_model(model)
    decode = validate_decode_config(
        GenerationConfig(do_sample=do_sample, eos_token_id=None, pad_token_id=0),
        vocab_size=info.vocab_size,
        max_new_tokens=64,
    )
    scorer = TargetScorer(LogitsProcessorList())
    return SpeculativeLoop(
        model, info, decode, spec, scorer, proposer, AttentionBackend(model, "torch"), **kwargs
    )


def test_forced_outputs_equal_the_trace(tmp_path: Path) -> None:
    from suffixspec import SpecConfig, SuffixCache
    from suffixspec.generation.batch import Request
    from suffixspec.generation.forcing import TraceForcedAcceptance
    from suffixspec.proposer import SuffixProposer

    records = write_trace(tmp_path / "mini.jsonl")
    model = tiny_llama(300)
    spec = SpecConfig(max_spec_tokens=8, drafter="arctic")  # drafts that miss too, as the test wants
    cache = SuffixCache()
    for i, (prompt, output) in enumerate(records[:3]):
        cache.start_request(("warm", i), prompt)
        if output:
            cache.add_active_response(("warm", i), output)
        cache.stop_request(("warm", i))
    forcer = TraceForcedAcceptance()
    measured = [r for r in records[3:] if r[1]][:4]
    for batch in (1, 3):
        requests = []
        for i, (prompt, output) in enumerate(measured[:batch]):
            forcer.outputs[(batch, i)] = np.asarray(output)
            requests.append(Request.new((batch, i), np.asarray(prompt, dtype=np.int32), len(output)))
        loop = forced_loop(model, spec, SuffixProposer(cache, spec), acceptance=forcer, sync_phases=True)
        with torch.inference_mode():
            loop.run(requests)
        assert [r.generated.tolist() for r in requests] == [o for _, o in measured[:batch]]
        # Speculation ran and was forced both ways: some drafts accepted, some rejected.
        accepted = sum(r.stats.accepted_tokens for r in requests)
        drafted = sum(r.stats.drafted_tokens for r in requests)
        assert 0 < accepted < drafted
        assert {"prefill_forward", "forward", "tree", "compact"} <= set(loop.batch.phases)
    assert forcer.elapsed_s > 0


def test_an_acceptance_policy_refuses_sampling() -> None:
    from suffixspec import SpecConfig, SuffixCache
    from suffixspec.generation.forcing import TraceForcedAcceptance
    from suffixspec.proposer import SuffixProposer

    spec = SpecConfig()
    with pytest.raises(InvalidParameterError, match="sampling"):
        forced_loop(
            tiny_llama(64),
            spec,
            SuffixProposer(SuffixCache(), spec),
            do_sample=True,
            acceptance=TraceForcedAcceptance(),
        )


def test_the_benchmark_reports_forced_runs(tmp_path: Path) -> None:
    records = write_trace(tmp_path / "mini.jsonl")
    out = tmp_path / "report.json"
    baselines = "loop,generate,graph"
    done = run_bench(*tiny_args(tmp_path, "--batch", "1,2", "--baselines", baselines, "--out", str(out)))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["label"] == "trace-forced"
    rows = report["rows"]
    assert [(r["batch"], r["attention"]) for r in rows] == [
        (1, "auto"), (1, "torch"), (2, "auto"), (2, "torch"),
    ]  # fmt: skip
    phases = {"propose", "cache_update", "tree", "forward", "compact", "other"}
    lengths = [len(o) for _, o in records[3:7]]
    for row in rows:
        assert row["label"] == "trace-forced" and row["workload"] == "mini" and row["model"] == "tiny"
        assert row["mismatches"] == 0
        assert row["new_tokens"] == sum(lengths)
        assert row["backend"] == ("sdpa-mask" if row["attention"] == "auto" else "torch-reference")
        # Every plain baseline ran; the plain figure and the speedup are the fastest one's.
        assert set(row["baselines"]) == set(baselines.split(","))
        rates = {k: b["tok_s"] for k, b in row["baselines"].items()}
        assert all(r > 0 for r in rates.values()) and row["fastest_plain"] == max(rates, key=rates.get)
        assert row["plain_tok_s"] == pytest.approx(max(rates.values()))
        assert row["speedup"] == pytest.approx(row["spec_tok_s"] / row["plain_tok_s"])
        # Each method ran twice: the cold (first) run is kept beside the timed one.
        assert (
            all(b["cold_decode_s"] > 0 for b in row["baselines"].values()) and row["spec_cold_decode_s"] > 0
        )
        # Steps per group: the longest output minus the prefill's token (rows leave or idle).
        groups = [lengths[i : i + row["batch"]] for i in range(0, 4, row["batch"])]
        assert {b["steps"] for b in row["baselines"].values()} == {sum(max(g) - 1 for g in groups)}
        assert row["baselines"]["graph"]["captured"] is False  # no CUDA here: the uncaptured step
        assert row["weight_read_step_s"] is None and row["plain_limit_tok_s"] is None  # no bandwidth on a CPU
        assert row["tokens_per_step"] > 1
        assert row["forward_passes"] < row["plain_forward_passes"]
        assert set(row["shares"]) == phases
        assert sum(row["shares"].values()) == pytest.approx(1.0)
        assert row["shares"]["forward"] > 0
    assert "TRACE-FORCED" in done.stdout and "fastest plain" in done.stdout


def test_the_compiled_baseline_is_timed_after_its_compilation(tmp_path: Path) -> None:
    write_trace(tmp_path / "mini.jsonl")
    out = tmp_path / "report.json"
    args = tiny_args(tmp_path, "--batch", "2", "--attention", "torch", "--baselines", "compiled,loop")
    done = run_bench(*args, "--limit", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    compiled = row["baselines"]["compiled"]
    assert compiled["tok_s"] > 0 and compiled["steps"] == row["baselines"]["loop"]["steps"]
    # The first run compiled the decode forward; the timed second run reuses it.
    assert compiled["decode_s"] < compiled["cold_decode_s"] / 2


def test_weight_read_limits_follow_the_forward_passes() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_e2e", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_e2e", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    workload = bench.Workload("w", "t", [], [(np.arange(3), np.arange(n)) for n in (5, 9, 2)])
    plain = bench.Timing(0.5, 2.0, 16, 13, 11)
    spec_run = bench.SpecRun(timing=bench.Timing(0.5, 1.0, 16, 13, 0), forward_passes=4, steps=5)
    fast = bench.Timing(0.5, 1.0, 16, 13, 11)
    row = bench.make_row("m", workload, 2, "auto", {"loop": (plain, plain), "graph": (fast, plain)}, spec_run,
                         weight_read_step_s=0.01)  # fmt: skip
    assert row.fastest_plain == "graph" and row.plain_tok_s == pytest.approx(13.0) and row.speedup == 1.0
    assert row.plain_forward_passes == (9 - 1) + (2 - 1)
    assert row.plain_limit_tok_s == pytest.approx(13 / (9 * 0.01))
    assert row.spec_limit_tok_s == pytest.approx(13 / (4 * 0.01))


def test_a_gpu_run_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = run_bench("--trace-dir", str(tmp_path), "--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stderr
    assert not out.exists()
