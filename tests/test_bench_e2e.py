"""The trace-forced end-to-end benchmark (`benches/bench_e2e.py`) on a tiny CPU model and a handmade
trace: forced outputs equal the trace, speculation really runs, and the report is complete."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from suffixspec.errors import InvalidParameterError  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench_e2e.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_e2e", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


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


def test_forced_outputs_equal_the_trace(bench, tmp_path):
    records = write_trace(tmp_path / "mini.jsonl")
    args = bench.parse_args(tiny_args(tmp_path))
    workload = bench.load_workload("mini", args)
    measured = [r for r in records[3:] if r[1]][:4]  # the empty output of line 2 is among the warm ones
    assert [(p.tolist(), o.tolist()) for p, o in workload.requests] == measured
    model, _ = bench.build_model("tiny", workload.max_token + 1, torch.device("cpu"))
    for batch, attention in ((1, "auto"), (3, "torch")):
        run = bench.spec_decode(model, workload, batch, attention, args)
        assert [o.tolist() for o in run.outputs] == [o for _, o in measured]
        assert run.mismatches == 0
        # Speculation ran and was forced both ways: some drafts accepted, some rejected.
        assert 0 < run.accepted < run.drafted
        assert run.forward_passes < run.timing.decode_tokens
        plain = bench.plain_decode(model, workload.requests[:batch], torch.device("cpu"))
        assert plain.new_tokens == sum(len(o) for _, o in measured[:batch])


def test_report_structure(bench, tmp_path, capsys):
    records = write_trace(tmp_path / "mini.jsonl")
    out = tmp_path / "report.json"
    assert bench.main(tiny_args(tmp_path, "--batch", "1,2", "--out", str(out))) == 0
    report = json.loads(out.read_text())
    assert report["label"] == "trace-forced"
    rows = report["rows"]
    assert [(r["batch"], r["attention"]) for r in rows] == [
        (1, "auto"), (1, "torch"), (2, "auto"), (2, "torch"),
    ]  # fmt: skip
    for row in rows:
        assert row["label"] == "trace-forced" and row["workload"] == "mini" and row["model"] == "tiny"
        assert row["mismatches"] == 0
        assert row["new_tokens"] == sum(len(o) for _, o in records[3:7])
        assert row["backend"] == ("sdpa-mask" if row["attention"] == "auto" else "torch-reference")
        assert row["plain_tok_s"] > 0 and row["spec_tok_s"] > 0
        assert row["speedup"] == pytest.approx(row["spec_tok_s"] / row["plain_tok_s"])
        assert row["tokens_per_step"] > 1
        assert row["forward_passes"] < row["plain_forward_passes"]
        assert set(row["shares"]) == set(bench.PHASES)
        assert sum(row["shares"].values()) == pytest.approx(1.0)
        assert row["shares"]["forward"] > 0
    assert "TRACE-FORCED" in capsys.readouterr().out


def test_gpu_run_without_gpu_says_so_and_exits_0(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "report.json"
    assert bench.main(["--trace-dir", str(tmp_path), "--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_target_override_refuses_sampling(bench):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessorList

    from suffixspec import SuffixCache
    from suffixspec.generation.attention import AttentionBackend
    from suffixspec.generation.compat import inspect_model
    from suffixspec.generation.config import SpecConfig, validate_decode_config
    from suffixspec.generation.logits import TargetScorer
    from suffixspec.generation.loop import SpeculativeLoop
    from suffixspec.generation.proposer import SuffixProposer

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    model = LlamaForCausalLM(config).eval()
    info = inspect_model(model)
    decode = validate_decode_config(GenerationConfig(do_sample=True), vocab_size=64, max_new_tokens=4)
    spec = SpecConfig()
    parts = (TargetScorer(LogitsProcessorList()), SuffixProposer(SuffixCache(), spec))
    with pytest.raises(InvalidParameterError, match="sampling"):
        SpeculativeLoop(
            model,
            info,
            decode,
            spec,
            *parts,
            AttentionBackend(model, "auto"),
            target_override=bench.TraceForcer(),
        )
