"""`benches/bench_drafts.py` runs as a program on a few requests of a shared trace (skipped where
`../shared/workloads` is absent) and reports both drafters per session half, and on the sessions
that begin after the requests read for the halves (`--unseen`), with sane figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from bench_drafts import unseen_requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches" / "bench_drafts.py"
WORKLOADS = ROOT.parent / "shared" / "workloads"
TRACE = "text2sql_spider_dev"


@pytest.mark.skipif(not (WORKLOADS / f"{TRACE}.jsonl").exists(), reason="shared workloads absent")
@pytest.mark.parametrize("tree", [False, True])
def test_reports_both_drafters_per_half(tmp_path: Path, tree: bool) -> None:
    args = ["--only", TRACE, "--limit", "40", "--repeats", "1", "--out", str(tmp_path)]
    args += ["--unseen", "--unseen-limit", "120"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, *(["--tree"] if tree else [])],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / ("bench_drafts_tree.json" if tree else "bench_drafts.json")).read_text())
    rows = report["rows"]
    assert rows and {row["half"] for row in rows} <= {"train", "test", "unseen"}
    assert "unseen" in {row["half"] for row in rows}
    assert all(row["workload"] == TRACE and row["requests"] > 0 for row in rows)
    methods = ("suffixspec-tree", "suffixspec-arctic-tree") if tree else ("suffixspec", "suffixspec-arctic")
    for row in rows:
        for method in methods:
            figures = row[method]
            # Every step emits at least one token; accepted drafts can only add to that.
            assert figures["tokens_per_step"] >= 1.0
            assert 0.0 <= figures["acceptance"] <= 1.0
            assert figures["speedup"] <= figures["tokens_per_step"]
            assert figures["speculate_us_mean"] > 0


def test_unseen_requests_are_whole_sessions_begun_after_the_read() -> None:
    sessions: list[str | None] = ["a", "a", "b", "b", "c", None, "c", "d", None]
    # "b" began inside the first 3 requests, so none of it is unseen, although it goes on past them.
    assert unseen_requests(sessions, 3) == [4, 5, 6, 7, 8]
    assert unseen_requests(sessions, 0) == list(range(len(sessions)))
    assert unseen_requests(sessions, len(sessions)) == []
    assert unseen_requests(sessions, 6) == [7, 8]
