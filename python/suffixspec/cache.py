"""``SuffixCache``: the suffix-tree draft cache of SuffixDecoding, keyed by any hashable request id.

A drop-in replacement for ``arctic_inference.suffix_decoding.SuffixDecodingCache`` (same
constructor, properties and methods), backed by the native ``SuffixCacheCore``. Differences
from arctic, all deliberate:

* ``cached_requests`` lists the *stopped* requests whose responses are still cached, oldest
  stop first (arctic also lists active requests, which own a slot of its global tree).
* The budgets (``max_cached_requests`` and the extra ``max_cached_tokens``) apply to stopped
  responses only and are enforced at ``stop_request``, evicting the oldest stop first; arctic
  counts active requests too and may evict the response of a request still running.
* Unknown request ids raise :class:`~suffixspec.errors.UnknownRequestError` (a ``KeyError``);
  arctic raises ``ValueError``. A duplicate start raises ``DuplicateRequestError`` (a
  ``ValueError``, as in arctic).
* Drafts are :class:`suffixspec.Draft` objects whose ``token_ids``/``parents``/``probs`` are
  numpy float64/int32 arrays (arctic: lists, float32 probabilities). Every match length up to
  ``min(len(context), max_depth)`` is tried (arctic never matches the whole context) and the
  highest score wins, ties going to the longer match; so scores are never below arctic's, except
  that a path draft facing equally frequent continuations follows the smallest token id where
  arctic follows the first one seen, and the two paths may then score differently.
* ``max_spec_tokens=None`` means ``max_depth`` (arctic documents this, but its code fails).

Restarting a request id that was stopped and whose response is still cached evicts that old
response first, as arctic does; the id then names the new request only.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence, Set
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from suffixspec._native import Draft, SuffixCacheCore
from suffixspec.errors import DTypeError, DuplicateRequestError, InvalidParameterError, UnknownRequestError

__all__ = ["DEFAULT_MAX_CACHED_TOKENS", "RequestIdsView", "SuffixCache", "TokenSequence"]

DEFAULT_MAX_CACHED_TOKENS = 1 << 22
"""Default token budget of cached responses (about 4M tokens)."""

TokenSequence = Sequence[int] | npt.NDArray[np.integer] | Any
"""Token ids: a list/tuple of ints, a 1-D integer numpy array or a 1-D integer torch tensor."""

# The id <-> handle maps drop stale entries (responses the budgets evicted) once they have grown
# by this factor since the last pass.
_STALE_FACTOR = 2
_STALE_SLACK = 64


def _as_tokens(token_ids: TokenSequence) -> Any:
    """Returns ``token_ids`` in a form the native module reads: torch tensors go through numpy
    (moved to the CPU first); everything else is passed on and checked natively."""
    torch = sys.modules.get("torch")  # a tensor implies torch is already imported
    if torch is not None and isinstance(token_ids, torch.Tensor):
        return token_ids.detach().cpu().numpy()
    return token_ids


class RequestIdsView(Set):
    """A live, read-only set view of the active or cached request ids of a :class:`SuffixCache`.

    Supports ``in``, ``len``, iteration (active: start order; cached: oldest stop first) and the
    set operators, like the ``KeysView`` arctic returns.
    """

    def __init__(self, cache: SuffixCache, which: Literal["active", "cached"]) -> None:
        self._cache = cache
        self._which = which

    def _handles(self) -> list[int]:
        core = self._cache._core
        return core.active_requests() if self._which == "active" else core.cached_requests()

    def __contains__(self, req_id: object) -> bool:
        handle = self._cache._handle_of(req_id)
        if handle is None:
            return False
        core = self._cache._core
        return core.is_active(handle) if self._which == "active" else core.is_cached(handle)

    def __iter__(self) -> Iterator[Hashable]:
        ids = self._cache._ids
        return iter([ids[h] for h in self._handles() if h in ids])

    def __len__(self) -> int:
        return len(self._handles())

    @classmethod
    def _from_iterable(cls, iterable: Iterable[Any]) -> set[Any]:
        # Results of set operators are plain sets, not views.
        return set(iterable)

    def __repr__(self) -> str:
        return f"{self._which}_requests({list(self)!r})"


class SuffixCache:
    """Suffix-tree draft cache for speculative decoding (SuffixDecoding, arXiv 2411.04975).

    Each active request has a local tree over its prompt and response; a global tree holds the
    responses of all requests (active, and stopped ones until evicted). ``speculate`` matches
    the end of a context in both trees and returns the better draft.

    Thread-safe: several threads may call any method concurrently; the native work runs with the
    GIL released. Every failed call raises a :mod:`suffixspec.errors` exception and changes
    nothing.

    Args:
        max_depth: Depth of the suffix trees: the longest context match and deepest draft
            node (``>= 1``). ``max_tree_depth`` is accepted as an alias (arctic's name).
        max_cached_requests: Most stopped responses kept for other requests; ``-1`` (any
            negative) or ``None`` = no limit, ``0`` = no global tree (prompt-only drafts).
        max_cached_tokens: Most tokens of stopped responses kept; ``0`` = no global tree.
        max_tree_depth: Alias of ``max_depth``.

    Raises:
        InvalidParameterError: A depth below 1, negative token budget, or conflicting
            ``max_depth``/``max_tree_depth``.
        DTypeError: A parameter that is not an int.
    """

    def __init__(
        self,
        max_depth: int = 64,
        max_cached_requests: int | None = -1,
        max_cached_tokens: int = DEFAULT_MAX_CACHED_TOKENS,
        *,
        max_tree_depth: int | None = None,
    ) -> None:
        if max_tree_depth is not None:
            if max_depth != 64 and max_depth != max_tree_depth:
                raise InvalidParameterError(
                    f"max_depth={max_depth!r} and max_tree_depth={max_tree_depth!r} disagree "
                    "(max_tree_depth is an alias of max_depth: give one)"
                )
            max_depth = max_tree_depth
        negative = isinstance(max_cached_requests, int) and max_cached_requests < 0
        if negative and not isinstance(max_cached_requests, bool):
            max_cached_requests = None
        self._core = SuffixCacheCore(max_depth, max_cached_requests, max_cached_tokens)
        # Every mutation of the id <-> handle maps happens under this lock; readers use single
        # dict look-ups (atomic) and let the core report handles that went away meanwhile.
        self._lock = threading.RLock()
        self._handles: dict[Hashable, int] = {}
        self._ids: dict[int, Hashable] = {}
        self._next_handle = itertools.count()
        self._prune_at = _STALE_SLACK

    # --- configuration ---

    @property
    def max_depth(self) -> int:
        """Depth of the suffix trees (longest match, deepest draft node)."""
        return self._core.max_depth

    @property
    def max_tree_depth(self) -> int:
        """Alias of :attr:`max_depth` (arctic's name)."""
        return self._core.max_depth

    @property
    def max_cached_requests(self) -> int:
        """Most stopped responses kept; ``-1`` = no limit, ``0`` = no global tree."""
        limit = self._core.max_cached_requests
        return -1 if limit is None else limit

    @property
    def max_cached_tokens(self) -> int:
        """Most tokens of stopped responses kept; ``0`` = no global tree."""
        return self._core.max_cached_tokens

    # --- request ids ---

    @property
    def active_requests(self) -> RequestIdsView:
        """Live view of the ids of started, not yet stopped requests (start order)."""
        return RequestIdsView(self, "active")

    @property
    def cached_requests(self) -> RequestIdsView:
        """Live view of the ids of stopped requests whose responses are cached (oldest first)."""
        return RequestIdsView(self, "cached")

    def _handle_of(self, req_id: object) -> int | None:
        try:
            return self._handles.get(req_id)  # type: ignore[call-overload]
        except TypeError:
            raise DTypeError(f"request ids must be hashable, got {type(req_id).__name__}") from None

    def _active_handle(self, req_id: Hashable) -> int:
        handle = self._handle_of(req_id)
        if handle is None or not self._core.is_active(handle):
            raise UnknownRequestError(f"request {req_id!r} is not active")
        return handle

    def _known_handle(self, req_id: Hashable) -> int:
        """The handle of ``req_id`` without asking the core whether it is active (the native call
        that follows reports that, saving a round trip on the hot path)."""
        handle = self._handle_of(req_id)
        if handle is None:
            raise UnknownRequestError(f"request {req_id!r} is not active")
        return handle

    def _forget(self, handle: int) -> None:
        req_id = self._ids.pop(handle, None)
        if req_id is not None and self._handles.get(req_id) == handle:
            del self._handles[req_id]

    def _prune_stale(self) -> None:
        """Drops handles whose responses the budgets evicted; runs only when the maps have
        doubled since the last pass, so its cost is O(1) amortized per call."""
        if len(self._ids) <= self._prune_at:
            return
        live = set(self._core.active_requests()) | set(self._core.cached_requests())
        ids = {h: i for h, i in self._ids.items() if h in live}
        # Rebinding (not mutating) keeps lock-free readers on a consistent dict.
        self._handles = {i: h for h, i in ids.items()}
        self._ids = ids
        self._prune_at = _STALE_FACTOR * len(ids) + _STALE_SLACK

    # --- lifecycle ---

    def start_request(self, req_id: Hashable, prompt_token_ids: TokenSequence) -> None:
        """Starts a request and stores its prompt for its own drafts until it stops.

        If ``req_id`` names a stopped request whose response is still cached, that response is
        evicted first (as arctic does): the id then names the new request only.

        Args:
            req_id: Any hashable id, unique among active requests.
            prompt_token_ids: The prompt (list, tuple, 1-D integer numpy array or torch tensor;
                may be empty).

        Raises:
            DuplicateRequestError: ``req_id`` is already active.
            InvalidTokenError: A negative token id or one above ``2**31 - 1``.
            DTypeError: Non-integer tokens, a non-1-D array, or an unhashable ``req_id``.
        """
        prompt = _as_tokens(prompt_token_ids)
        with self._lock:
            old = self._handle_of(req_id)
            if old is not None and self._core.is_active(old):
                raise DuplicateRequestError(f"request {req_id!r} is already active")
            handle = next(self._next_handle)
            self._core.start_request(handle, prompt)  # validates everything before any change
            if old is not None:
                if self._core.is_cached(old):
                    self._core.evict_cached_response(old)
                self._forget(old)
            self._handles[req_id] = handle
            self._ids[handle] = req_id

    def add_active_response(self, req_id: Hashable, token_ids: TokenSequence) -> None:
        """Appends generated tokens to an active request's response (both of its trees).

        Raises:
            UnknownRequestError: ``req_id`` is not active.
            InvalidTokenError / DTypeError: Bad tokens (nothing is appended).
        """
        # Called once per generated token: the lookups of _known_handle/_as_tokens are inlined.
        try:
            handle = self._handles.get(req_id)
        except TypeError:
            handle = self._handle_of(req_id)  # raises the DTypeError
        if handle is None:
            raise UnknownRequestError(f"request {req_id!r} is not active")
        if type(token_ids) is not list:
            token_ids = _as_tokens(token_ids)
        try:
            self._core.add_active_response(handle, token_ids)
        except UnknownRequestError:  # stopped (and maybe still cached), or stopped meanwhile
            raise UnknownRequestError(f"request {req_id!r} is not active") from None

    def stop_request(self, req_id: Hashable) -> None:
        """Stops an active request: drops its prompt and keeps its response cached for other
        requests (the budgets may evict the oldest cached responses, or this one).

        Raises:
            UnknownRequestError: ``req_id`` is not active (e.g. stopped twice).
        """
        with self._lock:
            handle = self._active_handle(req_id)
            self._core.stop_request(handle)
            if not self._core.is_cached(handle):
                self._forget(handle)
            self._prune_stale()

    def evict_cached_response(self, req_id: Hashable) -> None:
        """Removes a stopped request's cached response; ``req_id`` may then be reused.

        Raises:
            UnknownRequestError: No cached response for ``req_id`` (never stopped, already
                evicted, or still active).
        """
        with self._lock:
            handle = self._handle_of(req_id)
            if handle is None or not self._core.is_cached(handle):
                raise UnknownRequestError(f"request {req_id!r} is not cached")
            self._core.evict_cached_response(handle)
            self._forget(handle)

    # --- drafts ---

    def speculate(
        self,
        req_id: Hashable,
        context: TokenSequence,
        max_spec_tokens: int | None = None,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
        drafter: str = "arctic",
    ) -> Draft:
        """Drafts the likely continuation of ``context`` for an active request.

        Every suffix of ``context`` of length ``m`` in ``1..min(len(context), max_depth)`` that
        occurs in the request's prompt tree or the global response tree is a candidate; it may
        draft up to ``min(max_spec_tokens, floor(m * max_spec_factor + max_spec_offset))``
        tokens, each with an estimated probability (the frequency of that continuation), and
        tokens below ``min_token_prob`` are dropped. The draft with the highest ``score`` (sum
        of probabilities) wins; ties go to the longer match, then to the prompt tree.

        Args:
            req_id: An active request.
            context: The tokens so far (prompt + response). Only its last ``max_depth`` tokens
                can matter, so only those are read (and checked): long contexts cost no more.
            max_spec_tokens: Most draft tokens (``None`` = ``max_depth``).
            max_spec_factor: Draft tokens allowed per matched token (``>= 0``).
            max_spec_offset: Draft tokens allowed on top of that (may be negative).
            min_token_prob: Probability floor of draft tokens, in ``[0, 1]``.
            use_tree_spec: Draft a tree (best-first over continuations) instead of one path.
            drafter: ``"arctic"`` (the default: arctic-inference's drafts, as described above)
                or ``"suffixspec"`` (drafts sized by expected acceptance, leaving the context's
                own occurrence out of the frequencies; ``max_spec_factor`` and
                ``max_spec_offset`` are not used). See ``benches/README.md``.

        Returns:
            A :class:`~suffixspec.Draft` (empty when nothing matches).

        Raises:
            UnknownRequestError: ``req_id`` is not active.
            InvalidParameterError: NaN/inf or out-of-range parameters.
            InvalidTokenError / DTypeError: Bad context tokens or parameter types.
        """
        handle = self._known_handle(req_id)
        if max_spec_tokens is None:
            max_spec_tokens = self.max_depth
        try:
            return self._core.speculate(
                handle,
                _as_tokens(context),
                max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                use_tree_spec,
                drafter,
            )
        except UnknownRequestError:  # stopped (and maybe still cached), or stopped meanwhile
            raise UnknownRequestError(f"request {req_id!r} is not active") from None

    def speculate_batch(
        self,
        req_ids: Sequence[Hashable],
        contexts: Sequence[TokenSequence],
        max_spec_tokens: int | None = None,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
        drafter: str = "arctic",
    ) -> list[Draft]:
        """:meth:`speculate` for every request of one engine step, in parallel in one native call.

        ``drafts[i]`` equals ``speculate(req_ids[i], contexts[i], ...)``. Same arguments and
        errors as :meth:`speculate`; also raises ``InvalidParameterError`` when the two lists
        differ in length.
        """
        req_ids = list(req_ids)
        handles = [self._known_handle(req_id) for req_id in req_ids]
        if max_spec_tokens is None:
            max_spec_tokens = self.max_depth
        try:
            return self._core.speculate_batch(
                handles,
                [_as_tokens(context) for context in contexts],
                max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                use_tree_spec,
                drafter,
            )
        except UnknownRequestError:  # one is stopped (or was stopped meanwhile): name it
            gone = next(
                (r for r, h in zip(req_ids, handles, strict=True) if not self._core.is_active(h)), None
            )
            raise UnknownRequestError(f"request {gone!r} is not active") from None

    # --- inspection ---

    def stats(self) -> dict[str, int]:
        """Size figures: ``active_requests``, ``cached_requests``, ``tokens`` (held by all
        trees: prompts + responses in the local trees, responses in the global tree),
        ``cached_tokens`` (of stopped responses), ``nodes`` and ``bytes`` (heap estimate)."""
        return self._core.stats()

    def check_integrity(self) -> None:
        """Verifies every invariant of the trees and of the id bookkeeping (debug aid).

        Raises:
            RuntimeError: Describing the first broken invariant.
        """
        with self._lock:
            self._core.check_integrity()
            for handle in [*self._core.active_requests(), *self._core.cached_requests()]:
                req_id = self._ids.get(handle)
                if req_id is None:
                    raise RuntimeError(f"native request handle {handle} has no request id")
                if self._handles.get(req_id) != handle:
                    raise RuntimeError(f"request id {req_id!r} does not map back to handle {handle}")

    def __repr__(self) -> str:
        return (
            f"SuffixCache(max_depth={self.max_depth}, max_cached_requests={self.max_cached_requests}, "
            f"max_cached_tokens={self.max_cached_tokens})"
        )
