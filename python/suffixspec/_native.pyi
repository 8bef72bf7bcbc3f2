"""Type stubs of the native module ``suffixspec._native`` (Rust, PyO3).

Token ids (``_TokenIds``) may be lists/tuples (or other sequences) of ints or numpy integer
scalars, a single int (one token), 1-D numpy arrays of any integer dtype and layout (contiguous,
aligned int32 arrays are borrowed without a copy; misaligned or strided ones are copied), or 1-D
integer torch tensors on any device. Bools (``True``, ``np.True_``, bool arrays and tensors) are
refused wherever an integer is expected. Arrays returned are numpy arrays owned by Python (no
copy back). Errors are instances of ``suffixspec.errors`` classes.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias, final

import numpy as np
import numpy.typing as npt

_TokenIds: TypeAlias = Sequence[int] | Sequence[np.integer] | int | np.integer | npt.NDArray[np.integer] | Any

__all__ = [
    "DEFAULT_MAX_CACHED_REQUESTS",
    "DEFAULT_MAX_CACHED_TOKENS",
    "MAX_DEPTH",
    "SPEC_DEFAULTS",
    "Draft",
    "SuffixCacheCore",
    "SuffixTree",
    "TokenTree",
    "__version__",
    "accept_greedy_batch",
    "build_tree_batch",
    "cuda_source",
    "cuda_source_names",
]

__version__: str

SPEC_DEFAULTS: dict[str, int | float | bool | str]
"""The drafting defaults of the Rust core (``suffixspec_cache::defaults``), read by ``suffixspec.SpecConfig``."""
MAX_DEPTH: int
"""Largest ``max_depth`` of a tree (ingestion costs ``max_depth`` steps per token)."""
DEFAULT_MAX_CACHED_REQUESTS: int
DEFAULT_MAX_CACHED_TOKENS: int

@final
class Draft:
    """A speculated token tree (see ``suffixspec.SuffixCache.speculate``).

    ``token_ids``, ``parents`` and ``probs`` are Python lists, as arctic-inference returns them
    (engines test them for truth and slice them in place); ``token_ids_array``, ``parents_array``
    and ``probs_array`` are the same data as numpy arrays without a copy."""

    @property
    def token_ids(self) -> list[int]:
        """Draft token ids, parents before children (a new list on each access)."""
    @property
    def parents(self) -> list[int]:
        """Parent index of each node; -1 = child of the last context token. Parents first."""
    @property
    def probs(self) -> list[float]:
        """Estimated probability that the model reaches each node."""
    @property
    def token_ids_array(self) -> npt.NDArray[np.int32]:
        """``token_ids`` as an int32 numpy array (no copy; do not modify it)."""
    @property
    def parents_array(self) -> npt.NDArray[np.int32]:
        """``parents`` as an int32 numpy array (no copy; do not modify it)."""
    @property
    def probs_array(self) -> npt.NDArray[np.float64]:
        """``probs`` as a float64 numpy array (no copy; do not modify it)."""
    @property
    def score(self) -> float: ...
    @property
    def match_len(self) -> int: ...
    def __len__(self) -> int: ...

@final
class SuffixCacheCore:
    """The native cache, keyed by integer request handles (``suffixspec.SuffixCache`` wraps it
    with arbitrary hashable request ids). Thread-safe; long calls release the GIL."""

    def __new__(
        cls,
        max_depth: int = 64,
        max_cached_requests: int | None = 65536,
        max_cached_tokens: int = 4194304,
    ) -> SuffixCacheCore: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_cached_requests(self) -> int | None: ...
    @property
    def max_cached_tokens(self) -> int: ...
    def start_request(self, req: int, prompt_token_ids: _TokenIds) -> None: ...
    def add_active_response(self, req: int, token_ids: _TokenIds) -> None: ...
    def stop_request(self, req: int) -> list[int]:
        """Returns the handles whose responses are no longer cached: ``req`` itself when its
        response was not kept (empty, or over the token budget), then those evicted, oldest first."""
    def evict_cached_response(self, req: int) -> None: ...
    def speculate(
        self,
        req: int,
        context: _TokenIds,
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
        drafter: str = "arctic",
    ) -> Draft: ...
    def speculate_batch(
        self,
        reqs: Sequence[int],
        contexts: Sequence[_TokenIds],
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
        drafter: str = "arctic",
    ) -> list[Draft]:
        """All requests of one engine step in one call (GIL released, requests in parallel)."""
    def active_requests(self) -> list[int]: ...
    def cached_requests(self) -> list[int]:
        """Oldest first."""
    def is_active(self, req: int) -> bool: ...
    def is_cached(self, req: int) -> bool: ...
    def stats(self) -> dict[str, int]:
        """Keys: active_requests, cached_requests, tokens, cached_tokens, nodes, bytes."""
    def global_tree_bytes(self) -> int:
        """Heap bytes of the global response tree (arctic's ``_global_tree.estimate_memory()``)."""
    def check_integrity(self) -> None:
        """Raises RuntimeError describing the first broken invariant (debug aid)."""

@final
class SuffixTree:
    """One suffix tree over several sequences (the building block of the cache)."""

    def __new__(cls, max_depth: int = 64) -> SuffixTree: ...
    @property
    def max_depth(self) -> int: ...
    def extend(self, seq_id: int, token_ids: _TokenIds) -> None: ...
    def remove(self, seq_id: int) -> None: ...
    def count(self, token_ids: _TokenIds) -> int:
        """Occurrences of the string (0 if empty, absent or longer than max_depth)."""
    def speculate(
        self,
        context: _TokenIds,
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
        drafter: str = "arctic",
    ) -> Draft: ...
    def num_tokens(self) -> int: ...
    def num_nodes(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def check_integrity(self) -> None: ...

@final
class TokenTree:
    """A token tree of draft nodes (parents before children) for one verification step.

    Node ``i`` has token ``token_ids[i]``, parent ``parents[i]`` (-1 = the root, i.e. the last
    context token) and depth ``depths[i]`` (1 for children of the root). Immutable.

    Where a ``Draft`` is accepted, any object with ``token_ids`` and ``parents`` attributes (and
    optionally ``probs``) works. Invalid trees raise ``InvalidTreeError`` (parents not in
    ``[-1, i)``, mismatched lengths, probabilities not finite in ``[0, 1]``),
    ``InvalidTokenError`` (negative ids) or ``DTypeError`` (non-integer ids or parents)."""

    def __new__(
        cls,
        token_ids: _TokenIds,
        parents: Sequence[int] | npt.NDArray[np.integer],
        probs: Sequence[float] | npt.NDArray[np.floating] | None = None,
    ) -> TokenTree:
        """``probs=None`` gives every node probability 1."""
    @staticmethod
    def from_draft(draft: Draft | TokenTree) -> TokenTree: ...
    @staticmethod
    def merge(trees: Sequence[TokenTree | Draft]) -> TokenTree:
        """Trie union: nodes with the same token under the same parent are merged (prob = max).
        Every root-to-node token path of an input is one of the result and vice versa; nodes are in
        first-seen order (inputs in order, each in index order), hence parents-first."""
    def prune(self, max_nodes: int) -> TokenTree:
        """The ``min(max_nodes, len)`` best nodes, ranked by path-min probability (the smallest
        prob from the root's child down to the node) descending, then index ascending. The kept set
        is parent-closed even if a child is more probable than its parent; no dropped node has a
        higher path-min probability than a kept one (with probabilities non-increasing along paths,
        as in suffix-tree drafts: no dropped node is more probable than a kept one). Kept nodes keep
        their relative order. ``max_nodes < 0`` raises ``InvalidParameterError``."""
    def __len__(self) -> int: ...
    @property
    def token_ids(self) -> npt.NDArray[np.int32]: ...
    @property
    def parents(self) -> npt.NDArray[np.int32]: ...
    @property
    def depths(self) -> npt.NDArray[np.int32]: ...
    @property
    def probs(self) -> npt.NDArray[np.float64]: ...
    def position_ids(self, prefix_len: int) -> npt.NDArray[np.int64]:
        """``prefix_len + depth`` for each node. With ``prefix_len`` = tokens already in the KV
        cache, the root (last context token, fed with the tree) sits at ``prefix_len``."""
    def ancestor_mask_bits(self) -> npt.NDArray[np.uint64]:
        """``[N, ceil(N/64)]``: bit j of row i is set iff node j is node i or an ancestor of it
        (bit ``j % 64`` of word ``j // 64``)."""
    def ancestor_mask(self) -> npt.NDArray[np.bool_]:
        """``[N, N]`` boolean form of ``ancestor_mask_bits``."""
    def children(self, node: int) -> npt.NDArray[np.int32]:
        """Children of ``node`` (-1 = root), in index order. Out of range: ``InvalidParameterError``."""
    def children_csr(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """All children lists at once: (offsets [N + 2], indices [N]); row 0 is the root and row
        ``i + 1`` node ``i``, whose children are ``indices[offsets[r]:offsets[r + 1]]`` (index order)."""
    def path_to(self, node: int) -> npt.NDArray[np.int64]:
        """Node indices from the root's child down to ``node`` (inclusive). Out of range
        (including -1): ``InvalidParameterError``."""
    def accept_greedy(self, target_ids: _TokenIds) -> tuple[npt.NDArray[np.int64], int]:
        """``target_ids[0]`` is the model's token after the root, ``target_ids[i+1]`` after node
        ``i`` (length exactly N + 1). Walks from the root to the child whose token is the model's
        token (the lowest index if siblings repeat a token). Returns (accepted node indices
        root-first, bonus token emitted after them)."""

def build_tree_batch(
    trees: Sequence[TokenTree | Draft], prefix_lens: Sequence[int], root_token_ids: _TokenIds
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The verification block of a batch, root first: with ``n = 1 + max len(tree)``, returns
    (token_ids [B, n]: root token then tree tokens, pad 0; position_ids [B, n]: prefix_len for the
    root, prefix_len + depth for nodes, pads continue after the deepest node (prefix_len +
    max_depth + 1, + 2, ...); tree_mask [B, n, n]: row i sees column j iff j is i, an ancestor of
    i, or the root; padding rows see only the root and themselves, and no real row sees padding;
    lengths [B] = 1 + len(tree)). Built with the GIL released."""

def accept_greedy_batch(
    trees: Sequence[TokenTree | Draft], target_ids: npt.ArrayLike
) -> tuple[list[npt.NDArray[np.int64]], npt.NDArray[np.int64]]:
    """``TokenTree.accept_greedy`` for a batch: ``target_ids`` is ``[B, width]`` (e.g. the argmax
    over the block of ``build_tree_batch``; ``width >= 1 + len(tree)``, extra columns ignored).
    Returns (accepted node indices per tree, bonus token per tree [B])."""

def cuda_source(name: str) -> str:
    """Text of a ``.cu`` file of ``cuda/`` embedded in the native module."""

def cuda_source_names() -> list[str]: ...
