"""Conformance with arctic-inference's own client code (issue 10): arctic's simulator
(``arctic_inference.suffix_decoding.simulator``), unmodified, with its module-level
``SuffixDecodingCache`` pointed at ``suffixspec.SuffixCache``, against arctic's own run.

The data is synthetic and pre-tokenized (train + eval split), its prompts longer than
``max_depth``, so the one deliberate matching difference (suffixspec also tries the whole
context as a match, arctic stops one token short) cannot arise: only the last ``max_depth``
tokens are matched by either. What remains is the documented tie-break: facing equally frequent
continuations, a path draft follows (and a tree draft under a token budget expands first) the
smallest token id, where arctic takes the first one seen. So
per request, the step records are identical up to the first step where the two drafts differ,
and that step must be a tie (equal scores); requests without such a step must match exactly.
Over those, the simulator's aggregate metrics must agree within 1%.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
arctic = pytest.importorskip("arctic_inference.suffix_decoding", reason="arctic-inference is not installed")
simulator = pytest.importorskip("arctic_inference.suffix_decoding.simulator")

from suffixspec import SuffixCache  # noqa: E402

MAX_DEPTH = 64
METRICS = ["req_speedup", "accept_rate", "avg_accept_toks", "avg_spec_toks"]


def synthetic(seed: int, requests: int) -> pd.DataFrame:
    """Prompts (>= 72 tokens) and responses made of shared motifs, as int32 arrays (the form
    the simulator's tokenizer step produces)."""
    rng = np.random.default_rng(seed)
    motifs = [rng.integers(0, 40, size=int(n)).astype(np.int32) for n in rng.integers(6, 12, size=12)]

    def text(pieces: int) -> np.ndarray:
        return np.concatenate([motifs[i] for i in rng.integers(0, len(motifs), size=pieces)]).astype(np.int32)

    return pd.DataFrame(
        {
            "prompt": [text(12) for _ in range(requests)],
            "response": [text(int(rng.integers(3, 9))) for _ in range(requests)],
        }
    )


def run(cache_class: type, monkeypatch, tree: bool, evict_fraction: float) -> pd.DataFrame:
    """arctic's ``process_task`` with the cache class swapped at module level, nothing else."""
    monkeypatch.setattr(simulator, "SuffixDecodingCache", cache_class)
    evals, train = synthetic(2, 20), synthetic(1, 40)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        records = simulator.process_task(
            dataset=evals,
            train_dataset=train,
            task_id=0,
            num_eval=None,
            num_train=None,
            seed=0,
            max_depth=MAX_DEPTH,
            max_spec_tokens=0,
            max_spec_factor=1.0,
            min_token_prob=0.1,
            use_tree_spec=tree,
            use_cached_prompt=True,
            evict_fraction=evict_fraction,
            evict_strategy="oldest",
            max_cached_requests=-1,
        )
    assert "Checking cache integrity... OK" in quiet.getvalue()
    return pd.DataFrame.from_records(records)


def first_difference(mine: pd.DataFrame, theirs: pd.DataFrame) -> tuple[int, pd.Series, pd.Series] | None:
    """The first step of one request whose records differ (timings aside), or None."""
    columns = ["match_len", "num_spec_toks", "num_accept_toks", "num_out_toks"]
    for (_, a), (_, b) in zip(mine.iterrows(), theirs.iterrows(), strict=False):
        if [a[c] for c in columns] != [b[c] for c in columns] or abs(a["score"] - b["score"]) > 1e-4:
            return int(a["step"]), a, b
    return None if len(mine) == len(theirs) else (min(len(mine), len(theirs)), None, None)


def summary(df: pd.DataFrame) -> pd.Series:
    return simulator.results_summary(df, []).iloc[0][METRICS]


@pytest.mark.parametrize("evict_fraction", [0.0, 0.5], ids=["no-eviction", "evict-oldest-half"])
@pytest.mark.parametrize("tree", [False, True], ids=["path", "tree"])
def test_arctic_simulator_runs_unmodified_and_agrees(monkeypatch, tree, evict_fraction):
    theirs = run(arctic.SuffixDecodingCache, monkeypatch, tree, evict_fraction)
    mine = run(SuffixCache, monkeypatch, tree, evict_fraction)
    tied = []
    for request_id, our_steps in mine.groupby("request_id"):
        their_steps = theirs[theirs["request_id"] == request_id]
        difference = first_difference(our_steps, their_steps)
        if difference is None:
            continue
        step, ours, arctics = difference
        assert ours is not None, f"request {request_id}: same steps, different lengths"
        # The only allowed cause: equal scores, different draft (the tie-break rule).
        assert ours["score"] == pytest.approx(arctics["score"], abs=1e-4), (request_id, step)
        assert ours["match_len"] == arctics["match_len"], (request_id, step)
        tied.append(request_id)
    assert len(tied) <= mine["request_id"].nunique() // 2, f"most requests diverge on ties: {tied}"
    same = ~mine["request_id"].isin(tied)
    assert (
        mine[same].groupby("request_id")["num_accept_toks"].sum().tolist()
        == theirs[~theirs["request_id"].isin(tied)].groupby("request_id")["num_accept_toks"].sum().tolist()
    )
    ours, arctics = summary(mine[same]), summary(theirs[~theirs["request_id"].isin(tied)])
    for metric in METRICS:
        assert ours[metric] == pytest.approx(arctics[metric], rel=0.01), metric
    # Over all requests too (ties included) the figures stay close.
    for metric in ("req_speedup", "avg_accept_toks"):
        assert summary(mine)[metric] == pytest.approx(summary(theirs)[metric], rel=0.02), metric
