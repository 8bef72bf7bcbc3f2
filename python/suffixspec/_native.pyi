"""Type stubs of the native module ``suffixspec._native`` (Rust, PyO3).

Token sequences (``TokenIds``) may be Python lists/tuples of ints or 1-D integer numpy arrays;
contiguous int32 arrays are borrowed without a copy. Arrays returned are numpy arrays owned by
Python (no copy back). Errors are instances of ``suffixspec.errors`` classes.
"""

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

TokenIds: TypeAlias = Sequence[int] | npt.NDArray[np.integer]

__version__: str

class Draft:
    """A speculated token tree (see ``suffixspec.SuffixCache.speculate``)."""

    @property
    def token_ids(self) -> npt.NDArray[np.int32]: ...
    @property
    def parents(self) -> npt.NDArray[np.int32]:
        """Parent index of each node; -1 = child of the last context token. Parents first."""
    @property
    def probs(self) -> npt.NDArray[np.float64]: ...
    @property
    def score(self) -> float: ...
    @property
    def match_len(self) -> int: ...
    def __len__(self) -> int: ...

class SuffixCacheCore:
    """The native cache, keyed by integer request handles (``suffixspec.SuffixCache`` wraps it
    with arbitrary hashable request ids). Thread-safe; long calls release the GIL."""

    def __init__(
        self,
        max_depth: int = 64,
        max_cached_requests: int | None = None,
        max_cached_tokens: int = 4194304,
    ) -> None: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_cached_requests(self) -> int | None: ...
    @property
    def max_cached_tokens(self) -> int: ...
    def start_request(self, req: int, prompt_token_ids: TokenIds) -> None: ...
    def add_active_response(self, req: int, token_ids: TokenIds) -> None: ...
    def stop_request(self, req: int) -> None: ...
    def evict_cached_response(self, req: int) -> None: ...
    def speculate(
        self,
        req: int,
        context: TokenIds,
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> Draft: ...
    def speculate_batch(
        self,
        reqs: Sequence[int],
        contexts: Sequence[TokenIds],
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> list[Draft]:
        """All requests of one engine step in one call (GIL released, requests in parallel)."""
    def active_requests(self) -> list[int]: ...
    def cached_requests(self) -> list[int]:
        """Oldest first."""
    def is_active(self, req: int) -> bool: ...
    def is_cached(self, req: int) -> bool: ...
    def stats(self) -> dict[str, int]:
        """Keys: active_requests, cached_requests, tokens, cached_tokens, nodes, bytes."""
    def check_integrity(self) -> None:
        """Raises RuntimeError describing the first broken invariant (debug aid)."""

class SuffixTree:
    """One suffix tree over several sequences (the building block of the cache)."""

    def __init__(self, max_depth: int = 64) -> None: ...
    @property
    def max_depth(self) -> int: ...
    def extend(self, seq_id: int, token_ids: TokenIds) -> None: ...
    def remove(self, seq_id: int) -> None: ...
    def count(self, token_ids: TokenIds) -> int:
        """Occurrences of the string (0 if empty, absent or longer than max_depth)."""
    def speculate(
        self,
        context: TokenIds,
        max_spec_tokens: int,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> Draft: ...
    def num_tokens(self) -> int: ...
    def num_nodes(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def check_integrity(self) -> None: ...

class TokenTree:
    """A token tree of draft nodes (parents before children) for one verification step.

    Node ``i`` has token ``token_ids[i]``, parent ``parents[i]`` (-1 = the root, i.e. the last
    context token) and depth ``depths[i]`` (1 for children of the root)."""

    def __init__(
        self,
        token_ids: TokenIds,
        parents: Sequence[int] | npt.NDArray[np.integer],
        probs: Sequence[float] | npt.NDArray[np.floating] | None = None,
    ) -> None: ...
    @staticmethod
    def from_draft(draft: Draft) -> TokenTree: ...
    @staticmethod
    def merge(trees: Sequence[TokenTree | Draft]) -> TokenTree:
        """Trie union: nodes with the same token under the same parent are merged (prob = max)."""
    def prune(self, max_nodes: int) -> TokenTree:
        """The most probable ``max_nodes`` nodes; the kept set is parent-closed."""
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
        """``[N, ceil(N/64)]``: bit j of row i is set iff node j is node i or an ancestor of it."""
    def ancestor_mask(self) -> npt.NDArray[np.bool_]:
        """``[N, N]`` boolean form of ``ancestor_mask_bits``."""
    def children(self, node: int) -> npt.NDArray[np.int32]:
        """Children of ``node`` (-1 = root), in index order."""
    def path_to(self, node: int) -> npt.NDArray[np.int64]:
        """Node indices from the root's child down to ``node`` (inclusive)."""
    def accept_greedy(self, target_ids: TokenIds) -> tuple[npt.NDArray[np.int64], int]:
        """``target_ids[0]`` is the model's token after the root, ``target_ids[i+1]`` after node
        ``i``. Returns (accepted node indices root-first, bonus token emitted after them)."""

def build_tree_batch(
    trees: Sequence[TokenTree], prefix_lens: Sequence[int], root_token_ids: Sequence[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The verification block of a batch, root first: with ``n = 1 + max len(tree)``, returns
    (token_ids [B, n]: root token then tree tokens, pad 0; position_ids [B, n]: prefix_len for the
    root, prefix_len + depth for nodes, pads continue the count; tree_mask [B, n, n]: row i sees
    column j iff j is i, an ancestor of i, or the root; padding rows see only the root and
    themselves; lengths [B] = 1 + len(tree))."""

def cuda_source(name: str) -> str:
    """Text of a ``.cu`` file of ``cuda/`` embedded in the native module."""

def cuda_source_names() -> list[str]: ...
