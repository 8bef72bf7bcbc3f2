"""Draft proposers replayed side by side: suffixspec (path and tree mode; its own drafter and
arctic-identical drafts), arctic-inference's suffix cache, and prompt lookup (transformers'
n-gram candidate generator).

A new method plugs in by implementing :class:`Proposer` and registering a factory in
:data:`METHODS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from suffixspec.errors import InvalidParameterError

__all__ = [
    "METHODS",
    "ArcticCacheProposer",
    "PromptLookupProposer",
    "Proposer",
    "SpecParams",
    "SuffixCacheProposer",
    "available_methods",
    "chain_parents",
    "make_proposer",
]

TokenArray = npt.NDArray[np.int32]

_CHAIN = np.arange(-1, 4095, dtype=np.int32)


def chain_parents(n: int) -> npt.NDArray[np.int32]:
    """Parents of a path draft of ``n`` tokens: ``[-1, 0, 1, ..., n-2]``."""
    return _CHAIN[:n].copy() if n <= len(_CHAIN) else np.arange(-1, n - 1, dtype=np.int32)


@runtime_checkable
class Proposer(Protocol):
    """A speculation method as the replay drives it (one instance per replayed trace)."""

    name: str

    def start(self, req_id: int, prompt: TokenArray) -> None:
        """A request begins with ``prompt``."""

    def propose(self, req_id: int, context: TokenArray) -> tuple[Sequence[int], Sequence[int]]:
        """A draft tree ``(token_ids, parents)`` to follow ``context`` (prompt + output so far);
        parent -1 is the last context token, parents come before their children."""
        ...

    def observe(self, req_id: int, tokens: TokenArray) -> None:
        """``tokens`` were emitted by one verification step (accepted draft + bonus token)."""

    def stop(self, req_id: int) -> None:
        """The request finished."""

    def memory_bytes(self) -> int:
        """Memory the method holds for its caches, in bytes."""
        ...


@dataclass(frozen=True)
class SpecParams:
    """Speculation settings shared by the methods (arctic-inference's parameter names)."""

    max_depth: int = 64
    max_spec_tokens: int = 32
    max_spec_factor: float = 1.0
    max_spec_offset: float = 0.0
    min_token_prob: float = 0.1
    #: Node budget of tree mode: drafts are pruned to their most probable ``tree_budget`` nodes.
    tree_budget: int = 32
    #: Longest n-gram prompt lookup tries to match.
    max_ngram: int = 2

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_spec_tokens", "tree_budget", "max_ngram"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_token_prob <= 1.0:
            raise InvalidParameterError(f"min_token_prob must be in [0, 1], got {self.min_token_prob}")
        if not np.isfinite(self.max_spec_factor) or self.max_spec_factor < 0:
            raise InvalidParameterError(f"max_spec_factor must be >= 0, got {self.max_spec_factor}")
        if not np.isfinite(self.max_spec_offset):
            raise InvalidParameterError(f"max_spec_offset must be finite, got {self.max_spec_offset}")

    def with_(self, **changes: Any) -> SpecParams:
        return replace(self, **changes)


class SuffixCacheProposer:
    """Drives a cache with arctic-inference's API (``suffixspec.SuffixCache`` or arctic's own):
    prompts go in at ``start``, emitted tokens into the global cache as they are produced.
    ``drafter`` is passed on to suffixspec's cache (``None``: arctic's, which has no choice)."""

    def __init__(
        self, name: str, cache: Any, params: SpecParams, tree: bool, drafter: str | None = None
    ) -> None:
        self.name = name
        self.cache = cache
        self.params = params
        self.tree = tree
        self._drafter = {} if drafter is None else {"drafter": drafter}

    def start(self, req_id: int, prompt: TokenArray) -> None:
        self.cache.start_request(req_id, prompt)

    def propose(self, req_id: int, context: TokenArray) -> tuple[Sequence[int], Sequence[int]]:
        p = self.params
        draft = self.cache.speculate(
            req_id,
            context,
            max_spec_tokens=p.max_spec_tokens,
            max_spec_factor=p.max_spec_factor,
            max_spec_offset=p.max_spec_offset,
            min_token_prob=p.min_token_prob,
            use_tree_spec=self.tree,
            **self._drafter,
        )
        if self.tree and len(draft.token_ids) > p.tree_budget:
            from suffixspec import TokenTree

            pruned = TokenTree(draft.token_ids, draft.parents, draft.probs).prune(p.tree_budget)
            return pruned.token_ids, pruned.parents
        return draft.token_ids, draft.parents

    def observe(self, req_id: int, tokens: TokenArray) -> None:
        self.cache.add_active_response(req_id, tokens)

    def stop(self, req_id: int) -> None:
        self.cache.stop_request(req_id)

    def memory_bytes(self) -> int:
        return int(self.cache.stats()["bytes"])


class ArcticCacheProposer(SuffixCacheProposer):
    """arctic-inference's ``SuffixDecodingCache``; its memory is the trees' own estimate."""

    def memory_bytes(self) -> int:
        trees = [self.cache._global_tree, *self.cache._local_trees.values()]
        return int(sum(t.estimate_memory() for t in trees))


class PromptLookupProposer:
    """Prompt lookup decoding: the continuation of the latest earlier occurrence of the context's
    last n-gram, found by transformers' ``PromptLookupCandidateGenerator`` (n from ``max_ngram``
    down to 1, first match from the left)."""

    def __init__(self, name: str, params: SpecParams) -> None:
        import torch
        from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

        self.name = name
        self._torch = torch
        self._generator = PromptLookupCandidateGenerator(
            num_output_tokens=params.max_spec_tokens,
            max_matching_ngram_size=params.max_ngram,
            max_length=2**62,  # no length cap: the trace decides where the output ends
        )

    def start(self, req_id: int, prompt: TokenArray) -> None:
        pass  # stateless: it looks only at the context

    def propose(self, req_id: int, context: TokenArray) -> tuple[Sequence[int], Sequence[int]]:
        ids = self._torch.from_numpy(context.astype(np.int64))[None]
        candidates, _ = self._generator.get_candidates(ids)
        draft = candidates[0, len(context) :].numpy()
        return draft, chain_parents(len(draft))

    def observe(self, req_id: int, tokens: TokenArray) -> None:
        pass

    def stop(self, req_id: int) -> None:
        pass

    def memory_bytes(self) -> int:
        return 0  # nothing beyond the context the server holds anyway


def _suffixspec(name: str, params: SpecParams, tree: bool, drafter: str) -> Proposer:
    from suffixspec import SuffixCache

    return SuffixCacheProposer(name, SuffixCache(max_depth=params.max_depth), params, tree, drafter)


def _arctic(name: str, params: SpecParams, tree: bool) -> Proposer:
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    return ArcticCacheProposer(name, SuffixDecodingCache(max_tree_depth=params.max_depth), params, tree)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class MethodSpec:
    """How to build a method, and whether this environment can."""

    build: Callable[[str, SpecParams], Proposer]
    available: Callable[[], bool]
    description: str


#: Method name -> factory. The order is the order of report rows.
METHODS: dict[str, MethodSpec] = {
    "suffixspec": MethodSpec(
        lambda n, p: _suffixspec(n, p, tree=False, drafter="suffixspec"),
        lambda: True,
        "suffixspec cache, its own drafter (drafts sized by expected acceptance), path drafts",
    ),
    "suffixspec-tree": MethodSpec(
        lambda n, p: _suffixspec(n, p, tree=True, drafter="suffixspec"),
        lambda: True,
        "suffixspec cache, its own drafter, tree drafts (node budget)",
    ),
    "suffixspec-arctic": MethodSpec(
        lambda n, p: _suffixspec(n, p, tree=False, drafter="arctic"),
        lambda: True,
        "suffixspec cache drafting exactly like arctic-inference (SuffixCache's default), path drafts",
    ),
    "suffixspec-arctic-tree": MethodSpec(
        lambda n, p: _suffixspec(n, p, tree=True, drafter="arctic"),
        lambda: True,
        "suffixspec cache drafting like arctic-inference, tree drafts (node budget)",
    ),
    "arctic": MethodSpec(
        lambda n, p: _arctic(n, p, tree=False),
        lambda: _has("arctic_inference"),
        "arctic-inference SuffixDecodingCache, path drafts",
    ),
    "arctic-tree": MethodSpec(
        lambda n, p: _arctic(n, p, tree=True),
        lambda: _has("arctic_inference"),
        "arctic-inference SuffixDecodingCache, tree drafts (node budget)",
    ),
    "prompt-lookup": MethodSpec(
        lambda n, p: PromptLookupProposer(n, p),
        lambda: _has("transformers") and _has("torch"),
        "transformers' prompt lookup (n-gram match over the context)",
    ),
}

#: Methods replayed when none are named (those available).
DEFAULT_METHODS = ("suffixspec", "suffixspec-arctic", "suffixspec-tree", "arctic", "prompt-lookup")


def available_methods(names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against :data:`METHODS` (an unknown or unavailable name raises), or the
    available default methods when ``None``."""
    if names is None:
        return [m for m in DEFAULT_METHODS if METHODS[m].available()]
    for name in names:
        if name not in METHODS:
            raise InvalidParameterError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
        if not METHODS[name].available():
            raise InvalidParameterError(f"method {name!r} is not available here (package not installed)")
    return list(dict.fromkeys(names))


def make_proposer(name: str, params: SpecParams) -> Proposer:
    """A fresh instance of method ``name``."""
    if name not in METHODS:
        raise InvalidParameterError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name].build(name, params)
