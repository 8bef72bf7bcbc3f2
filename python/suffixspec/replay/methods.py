"""Draft proposers replayed side by side: suffixspec (path and tree mode; its own drafter and
arctic-identical drafts), arctic-inference's suffix cache, and prompt lookup (transformers'
n-gram candidate generator).

Every method is a :class:`suffixspec.proposer.Proposer` (the one proposer interface, also used by
``suffixspec.generate`` and the engines) configured by a :class:`suffixspec.SpecConfig`. A new
method plugs in by registering a factory in :data:`METHODS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from suffixspec._native import TokenTree
from suffixspec.config import SpecConfig
from suffixspec.errors import InvalidParameterError
from suffixspec.proposer import Proposer, SuffixProposer, TokenArray, empty_tree

__all__ = [
    "DEFAULT_MAX_NGRAM",
    "METHODS",
    "ArcticProposer",
    "Method",
    "PromptLookupProposer",
    "Proposer",
    "available_methods",
    "chain_parents",
    "make_method",
    "make_proposer",
]

#: Longest n-gram prompt lookup tries to match (transformers' default).
DEFAULT_MAX_NGRAM = 2

_CHAIN = np.arange(-1, 4095, dtype=np.int32)


@dataclass
class Method:
    """A named proposer as the replay drives it: ``budget`` draft nodes per step at most."""

    name: str
    proposer: Proposer
    budget: int

    def memory_bytes(self) -> int:
        """Memory the method holds for its caches, in bytes (0 when it reports none)."""
        report = getattr(self.proposer, "memory_bytes", None)
        return int(report()) if report is not None else 0


def chain_parents(n: int) -> np.ndarray:
    """Parents of a path draft of ``n`` tokens: ``[-1, 0, 1, ..., n-2]``."""
    return _CHAIN[:n].copy() if n <= len(_CHAIN) else np.arange(-1, n - 1, dtype=np.int32)


class ArcticProposer(SuffixProposer):
    """arctic-inference's ``SuffixDecodingCache`` driven as vLLM drives it: one ``speculate`` call
    per request and step (arctic has no batched call, and one drafter: its own). Everything
    else is :class:`~suffixspec.proposer.SuffixProposer`'s. Its memory is the trees' own estimate."""

    def _speculate(
        self, req_ids: list[Hashable], contexts: list[TokenArray], kwargs: dict[str, Any]
    ) -> list[Any]:
        kwargs = {k: v for k, v in kwargs.items() if k != "drafter"}
        return [self.cache.speculate(r, c, **kwargs) for r, c in zip(req_ids, contexts, strict=True)]

    def memory_bytes(self) -> int:
        cache: Any = self.cache  # arctic's SuffixDecodingCache
        trees = [cache._global_tree, *cache._local_trees.values()]
        return int(sum(t.estimate_memory() for t in trees))


class PromptLookupProposer:
    """Prompt lookup decoding: the continuation of the latest earlier occurrence of the context's
    last n-gram, found by transformers' ``PromptLookupCandidateGenerator`` (n from ``max_ngram``
    down to 1, first match from the left)."""

    def __init__(self, spec: SpecConfig, max_ngram: int = DEFAULT_MAX_NGRAM) -> None:
        import torch
        from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

        self._torch = torch
        self._generator = PromptLookupCandidateGenerator(
            num_output_tokens=spec.max_spec_tokens,
            max_matching_ngram_size=max_ngram,
            max_length=2**62,  # no length cap: the trace decides where the output ends
        )

    def start(self, req_id: Hashable, prompt: TokenArray) -> None:
        pass  # stateless: it looks only at the context

    def extend(self, req_id: Hashable, tokens: TokenArray) -> None:
        pass

    def propose(
        self,
        req_ids: Sequence[Hashable],
        contexts: Sequence[TokenArray],
        budgets: Sequence[int],
        max_depths: Sequence[int],
    ) -> list[TokenTree]:
        trees = []
        for context in contexts:
            ids = self._torch.from_numpy(np.asarray(context, dtype=np.int64))[None]
            candidates, _ = self._generator.get_candidates(ids)  # type: ignore[arg-type]
            draft = candidates[0, len(context) :].numpy().astype(np.int32)
            trees.append(TokenTree(draft, chain_parents(len(draft))) if len(draft) else empty_tree())
        return trees

    def finish(self, req_id: Hashable) -> None:
        pass

    def memory_bytes(self) -> int:
        return 0  # nothing beyond the context the server holds anyway


def _suffixspec(spec: SpecConfig, tree: bool, drafter: str | None = None) -> Proposer:
    """suffixspec's cache; ``drafter`` None keeps the settings' (suffixspec's own by default)."""
    from suffixspec import SuffixCache

    spec = spec.replace(use_tree_spec=tree, **({} if drafter is None else {"drafter": drafter}))
    return SuffixProposer(SuffixCache(**spec.cache_kwargs()), spec)


def _arctic(spec: SpecConfig, tree: bool) -> Proposer:
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    spec = spec.replace(use_tree_spec=tree)
    cache = SuffixDecodingCache(max_tree_depth=spec.max_depth, max_cached_requests=spec.max_cached_requests)
    return ArcticProposer(cache, spec)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class MethodSpec:
    """How to build a method, and whether this environment can."""

    build: Callable[[SpecConfig, int], Proposer]  # (settings, prompt lookup's max n-gram)
    available: Callable[[], bool]
    description: str


#: Method name -> factory. The order is the order of report rows.
METHODS: dict[str, MethodSpec] = {
    "suffixspec": MethodSpec(
        lambda spec, _: _suffixspec(spec, tree=False),
        lambda: True,
        "suffixspec cache, the settings' drafter (suffixspec's own by default), path drafts",
    ),
    "suffixspec-tree": MethodSpec(
        lambda spec, _: _suffixspec(spec, tree=True),
        lambda: True,
        "suffixspec cache, the settings' drafter, tree drafts (node budget)",
    ),
    "suffixspec-arctic": MethodSpec(
        lambda spec, _: _suffixspec(spec, tree=False, drafter="arctic"),
        lambda: True,
        "suffixspec cache drafting exactly like arctic-inference (SuffixCache's default), path drafts",
    ),
    "suffixspec-arctic-tree": MethodSpec(
        lambda spec, _: _suffixspec(spec, tree=True, drafter="arctic"),
        lambda: True,
        "suffixspec cache drafting like arctic-inference, tree drafts (node budget)",
    ),
    "arctic": MethodSpec(
        lambda spec, _: _arctic(spec, tree=False),
        lambda: _has("arctic_inference"),
        "arctic-inference SuffixDecodingCache, path drafts",
    ),
    "arctic-tree": MethodSpec(
        lambda spec, _: _arctic(spec, tree=True),
        lambda: _has("arctic_inference"),
        "arctic-inference SuffixDecodingCache, tree drafts (node budget)",
    ),
    "prompt-lookup": MethodSpec(
        lambda spec, max_ngram: PromptLookupProposer(spec, max_ngram),
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


def make_proposer(name: str, spec: SpecConfig, max_ngram: int = DEFAULT_MAX_NGRAM) -> Proposer:
    """A fresh instance of method ``name`` configured by ``spec``."""
    if name not in METHODS:
        raise InvalidParameterError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    if max_ngram < 1:
        raise InvalidParameterError(f"max_ngram must be at least 1, got {max_ngram}")
    return METHODS[name].build(spec, max_ngram)


def make_method(name: str, spec: SpecConfig, max_ngram: int = DEFAULT_MAX_NGRAM) -> Method:
    """Method ``name`` with a fresh proposer, its node budget that of ``spec``."""
    return Method(name, make_proposer(name, spec, max_ngram), spec.node_budget)
