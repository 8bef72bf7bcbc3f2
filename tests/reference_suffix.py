"""A naive plain-Python reference of the suffix cache, written straight from the specification
(doc comments of ``rust/suffix-cache/src/lib.rs``), for property tests of the native code.

Nothing here is optimized: substring counts are recounted from the live sequences, and every
match length is tried (no early stopping), so the optimized native result must equal it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Tokens = tuple[int, ...]


@dataclass(frozen=True)
class Params:
    """The speculation parameters (``SpecParams``)."""

    max_spec_tokens: int
    max_spec_factor: float = 1.0
    max_spec_offset: float = 0.0
    min_token_prob: float = 0.1
    use_tree_spec: bool = False

    def token_budget(self, match_len: int) -> int:
        """``min(max_spec_tokens, floor(m * factor + offset + 1e-6))``, clamped at 0."""
        limit = match_len * self.max_spec_factor + self.max_spec_offset + 1e-6
        return 0 if limit < 0 else min(self.max_spec_tokens, math.floor(limit))

    def kwargs(self) -> dict[str, object]:
        return {
            "max_spec_tokens": self.max_spec_tokens,
            "max_spec_factor": self.max_spec_factor,
            "max_spec_offset": self.max_spec_offset,
            "min_token_prob": self.min_token_prob,
            "use_tree_spec": self.use_tree_spec,
        }


@dataclass
class RefDraft:
    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0


def substring_counts(sequences: Iterable[Sequence[int]], max_depth: int) -> Counter[Tokens]:
    """Occurrences of every substring of length ``1..max_depth`` (overlapping ones included)."""
    counts: Counter[Tokens] = Counter()
    for seq in sequences:
        seq = tuple(seq)
        for start in range(len(seq)):
            for end in range(start + 1, min(len(seq), start + max_depth) + 1):
                counts[seq[start:end]] += 1
    return counts


def _children(counts: Counter[Tokens]) -> dict[Tokens, dict[int, int]]:
    children: dict[Tokens, dict[int, int]] = {}
    for string, count in counts.items():
        children.setdefault(string[:-1], {})[string[-1]] = count
    return children


def _finish(draft: RefDraft) -> RefDraft:
    score = 0.0
    for prob in draft.probs:  # left to right, as a plain loop would
        score += prob
    draft.score = score
    return draft


def _path_draft(counts, children, matched: Tokens, budget: int, min_prob: float) -> RefDraft:
    draft = RefDraft()
    node, prob = matched, 1.0
    while len(draft.token_ids) < budget:
        options = children.get(node)
        if not options:
            break
        token = min(options, key=lambda t: (-options[t], t))  # highest count, then smallest id
        child_prob = prob * (options[token] / counts[node])
        if child_prob < min_prob:
            break
        draft.parents.append(len(draft.token_ids) - 1)
        draft.token_ids.append(token)
        draft.probs.append(child_prob)
        node, prob = (*node, token), child_prob
    return _finish(draft)


def _tree_draft(counts, children, matched: Tokens, budget: int, min_prob: float) -> RefDraft:
    draft = RefDraft()
    frontier: list[tuple[float, int, Tokens, float, int]] = []
    pushed = 0

    def push_children(node: Tokens, prob: float, index: int) -> None:
        nonlocal pushed
        options = children.get(node, {})
        for token in sorted(options):
            child_prob = prob * (options[token] / counts[node])
            if child_prob >= min_prob:
                heapq.heappush(frontier, (-child_prob, pushed, (*node, token), child_prob, index))
                pushed += 1

    push_children(matched, 1.0, -1)
    while frontier and len(draft.token_ids) < budget:
        _, _, node, prob, parent = heapq.heappop(frontier)
        draft.token_ids.append(node[-1])
        draft.parents.append(parent)
        draft.probs.append(prob)
        push_children(node, prob, len(draft.token_ids) - 1)
    return _finish(draft)


def draft_at(counts: Counter[Tokens], context: Sequence[int], match_len: int, params: Params) -> RefDraft:
    """The draft for one match length (empty when the suffix does not occur)."""
    matched = tuple(context[len(context) - match_len :])
    if counts.get(matched, 0) == 0:
        return RefDraft()
    build = _tree_draft if params.use_tree_spec else _path_draft
    draft = build(counts, _children(counts), matched, params.token_budget(match_len), params.min_token_prob)
    draft.match_len = match_len if draft.token_ids else 0
    return draft


def best_draft(counts: Counter[Tokens], max_depth: int, context: Sequence[int], params: Params) -> RefDraft:
    """Exhaustive search over every match length: highest score, ties to the longer match."""
    best = RefDraft()
    for match_len in range(1, min(len(context), max_depth) + 1):
        draft = draft_at(counts, context, match_len, params)
        if draft.token_ids and draft.score >= best.score:
            best = draft
    return best


class RefTree:
    """Reference of ``SuffixTree``: sequences kept verbatim, counts recomputed on demand."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.seqs: dict[int, list[int]] = {}

    def extend(self, seq_id: int, tokens: Sequence[int]) -> None:
        self.seqs.setdefault(seq_id, []).extend(tokens)

    def remove(self, seq_id: int) -> None:
        del self.seqs[seq_id]

    def counts(self) -> Counter[Tokens]:
        return substring_counts(self.seqs.values(), self.max_depth)

    def num_tokens(self) -> int:
        return sum(len(seq) for seq in self.seqs.values())

    def speculate(self, context: Sequence[int], params: Params) -> RefDraft:
        return best_draft(self.counts(), self.max_depth, context, params)


@dataclass
class _Request:
    prompt: list[int]
    response: list[int] = field(default_factory=list)


class RefCache:
    """Reference of ``SuffixCache`` (at the level of the Python wrapper's request ids).

    Local tree of an active request: prompt + response as one sequence. Global tree: responses
    of active requests and of cached (stopped) ones, unless a budget is 0. Budgets apply to
    cached responses at stop time, evicting the oldest stop first; an empty response, or one
    larger than the whole token budget, is not cached at all. Restarting a cached id evicts its old response.
    """

    def __init__(self, max_depth: int, max_cached_requests: int | None, max_cached_tokens: int) -> None:
        self.max_depth = max_depth
        self.max_cached_requests = max_cached_requests
        self.max_cached_tokens = max_cached_tokens
        self.global_enabled = max_cached_requests != 0 and max_cached_tokens != 0
        self.active: dict[object, _Request] = {}
        self.cached: dict[object, list[int]] = {}  # insertion order = stop order

    def start_request(self, req_id: object, prompt: Sequence[int]) -> None:
        assert req_id not in self.active
        self.cached.pop(req_id, None)
        self.active[req_id] = _Request(list(prompt))

    def add_active_response(self, req_id: object, tokens: Sequence[int]) -> None:
        self.active[req_id].response.extend(tokens)

    def stop_request(self, req_id: object) -> None:
        request = self.active.pop(req_id)
        if not self.global_enabled or not request.response or len(request.response) > self.max_cached_tokens:
            # An empty response is not kept; one larger than the whole budget is dropped
            # instead of flushing the cache.
            return
        self.cached[req_id] = request.response
        while self.cached and (
            (self.max_cached_requests is not None and len(self.cached) > self.max_cached_requests)
            or self.cached_tokens() > self.max_cached_tokens
        ):
            del self.cached[next(iter(self.cached))]

    def evict_cached_response(self, req_id: object) -> None:
        del self.cached[req_id]

    def cached_tokens(self) -> int:
        return sum(len(response) for response in self.cached.values())

    def tokens(self) -> int:
        local = sum(len(r.prompt) + len(r.response) for r in self.active.values())
        if not self.global_enabled:
            return local
        return local + sum(len(r.response) for r in self.active.values()) + self.cached_tokens()

    def global_sequences(self) -> list[list[int]]:
        if not self.global_enabled:
            return []
        return [r.response for r in self.active.values()] + list(self.cached.values())

    def speculate(self, req_id: object, context: Sequence[int], params: Params) -> RefDraft:
        request = self.active[req_id]
        local_counts = substring_counts([request.prompt + request.response], self.max_depth)
        local = best_draft(local_counts, self.max_depth, context, params)
        global_counts = substring_counts(self.global_sequences(), self.max_depth)
        remote = best_draft(global_counts, self.max_depth, context, params)
        return local if local.score >= remote.score else remote


def assert_same_draft(native: object, expected: RefDraft) -> None:
    """Asserts that a native ``Draft`` equals the reference one (same float operations, so exact)."""
    got = RefDraft(
        token_ids=native.token_ids,  # type: ignore[attr-defined]
        parents=native.parents,  # type: ignore[attr-defined]
        probs=native.probs,  # type: ignore[attr-defined]
        score=native.score,  # type: ignore[attr-defined]
        match_len=native.match_len,  # type: ignore[attr-defined]
    )
    assert got == expected
