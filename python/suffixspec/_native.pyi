"""Type stubs of the native module ``suffixspec._native`` (Rust, PyO3).

Token ids (``_TokenIds``) may be lists/tuples (or other sequences) of ints or numpy integer
scalars, a single int (one token), 1-D numpy arrays of any integer dtype and layout (contiguous,
aligned int32 arrays are borrowed without a copy; misaligned or strided ones are copied), or 1-D
integer torch tensors on any device. Bools (``True``, ``np.True_``, bool arrays and tensors) are
refused wherever an integer is expected. Arrays returned are numpy arrays owned by Python (no
copy back). Errors are instances of ``suffixspec.errors`` classes.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias, final

import numpy as np
import numpy.typing as npt

_TokenIds: TypeAlias = Sequence[int] | Sequence[np.integer] | int | np.integer | npt.NDArray[np.integer] | Any

__all__ = [
    "DEFAULT_MAX_CACHED_REQUESTS",
    "DEFAULT_MAX_CACHED_TOKENS",
    "MAX_DEPTH",
    "SPEC_DEFAULTS",
    "BlockPool",
    "Draft",
    "Scheduler",
    "StepPlan",
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

# --- Serving scheduler (rust/scheduler; layout of docs/paged_kv.md) ---

@final
class BlockPool:
    """The paged KV pool alone: ``num_blocks`` blocks of ``block_size`` slots (8, 16, 32 or 64),
    a free list and one int32 block table per request. Slot ``s`` of a request is flat slot
    ``table[s // block_size] * block_size + s % block_size``."""

    def __new__(cls, num_blocks: int, block_size: int | None = None) -> BlockPool:
        """``block_size`` None: 16."""
    @property
    def num_blocks(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def num_free(self) -> int: ...
    @property
    def num_used(self) -> int: ...
    def reserve(self, request: int, num_slots: int) -> bool:
        """Grows the request's table to hold ``num_slots`` slots; False (and no change) when the
        pool lacks blocks."""
    def truncate(self, request: int, num_slots: int) -> None:
        """Frees the blocks past the first ``num_slots`` slots."""
    def release(self, request: int) -> int:
        """Frees every block of the request; returns how many."""
    def block_table(self, request: int) -> npt.NDArray[np.int32]: ...
    def slot_mapping(self, request: int, start: int, count: int) -> npt.NDArray[np.int32]:
        """Flat slots of ``start .. start + count``; beyond the reserved slots:
        ``InvalidParameterError``."""
    def check_integrity(self) -> None: ...

@final
class StepPlan:
    """One step's work, row ``b`` = request ``request_ids[b]``: it feeds ``chunk_lens[b]`` known
    tokens from index ``context_lens[b]`` (a prefill chunk, or the one pending token that roots
    its tree), then ``tree_lens[b]`` draft nodes: ``tree_nodes[tree_offsets[b]:tree_offsets[b+1]]``
    (ascending indices into its draft; ``tree_parents`` renumbered within that row, -1 = root).
    Their K/V goes to ``slot_mapping`` (``query_lens[b] = chunk_lens[b] + tree_lens[b]`` entries
    per row); ``block_tables`` is ``[B, max_blocks]``, 0-padded. ``emits[b]``: the step feeds the
    request's last known token, so it yields new tokens (then commit ``accepted`` for it)."""

    def __len__(self) -> int: ...
    @property
    def request_ids(self) -> npt.NDArray[np.uint64]: ...
    @property
    def context_lens(self) -> npt.NDArray[np.int32]: ...
    @property
    def query_lens(self) -> npt.NDArray[np.int32]: ...
    @property
    def chunk_lens(self) -> npt.NDArray[np.int32]: ...
    @property
    def tree_lens(self) -> npt.NDArray[np.int32]: ...
    @property
    def emits(self) -> npt.NDArray[np.bool_]: ...
    @property
    def block_tables(self) -> npt.NDArray[np.int32]: ...
    @property
    def slot_mapping(self) -> npt.NDArray[np.int32]: ...
    @property
    def tree_offsets(self) -> npt.NDArray[np.int64]: ...
    @property
    def tree_nodes(self) -> npt.NDArray[np.int32]: ...
    @property
    def tree_parents(self) -> npt.NDArray[np.int32]: ...
    @property
    def preempted(self) -> list[int]:
        """Requests preempted this step: their K/V is gone and they will recompute."""
    @property
    def sat_out(self) -> list[int]:
        """Running requests that sit this step out (``"adaserve"``: far ahead of their TPOT pace
        while another SLO request is behind): not fed, K/V kept, nothing to commit."""
    @property
    def step_time_estimate(self) -> float: ...
    @property
    def step_time_bound(self) -> float:
        """The upper step-time estimate (seconds) that the sit-outs were decided with."""
    @property
    def verify_tokens(self) -> int: ...
    @property
    def num_tokens(self) -> int: ...

@final
class Scheduler:
    """Continuous batching over a paged KV pool: waiting / running / preempted queues, chunked
    prefill, preemption by recompute, and per-step tree selection (``policy``: ``"adaserve"``
    (SLO-customized), ``"greedy"`` (most probable nodes), ``"uniform"`` (``draft_tokens`` per
    request) or ``"none"``). Times are seconds of the caller's clock; SLO targets are in ms.
    ``cost_points`` (``[(tokens, seconds), ...]``) is the step-cost model that sets the verify
    budget. ``max_running`` may not exceed ``max_tokens_per_step`` (every running request gets
    its decode token each step), except that under ``"adaserve"``, if enabled, an SLO request at least
    ``sit_out_margin`` steps' worth of its TPOT target ahead of its pace, with a target of at
    least ``sit_out_min_target_steps`` steps, sits a step out while another SLO request is behind (``StepPlan.sat_out``;
    ``math.inf``: never; the baselines feed every running request every step). Each step: ``schedule(now, drafts)``, run the model,
    ``commit(now, ids, accepted)`` for every planned request, ``finish``/``abort`` ended ones."""

    def __new__(
        cls,
        *,
        num_blocks: int,
        block_size: int | None = None,  # default 16
        max_tokens_per_step: int | None = None,  # default 2048
        max_prefill_tokens_per_step: int | None = None,  # default 512
        max_running: int | None = None,  # default 256
        max_verify_tokens: int | None = None,  # default 1024
        policy: str = "adaserve",
        draft_tokens: int | None = None,  # default 4
        cost_points: Sequence[tuple[int, float]] | None = None,
        sit_out_margin: float | None = None,  # steps; default math.inf: no sit-outs
        sit_out_min_target_steps: float | None = None,  # default 2.0
    ) -> Scheduler: ...
    def add_request(
        self,
        request: int,
        prompt_len: int,
        max_len: int,
        now: float,
        *,
        priority: int | None = None,
        tpot_ms: float | None = None,
        ttft_ms: float | None = None,
    ) -> None:
        """``max_len`` (prompt + output tokens) must exceed ``prompt_len`` and fit the pool;
        larger ``priority`` is more important."""
    def schedule(self, now: float, drafts: Mapping[int, Any] | None = None) -> StepPlan:
        """Plans a step; ``drafts`` maps decode-ready request ids to objects with ``parents``
        and ``probs`` (``Draft``, ``TokenTree``). Before every planned request of the previous
        step is committed (or ended): ``InvalidParameterError``."""
    def commit(self, now: float, request_ids: Iterable[int], accepted: Iterable[int]) -> None:
        """``accepted[i]`` tree nodes of ``request_ids[i]`` were accepted; an emitting request
        gains ``accepted + 1`` tokens. All or nothing."""
    def finish(self, request: int) -> None: ...
    def abort(self, request: int) -> None: ...
    def decode_ready(self) -> list[int]:
        """Running requests whose next step decodes: the ones to draft for."""
    def set_policy(self, policy: str, draft_tokens: int | None = None) -> None: ...
    def set_cost_model(self, cost_points: Sequence[tuple[int, float]]) -> None: ...
    def set_sit_out_margin(self, sit_out_margin: float) -> None: ...
    def step_time(self, tokens: int) -> float: ...
    @property
    def policy(self) -> str: ...
    @property
    def sit_out_margin(self) -> float: ...
    @property
    def block_size(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def num_free_blocks(self) -> int: ...
    @property
    def step_in_flight(self) -> bool: ...
    @property
    def waiting(self) -> list[int]: ...
    @property
    def running(self) -> list[int]: ...
    @property
    def preempted(self) -> list[int]: ...
    def __len__(self) -> int: ...
    def __contains__(self, request: object, /) -> bool: ...
    def request_state(self, request: int) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def check_integrity(self) -> None: ...
