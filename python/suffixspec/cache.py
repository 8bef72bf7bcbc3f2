"""``SuffixCache``: the suffix-tree draft cache of SuffixDecoding, keyed by any hashable request id.

A drop-in replacement for ``arctic_inference.suffix_decoding.SuffixDecodingCache`` (same
constructor, properties and methods; arctic's own simulator runs on it unmodified, see
``tests/test_cache_simulator.py``), backed by the native ``SuffixCacheCore``. Differences from
arctic, all deliberate:

* ``cached_requests`` lists the *stopped* requests whose responses are still cached, oldest
  stop first (arctic also lists active requests, which own a slot of its global tree).
* The budgets (``max_cached_requests`` and the extra ``max_cached_tokens``) apply to stopped
  responses only and are enforced at ``stop_request``, evicting the oldest stop first; arctic
  counts active requests too and may evict the response of a request still running.
* Memory is bounded by default: ``max_cached_requests=-1`` (arctic's "no limit", the default)
  means :data:`DEFAULT_MAX_CACHED_REQUESTS` here; ``None`` lifts the request limit (the token
  budget still applies). Empty responses are not kept (arctic keeps a slot for each).
  ``max_depth`` is at most :data:`MAX_DEPTH` (ingestion costs ``max_depth`` steps per token).
* Unknown request ids raise :class:`~suffixspec.errors.UnknownRequestError` (a ``KeyError``
  and a ``ValueError``, so arctic's ``except ValueError`` still works). A duplicate start raises
  ``DuplicateRequestError`` (a ``ValueError``, as in arctic). Every bad input raises a
  :class:`~suffixspec.errors.SuffixSpecError` subclass and changes nothing.
* Token ids may be given in every form arctic accepts (lists of ints or of numpy integer
  scalars, a single int, integer numpy arrays) and also as torch tensors; bools are refused.
* Drafts are :class:`suffixspec.Draft` objects: ``token_ids``/``parents``/``probs`` are Python
  lists as in arctic (probabilities in float64 where arctic's are float32); the same data is
  available without a copy as numpy arrays (``token_ids_array``, ``parents_array``,
  ``probs_array``).
* Every match length up to ``min(len(context), max_depth)`` is tried (arctic never matches the
  whole context) and the highest score wins, ties going to the longer match; so scores are never
  below arctic's, except that a path draft facing equally frequent continuations follows the
  smallest token id where arctic follows the first one seen, and the two paths may then score
  differently.
* ``max_spec_tokens=None`` means ``max_depth``: arctic documents this, but its 0.3.0 code
  fails on ``None`` (``AttributeError``).
* ``global_tree`` (alias ``_global_tree``, the name arctic's simulator uses) offers arctic's
  ``check_integrity()`` (``""`` when sound) and ``estimate_memory()`` (bytes).

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

from suffixspec import _native
from suffixspec._native import Draft, SuffixCacheCore
from suffixspec.errors import DTypeError, DuplicateRequestError, InvalidParameterError, UnknownRequestError

__all__ = [
    "DEFAULT_MAX_CACHED_REQUESTS",
    "DEFAULT_MAX_CACHED_TOKENS",
    "MAX_DEPTH",
    "GlobalTreeView",
    "RequestIdsView",
    "SuffixCache",
    "TokenSequence",
]

DEFAULT_MAX_CACHED_TOKENS: int = _native.DEFAULT_MAX_CACHED_TOKENS
"""Default token budget of cached responses (about 4M tokens)."""

DEFAULT_MAX_CACHED_REQUESTS: int = _native.DEFAULT_MAX_CACHED_REQUESTS
"""Default budget of cached responses (65536), what ``max_cached_requests=-1`` means."""

MAX_DEPTH: int = _native.MAX_DEPTH
"""Largest ``max_depth`` (1024): ingestion costs ``max_depth`` tree steps per token."""

TokenSequence = Sequence[int] | npt.NDArray[np.integer] | int | Any
"""Token ids: a list/tuple of ints or numpy integer scalars, a single int, a 1-D integer numpy
array (any integer dtype and layout) or a 1-D integer torch tensor (any device). Bools are
refused."""

# The id maps use this as "no entry": ``None`` is a valid request id.
_MISSING: Any = object()

# Python-side bookkeeping per request (two dict slots and the handle int), counted in ``stats()``.
_ID_MAP_BYTES_PER_REQUEST = 2 * 3 * 8 + sys.getsizeof(1 << 40)


class GlobalTreeView:
    """arctic's ``SuffixDecodingCache._global_tree``, as far as its users reach for it: an
    integrity check and a memory estimate of the global response tree."""

    def __init__(self, cache: SuffixCache) -> None:
        self._cache = cache

    def check_integrity(self) -> str:
        """``""`` when every invariant of the cache holds, else the first broken one (arctic's
        convention: ``if ret := tree.check_integrity(): raise ...``)."""
        try:
            self._cache.check_integrity()
        except RuntimeError as err:
            return str(err) or "integrity check failed"
        return ""

    def estimate_memory(self) -> int:
        """Heap bytes of the global response tree."""
        return self._cache._core.global_tree_bytes()

    def __repr__(self) -> str:
        return f"GlobalTreeView({self._cache!r})"


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
        if handle is _MISSING:
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
            node (``1..MAX_DEPTH``). ``max_tree_depth`` is accepted as an alias (arctic's name).
        max_cached_requests: Most stopped responses kept for other requests; ``-1`` (any
            negative; arctic's "no limit") = :data:`DEFAULT_MAX_CACHED_REQUESTS`, ``None`` = no
            limit (the token budget still bounds memory), ``0`` = no global tree (prompt-only
            drafts).
        max_cached_tokens: Most tokens of stopped responses kept; ``0`` = no global tree.
        max_tree_depth: Alias of ``max_depth``.

    Raises:
        InvalidParameterError: A depth outside ``1..MAX_DEPTH``, negative token budget, or conflicting
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
        negative = isinstance(max_cached_requests, int | np.integer) and max_cached_requests < 0
        if negative and not isinstance(max_cached_requests, bool | np.bool_):
            max_cached_requests = DEFAULT_MAX_CACHED_REQUESTS
        self._core = SuffixCacheCore(max_depth, max_cached_requests, max_cached_tokens)
        # Every mutation of the id <-> handle maps happens under this lock; readers use single
        # dict look-ups (atomic) and let the core report handles that went away meanwhile. The
        # core reports every response it drops, so the maps hold exactly the live requests.
        self._lock = threading.RLock()
        self._handles: dict[Hashable, int] = {}
        self._ids: dict[int, Hashable] = {}
        self._next_handle = itertools.count()

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
        """Most stopped responses kept; ``-1`` = no limit (only when built with ``None``),
        ``0`` = no global tree."""
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

    @property
    def global_tree(self) -> GlobalTreeView:
        """The global response tree's integrity check and memory estimate (arctic's
        ``_global_tree``)."""
        return GlobalTreeView(self)

    @property
    def _global_tree(self) -> GlobalTreeView:
        """Alias of :attr:`global_tree` under arctic's private name (its simulator uses it)."""
        return GlobalTreeView(self)

    def _handle_of(self, req_id: object) -> Any:
        """The handle of ``req_id``, or ``_MISSING``."""
        try:
            return self._handles.get(req_id, _MISSING)  # type: ignore[call-overload]
        except TypeError:
            raise DTypeError(f"request ids must be hashable, got {type(req_id).__name__}") from None

    def _active_handle(self, req_id: Hashable) -> int:
        handle = self._handle_of(req_id)
        if handle is _MISSING or not self._core.is_active(handle):
            raise UnknownRequestError(f"request {req_id!r} is not active")
        return handle

    def _known_handle(self, req_id: Hashable) -> int:
        """The handle of ``req_id`` without asking the core whether it is active (the native call
        that follows reports that, saving a round trip on the hot path)."""
        handle = self._handle_of(req_id)
        if handle is _MISSING:
            raise UnknownRequestError(f"request {req_id!r} is not active")
        return handle

    def _forget(self, handle: int) -> None:
        req_id = self._ids.pop(handle, _MISSING)
        if req_id is not _MISSING and self._handles.get(req_id, _MISSING) == handle:
            del self._handles[req_id]

    # --- lifecycle ---

    def start_request(self, req_id: Hashable, prompt_token_ids: TokenSequence) -> None:
        """Starts a request and stores its prompt for its own drafts until it stops.

        If ``req_id`` names a stopped request whose response is still cached, that response is
        evicted first (as arctic does): the id then names the new request only.

        Args:
            req_id: Any hashable id, unique among active requests.
            prompt_token_ids: The prompt (any :data:`TokenSequence`; may be empty).

        Raises:
            DuplicateRequestError: ``req_id`` is already active.
            InvalidTokenError: A negative token id or one above ``2**31 - 1``.
            DTypeError: Non-integer tokens, a non-1-D array, or an unhashable ``req_id``.
        """
        with self._lock:
            old = self._handle_of(req_id)
            if old is not _MISSING and self._core.is_active(old):
                raise DuplicateRequestError(f"request {req_id!r} is already active")
            handle = next(self._next_handle)
            self._core.start_request(handle, prompt_token_ids)  # validates before any change
            if old is not _MISSING:
                if self._core.is_cached(old):
                    self._core.evict_cached_response(old)
                self._forget(old)
            self._handles[req_id] = handle
            self._ids[handle] = req_id

    def add_active_response(self, req_id: Hashable, token_ids: TokenSequence) -> None:
        """Appends generated tokens (any :data:`TokenSequence`, or one int) to an active
        request's response (both of its trees).

        Raises:
            UnknownRequestError: ``req_id`` is not active.
            InvalidTokenError / DTypeError: Bad tokens (nothing is appended).
        """
        # Called once per generated token: the look-up of _known_handle is inlined.
        try:
            handle = self._handles.get(req_id, _MISSING)
        except TypeError:
            handle = self._handle_of(req_id)  # raises the DTypeError
        if handle is _MISSING:
            raise UnknownRequestError(f"request {req_id!r} is not active")
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
            for gone in self._core.stop_request(handle):
                self._forget(gone)

    def evict_cached_response(self, req_id: Hashable) -> None:
        """Removes a stopped request's cached response; ``req_id`` may then be reused.

        Raises:
            UnknownRequestError: No cached response for ``req_id`` (never stopped, already
                evicted, or still active).
        """
        with self._lock:
            handle = self._handle_of(req_id)
            if handle is _MISSING or not self._core.is_cached(handle):
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
            max_spec_tokens: Most draft tokens (``None`` = ``max_depth``, as arctic documents).
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
                context,
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
        differ in length and ``DTypeError`` when either is not a sequence.
        """
        if isinstance(req_ids, str | bytes) or not isinstance(req_ids, Iterable):
            raise DTypeError(f"req_ids must be a sequence of request ids, got {type(req_ids).__name__}")
        req_ids = list(req_ids)
        handles = [self._known_handle(req_id) for req_id in req_ids]
        if max_spec_tokens is None:
            max_spec_tokens = self.max_depth
        try:
            return self._core.speculate_batch(
                handles,
                contexts,
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
        ``cached_tokens`` (of stopped responses), ``nodes`` and ``bytes`` (heap estimate of
        the native trees and bookkeeping plus the Python id maps)."""
        stats = self._core.stats()
        stats["bytes"] += len(self._ids) * _ID_MAP_BYTES_PER_REQUEST
        return stats

    def check_integrity(self) -> None:
        """Verifies every invariant of the trees and of the id bookkeeping (debug aid).

        Raises:
            RuntimeError: Describing the first broken invariant.
        """
        with self._lock:
            self._core.check_integrity()
            live = [*self._core.active_requests(), *self._core.cached_requests()]
            for handle in live:
                req_id = self._ids.get(handle, _MISSING)
                if req_id is _MISSING:
                    raise RuntimeError(f"native request handle {handle} has no request id")
                if self._handles.get(req_id, _MISSING) != handle:
                    raise RuntimeError(f"request id {req_id!r} does not map back to handle {handle}")
            if len(self._ids) != len(live) or len(self._handles) != len(live):
                raise RuntimeError(
                    f"the id maps hold {len(self._ids)}/{len(self._handles)} entries "
                    f"for {len(live)} live requests"
                )

    def __repr__(self) -> str:
        return (
            f"SuffixCache(max_depth={self.max_depth}, max_cached_requests={self.max_cached_requests}, "
            f"max_cached_tokens={self.max_cached_tokens})"
        )
