"""Draft proposers: the one interface through which every loop gets its draft trees.

``suffixspec.generate``, the replay tool, the serving engine and the engine adapters all drive a
:class:`Proposer` the same way (modelled on vLLM's ``v1/spec_decode`` proposers): the loop says
when a request starts, which tokens it emitted, and when it finishes, and asks for all active
requests' drafts in one call per step. :class:`SuffixProposer` drafts from a
:class:`suffixspec.SuffixCache`; a custom proposer implements the four methods.

Importing this module does not import torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from suffixspec._native import TokenTree
from suffixspec.cache import SuffixCache
from suffixspec.config import SpecConfig
from suffixspec.errors import InvalidTokenError, InvalidTreeError

__all__ = [
    "Proposer",
    "SuffixProposer",
    "TokenArray",
    "empty_tree",
    "fit_tree",
    "limit_depth",
    "merge_duplicate_siblings",
    "proposed_trees",
    "verifiable_tree",
    "verifiable_trees",
    "within_vocab",
]

TokenArray = npt.NDArray[np.int32]

_EMPTY = np.zeros(0, dtype=np.int32)


def empty_tree() -> TokenTree:
    return TokenTree(_EMPTY, _EMPTY)


def _keep_nodes(tree: TokenTree, keep: np.ndarray) -> TokenTree:
    """The nodes `keep` (a parent-closed boolean mask) of `tree`, order kept."""
    if keep.all():
        return tree
    new_index = np.cumsum(keep) - 1
    parents = np.asarray(tree.parents)[keep]
    parents = np.where(parents >= 0, new_index[np.maximum(parents, 0)], -1).astype(np.int32)
    return TokenTree(np.asarray(tree.token_ids)[keep], parents, np.asarray(tree.probs)[keep])


def within_vocab(tree: TokenTree, vocab_size: int) -> TokenTree:
    """`tree` without its nodes whose token is outside `[0, vocab_size)` and their subtrees: a
    draft is only a guess, and a shared cache may hold another tokenizer's ids."""
    ids = np.asarray(tree.token_ids)
    if len(ids) == 0 or int(ids.max()) < vocab_size:
        return tree
    keep = ids < vocab_size
    parents = np.asarray(tree.parents)
    for i in range(len(ids)):  # parents come first: a dropped parent drops its subtree
        if parents[i] >= 0 and not keep[parents[i]]:
            keep[i] = False
    return _keep_nodes(tree, keep)


def merge_duplicate_siblings(tree: TokenTree) -> TokenTree:
    """`tree` with siblings of equal token merged (their subtrees united): verification tries each
    child once, so a repeated sibling would count its token's probability twice when sampling."""
    if len(tree) < 2:
        return tree
    # One int64 key per (parent, token) pair: ids are < 2**31 and parents >= -1, so the keys are
    # distinct exactly when the pairs are (a 1-D unique is several times faster than axis=1).
    keys = (np.asarray(tree.parents, np.int64) << 32) | np.asarray(tree.token_ids, np.int64)
    if np.unique(keys).size == len(tree):
        return tree
    return TokenTree.merge([tree])


def limit_depth(tree: TokenTree, max_depth: int) -> TokenTree:
    """The nodes of `tree` at depth <= `max_depth` (a parent-closed subset, order kept)."""
    return _keep_nodes(tree, np.asarray(tree.depths) <= max_depth)


def fit_tree(tree: TokenTree, budget: int, max_depth: int) -> TokenTree:
    """What a loop verifies of a proposed tree: its `budget` best nodes (parent-closed), then only
    those at depth <= `max_depth`. Every loop applies this to every proposer's trees."""
    if len(tree) == 0:
        return tree
    return limit_depth(tree.prune(budget) if len(tree) > budget else tree, max_depth)


def proposed_trees(trees: Any, req_ids: Sequence[Hashable]) -> list[Any]:
    """A proposer's answer to one ``propose`` call for ``req_ids``, checked as a whole: a list
    (or tuple) of one entry per request, else :class:`InvalidTreeError`."""
    if not isinstance(trees, (list, tuple)) or len(trees) != len(req_ids):
        got = f"{len(trees)} trees" if isinstance(trees, (list, tuple)) else type(trees).__name__
        raise InvalidTreeError(f"the proposer returned {got} for {len(req_ids)} requests")
    return list(trees)


def verifiable_tree(tree: Any, req_id: Hashable, budget: int, max_depth: int, vocab_size: int) -> TokenTree:
    """What a loop verifies of one request's entry in a proposer's answer: the entry checked (a
    :class:`TokenTree` whose token ids lie inside the model's vocabulary, else a typed error
    naming the request), siblings of equal token merged, then fitted to the request's budget and
    depth (:func:`fit_tree`)."""
    if not isinstance(tree, TokenTree):
        raise InvalidTreeError(
            f"the proposer returned a {type(tree).__name__} for request {req_id!r}, not a TokenTree"
        )
    top = int(np.asarray(tree.token_ids).max()) if len(tree) else -1
    if top >= vocab_size:  # (negative ids are refused by TokenTree itself)
        raise InvalidTokenError(
            f"the proposer drafted token id {top} for request {req_id!r}, outside the "
            f"model's vocabulary [0, {vocab_size})"
        )
    return fit_tree(merge_duplicate_siblings(tree), budget, max_depth)


def verifiable_trees(
    trees: Any,
    req_ids: Sequence[Hashable],
    budgets: Sequence[int],
    max_depths: Sequence[int],
    vocab_size: int,
) -> list[TokenTree]:
    """What every loop verifies of a proposer's answer to one ``propose`` call: the answer checked
    as a whole (:func:`proposed_trees`), then each request's tree (:func:`verifiable_tree`). One
    pair of functions, so that ``generate`` and the engine verify the same trees from the same
    drafts (tests/test_loops_agree.py); the engine applies the two parts separately, so that one
    request's bad tree ends only that request."""
    return [
        verifiable_tree(tree, req_id, budget, depth, vocab_size)
        for tree, req_id, budget, depth in zip(
            proposed_trees(trees, req_ids), req_ids, budgets, max_depths, strict=True
        )
    ]


@runtime_checkable
class Proposer(Protocol):
    """The source of the draft trees that one verification step checks."""

    def start(self, req_id: Hashable, prompt: TokenArray) -> None:
        """A request begins with `prompt` (int32)."""

    def extend(self, req_id: Hashable, tokens: TokenArray) -> None:
        """The request emitted `tokens` (int32): accepted draft tokens plus the model's own."""

    def propose(
        self,
        req_ids: Sequence[Hashable],
        contexts: Sequence[TokenArray],
        budgets: Sequence[int],
        max_depths: Sequence[int],
    ) -> list[TokenTree]:
        """One tree per request continuing `contexts[i]` (prompt + output so far; its last token is
        the tree's root), of at most `budgets[i]` nodes; nodes deeper than `max_depths[i]` are
        useless (the request stops before) and dropped by the caller."""
        ...

    def finish(self, req_id: Hashable) -> None:
        """The request is done (also called when generation is aborted, unless the proposer has
        an `abort(req_ids)` method: then that is called instead, with every request of the
        failed call, finished ones included, so that it can undo what the call did)."""


class SuffixProposer:
    """Drafts from a :class:`suffixspec.SuffixCache`: the request's own prompt and output plus every
    finished response cached before (so later requests of the process speculate from them), one
    native call per step for the whole batch. Drafts whose context match is shorter than
    `spec.min_match_len` are not proposed, nor draft nodes outside `[0, vocab_size)` (when
    given): the cache may be shared with other models."""

    _ids = itertools.count()

    def __init__(self, cache: SuffixCache, spec: SpecConfig, vocab_size: int | None = None):
        self.cache = cache
        self.spec = spec
        self.vocab_size = vocab_size
        # The cache matches suffixes of at most max_depth tokens: pass only that tail.
        self.context_len = int(getattr(cache, "max_depth", spec.max_depth))

    @classmethod
    def new_request_id(cls) -> str:
        return f"suffixspec.generate:{next(cls._ids)}"

    def start(self, req_id: Hashable, prompt: TokenArray) -> None:
        self.cache.start_request(req_id, prompt)

    def extend(self, req_id: Hashable, tokens: TokenArray) -> None:
        self.cache.add_active_response(req_id, tokens)

    def propose(
        self,
        req_ids: Sequence[Hashable],
        contexts: Sequence[TokenArray],
        budgets: Sequence[int],
        max_depths: Sequence[int],
    ) -> list[TokenTree]:
        trees = [empty_tree()] * len(req_ids)
        asked = [i for i, b in enumerate(budgets) if b > 0 and max_depths[i] > 0 and len(contexts[i])]
        if not asked:
            return trees
        spec = self.spec
        # A path draft needs no more tokens than the request can still emit; a tree may be wider.
        wanted = [budgets[i] if spec.use_tree_spec else min(budgets[i], max_depths[i]) for i in asked]
        kwargs = {**spec.speculate_kwargs(), "max_spec_tokens": max(wanted)}
        drafts = self._speculate(
            [req_ids[i] for i in asked], [contexts[i][-self.context_len :] for i in asked], kwargs
        )
        for i, draft in zip(asked, drafts, strict=True):
            if len(draft.token_ids) and draft.match_len >= spec.min_match_len:
                trees[i] = TokenTree.from_draft(draft)
                if self.vocab_size is not None:
                    trees[i] = within_vocab(trees[i], self.vocab_size)
        return trees

    def _speculate(
        self, req_ids: list[Hashable], contexts: list[TokenArray], kwargs: dict[str, Any]
    ) -> list[Any]:
        """The cache's drafts for these requests (one native call)."""
        if len(req_ids) == 1:  # one request: the plain call skips the batch's thread-pool hand-off
            return [self.cache.speculate(req_ids[0], contexts[0], **kwargs)]
        return self.cache.speculate_batch(req_ids, contexts, **kwargs)

    def finish(self, req_id: Hashable) -> None:
        self.cache.stop_request(req_id)

    def abort(self, req_ids: Sequence[Hashable]) -> None:
        """Undoes a failed call: its requests leave the cache, active or already cached."""
        for req_id in req_ids:
            if req_id in self.cache.active_requests:
                self.cache.stop_request(req_id)
            if req_id in self.cache.cached_requests:
                self.cache.evict_cached_response(req_id)

    def memory_bytes(self) -> int:
        """Memory the cache holds, in bytes."""
        return int(self.cache.stats()["bytes"])
