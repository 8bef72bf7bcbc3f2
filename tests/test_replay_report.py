"""Metrics, verify-cost models, sweeps and the report files of `suffixspec replay`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from suffixspec import SpecConfig
from suffixspec.cli import main
from suffixspec.errors import InvalidParameterError
from suffixspec.replay.engine import ReplayResult
from suffixspec.replay.metrics import VerifyCost, summarize
from suffixspec.replay.report import format_table
from suffixspec.replay.sweep import SWEEP_GRID, Evaluator, recommend, sweep
from suffixspec.replay.tokenize import TokenizedTrace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(
    drafted: list[int], accepted: list[int], emitted: list[int], propose_ns: list[int]
) -> ReplayResult:
    return ReplayResult(
        method="m",
        workload="w",
        drafted=np.array(drafted, dtype=np.int32),
        accepted=np.array(accepted, dtype=np.int32),
        emitted=np.array(emitted, dtype=np.int32),
        propose_ns=np.array(propose_ns, dtype=np.int64),
        observe_ns=np.full(len(drafted), 1000, dtype=np.int64),
        request_steps=np.array([len(drafted)]),
        start_ns=np.array([100]),
        memory_bytes=4000,
        cached_tokens=sum(emitted),
    )


def test_verify_cost_models() -> None:
    linear = VerifyCost.parse("linear:0.02")
    assert linear([0, 10, 50]).tolist() == pytest.approx([1.0, 1.2, 2.0])
    table = VerifyCost.parse("table:0=1,16=1.16,32=1.64")
    assert table([0, 8, 16, 24, 48]).tolist() == pytest.approx([1.0, 1.08, 1.16, 1.40, 2.12])
    for bad in ("linear", "linear:x", "cubic:1", "table:4=1", "table:1=1,1=2", "table:0=0,4=1", "linear:-2"):
        with pytest.raises(InvalidParameterError):
            VerifyCost.parse(bad)
    with pytest.raises(InvalidParameterError):
        VerifyCost.parse("linear:0.1", decode_ms=0)


def test_summary_of_known_steps() -> None:
    # 3 steps: drafts of 4, 0 and 2 tokens; 3, 0 and 2 accepted; 4 + 1 + 2 = 7 tokens emitted
    # (the last step ended the output: no bonus token).
    r = result([4, 0, 2], [3, 0, 2], [4, 1, 2], [2000, 1000, 3000])
    s = summarize(r, VerifyCost.parse("linear:0.1"))
    assert s["tokens_per_step"] == pytest.approx(7 / 3)
    assert s["acceptance_rate"] == pytest.approx(5 / 6)
    assert s["mean_draft"] == pytest.approx(2.0)
    assert s["propose_us_mean"] == pytest.approx(2.0)
    assert s["propose_us_per_token_mean"] == pytest.approx(6.0 / 6)
    assert s["observe_us_per_token_mean"] == pytest.approx(3.0 / 7)
    assert s["bytes_per_cached_token"] == pytest.approx(4000 / 7)
    assert s["speedup"] == pytest.approx(7 / (1.4 + 1.0 + 1.2))
    # Free verification: the speedup is the tokens per step; proposal time counts once a decode
    # step's time is known (here 2 us per step on average, on a 2 us decode step).
    assert summarize(r, VerifyCost.parse("linear:0"))["speedup"] == pytest.approx(7 / 3)
    assert summarize(r, VerifyCost.parse("linear:0", decode_ms=0.002))["speedup"] == pytest.approx(7 / 6)


def test_table_lists_every_row() -> None:
    rows = [summarize(result([1], [1], [2], [5]), VerifyCost.parse("linear:0")) for _ in range(2)]
    rows[1]["method"] = "other-method"
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:4] == ["workload", "method", "reqs", "tok/step"]
    assert len(lines) == 4 and "other-method" in lines[3] and "2.00" in lines[2]


def repeat_trace() -> TokenizedTrace:
    seq = np.arange(10, 31, dtype=np.int32)
    return TokenizedTrace("r", ("0",), np.array([-1]), (seq,), (seq.copy(),))


def test_sweep_covers_the_grid_and_recommend_does_not_lose() -> None:
    base = SpecConfig(max_spec_tokens=4, max_spec_factor=1.0, min_match_len=0)
    evaluate = Evaluator(repeat_trace(), "suffixspec-arctic", VerifyCost.parse("linear:0.05"))
    records = sweep(evaluate, base)
    assert [(r["param"], r["value"]) for r in records] == [(k, v) for k, vs in SWEEP_GRID.items() for v in vs]
    factor = {r["value"]: r["summary"]["tokens_per_step"] for r in records if r["param"] == "max_spec_factor"}
    assert factor[4.0] >= factor[0.5]  # longer drafts on a verbatim repeat
    rec = recommend(evaluate, base)
    assert rec.summary["speedup"] >= rec.baseline["speedup"]
    assert rec.summary["speedup"] >= max(r["summary"]["speedup"] for r in records)
    assert rec.params.max_spec_factor in SWEEP_GRID["max_spec_factor"] + (base.max_spec_factor,)
    with pytest.raises(InvalidParameterError):
        sweep(evaluate, base, {"not_a_param": (1,)})


def word_tokenizer_file(tmp_path: Path) -> Path:
    words = ["<|user|>", *[f"w{i}" for i in range(40)], "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_cli_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    words = " ".join(f"w{i}" for i in range(10, 31))
    text = tmp_path / "repeat.jsonl"
    text.write_text(json.dumps({"prompt": [{"role": "user", "content": words}], "output": words}) + "\n")
    ids = tmp_path / "disjoint.jsonl"
    ids.write_text(json.dumps({"prompt": list(range(30)), "output": list(range(100, 140))}) + "\n")
    out = tmp_path / "out"
    argv = ["replay", str(text), str(ids), "--tokenizer", str(word_tokenizer_file(tmp_path))]
    argv += [
        "--methods",
        "suffixspec-arctic,suffixspec-arctic-tree",
        "--max-spec-tokens",
        "4",
        "--max-spec-factor",
        "100",
    ]
    argv += ["--min-match-len", "0"]  # arctic-inference's semantics, which the figures below assume
    argv += ["--out", str(out), "--sweep", "--recommend", "--no-progress", "--no-cache"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tok/step" in printed and "recommended for repeat" in printed

    report = json.loads((out / "report.json").read_text())
    rows = {(r["workload"], r["method"]): r for r in report["results"]}
    methods = ("suffixspec-arctic", "suffixspec-arctic-tree")
    assert set(rows) == {(w, m) for w in ("repeat", "disjoint") for m in methods}
    # The rendered prompt is "<|user|> w10 ... w30": the output repeats its last 21 tokens.
    assert rows["repeat", "suffixspec-arctic"]["tokens_per_step"] == pytest.approx(21 / 5)
    assert rows["disjoint", "suffixspec-arctic"]["tokens_per_step"] == 1.0
    assert report["settings"]["params"]["max_spec_tokens"] == 4
    assert len(report["sweeps"]["repeat"]) == sum(len(v) for v in SWEEP_GRID.values())
    assert set(report["recommendations"]) == {"repeat", "disjoint"}
    for name in ("tokens_per_step.png", "sweep.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)


def test_cli_reports_bad_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": [1], "output": [2]}\n{"prompt": [1]}\n')
    assert main(["replay", str(bad), "--methods", "suffixspec", "--no-progress", "--no-cache"]) == 2
    assert f"{bad}:2: missing 'output'" in capsys.readouterr().err
    text = tmp_path / "text.jsonl"
    text.write_text('{"prompt": "hi", "output": "there"}\n')
    assert main(["replay", str(text), "--no-progress", "--no-cache"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"prompt": [1], "output": [2]}\n')
    assert main(["replay", str(ok), "--methods", "nope", "--no-cache"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["replay", str(ok), "--verify-cost", "quadratic", "--no-cache"]) == 2
