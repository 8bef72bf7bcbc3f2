"""The engine's acceptance seam (`Engine(acceptance=...)`, the generation loop's
`AcceptancePolicy`): forced acceptance accepts exactly what the policy says, through the engine's
real drafting, scheduling, forward pass and compaction; sampling is refused with a policy. The
default (no policy) stays exact: tests/test_engine.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

from suffixspec import Engine, InvalidParameterError, RequestParams, SpecConfig
from suffixspec.generation.forcing import TraceForcedAcceptance
from tiny_models import VOCAB, tiny_model


def _trace(seed: int, count: int) -> list[tuple[list[int], list[int]]]:
    """Requests sharing a phrase (drafts from earlier responses get accepted) with request-specific
    tokens in between (drafts there get rejected)."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(2, VOCAB, 20).tolist()
    records = []
    for i in range(count):
        prompt = rng.integers(2, VOCAB, 4 + i).tolist() + phrase[:6]
        output = phrase[6:] + rng.integers(2, VOCAB, 3).tolist() + phrase[: 2 + (i % 4)]
        records.append((prompt, output))
    return records


class RecordingPolicy:
    """The trace forcer, recording every call: the tree and the tokens it put in place."""

    def __init__(self) -> None:
        self.forcer = TraceForcedAcceptance()
        self.calls: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, requests: Sequence[Any], trees: Sequence[Any], targets: np.ndarray) -> np.ndarray:
        forced = self.forcer(requests, trees, targets)
        for request, tree, row in zip(requests, trees, forced, strict=True):
            tokens = np.asarray(tree.token_ids, dtype=np.int64)
            self.calls.append((request.req_id, tokens, np.asarray(tree.parents), row.copy()))
        return forced


def _walk(tokens: np.ndarray, parents: np.ndarray, forced: np.ndarray) -> int:
    """Accepted nodes of greedy acceptance against `forced` (row 0: root, row i + 1: node i),
    walked here independently of the native code."""
    row, count = 0, 0
    while True:
        kids = [i for i in range(len(tokens)) if parents[i] == row - 1 and tokens[i] == forced[row]]
        if not kids:
            return count
        row, count = kids[0] + 1, count + 1


@pytest.mark.parametrize("policy", ["adaserve", "greedy", "uniform", "none"])
def test_forced_acceptance_accepts_exactly_what_the_policy_says(policy: str) -> None:
    model = tiny_model("LlamaForCausalLM")
    spec = SpecConfig(max_spec_tokens=8, use_tree_spec=True, min_match_len=1)
    recorder = RecordingPolicy()
    engine = Engine(
        model, spec=spec, num_blocks=256, block_size=8, policy=policy, acceptance=recorder, draft_tokens=4
    )
    records = _trace(0, 8)
    for i, (_, output) in enumerate(records):
        recorder.forcer.outputs[i] = np.asarray(output)
    # The first half first (their responses feed the cache), then the rest arriving together.
    outputs = {}
    for group in (range(4), range(4, 8)):
        for i in group:
            engine.add_request(i, records[i][0], RequestParams(max_new_tokens=len(records[i][1])))
        while engine.has_unfinished():
            outputs.update({o.request_id: o for o in engine.step() if o.finished})
    # The model's own argmax is not the trace: only forcing makes these outputs.
    assert [outputs[i].token_ids for i in range(8)] == [o for _, o in records]
    expected: dict[Any, int] = {}
    for rid, tokens, parents, forced in recorder.calls:
        expected[rid] = expected.get(rid, 0) + _walk(tokens, parents, forced)
    assert {i: outputs[i].stats.accepted_tokens for i in range(8)} == {
        i: expected.get(i, 0) for i in range(8)
    }
    drafted = sum(o.stats.draft_tokens for o in outputs.values())
    accepted = sum(o.stats.accepted_tokens for o in outputs.values())
    if policy == "none":
        assert drafted == 0
    else:  # forced both ways: some drafts accepted, some rejected
        assert 0 < accepted < drafted


def test_without_forcing_the_model_chooses() -> None:
    """The same requests without the policy follow the model, not the trace (so the test above
    really depends on forcing)."""
    model = tiny_model("LlamaForCausalLM")
    prompt, output = _trace(0, 1)[0]
    (out,) = Engine(model, num_blocks=64, block_size=8).generate(
        [prompt], RequestParams(max_new_tokens=len(output))
    )
    assert out.token_ids != output


def test_an_acceptance_policy_refuses_sampled_requests() -> None:
    engine = Engine(
        tiny_model("LlamaForCausalLM"), num_blocks=16, block_size=8, acceptance=TraceForcedAcceptance()
    )
    with pytest.raises(InvalidParameterError, match="sampling"):
        engine.add_request("s", [3, 4, 5], RequestParams(max_new_tokens=4, do_sample=True))
    assert not engine.has_unfinished() and len(engine.scheduler) == 0
