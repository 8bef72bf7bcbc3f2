"""Tree attention over the paged KV layout of ``docs/paged_kv.md``: the layout's container, its
torch reference (the oracle of the CUDA kernel's paged mode) and a random-cache builder for tests
and benchmarks.

A verification step has already written the ``n`` tree nodes' K/V (root first) at slots
``context_lens[b] .. context_lens[b] + n - 1`` of request ``b``; query ``i`` sees every slot
``< context_lens[b]`` and, among the tree slots, those ``tree_mask[b, i]`` allows. Ragged trees
are padded to ``n`` nodes per request as in the contiguous path (padding rows see the root and
themselves), so every request has ``n`` tree slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from suffixspec.errors import DTypeError, InvalidParameterError
from suffixspec.kernels import reference
from suffixspec.kernels.plan import TreeAttentionPlan

__all__ = ["PagedKV", "gather_contiguous", "random_paged_kv", "tree_attention"]


@dataclass(frozen=True)
class PagedKV:
    """One layer's paged KV cache and the step's block tables.

    Attributes:
        key_cache, value_cache: ``[num_blocks, block_size, Hkv, D]``, contiguous.
        block_tables: int32 ``[B, max_blocks]``: physical block of each logical block.
        context_lens: int32 ``[B]``: tokens cached before this step's tree block.
    """

    key_cache: torch.Tensor
    value_cache: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor

    def __post_init__(self) -> None:
        kc, vc, bt, cl = self.key_cache, self.value_cache, self.block_tables, self.context_lens
        if not all(isinstance(x, torch.Tensor) for x in (kc, vc, bt, cl)):
            raise DTypeError("PagedKV fields must be torch tensors")
        if kc.ndim != 4 or kc.shape != vc.shape or kc.dtype != vc.dtype:
            raise DTypeError(
                f"key_cache and value_cache must be equal [num_blocks, block_size, Hkv, D] tensors, "
                f"got {tuple(kc.shape)} {kc.dtype} and {tuple(vc.shape)} {vc.dtype}"
            )
        if not (kc.is_contiguous() and vc.is_contiguous()):
            raise DTypeError("key_cache and value_cache must be contiguous")
        block_size = kc.shape[1]
        if block_size < 8 or block_size & (block_size - 1):
            raise InvalidParameterError(f"block_size must be a power of two >= 8, got {block_size}")
        if bt.dtype != torch.int32 or bt.ndim != 2 or cl.dtype != torch.int32 or cl.ndim != 1:
            raise DTypeError("block_tables must be int32 [B, max_blocks] and context_lens int32 [B]")
        if bt.shape[0] != cl.shape[0]:
            raise InvalidParameterError(f"block_tables has {bt.shape[0]} rows, context_lens {cl.shape[0]}")
        if not (kc.device == bt.device == cl.device):
            raise InvalidParameterError("the caches, block_tables and context_lens must share a device")

    @property
    def batch_size(self) -> int:
        return self.block_tables.shape[0]

    @property
    def block_size(self) -> int:
        return self.key_cache.shape[1]

    @property
    def kv_heads(self) -> int:
        return self.key_cache.shape[2]

    @property
    def head_dim(self) -> int:
        return self.key_cache.shape[3]

    def check(self, batch: int, n: int) -> int:
        """Checks the step against ``batch`` requests of ``n`` tree slots each (reads the lengths:
        a host sync) and returns the longest context."""
        if self.batch_size != batch:
            raise InvalidParameterError(f"the paged KV has {self.batch_size} requests, the queries {batch}")
        if batch == 0:
            return 0
        lens = self.context_lens.cpu()
        if int(lens.min()) < 0:
            raise InvalidParameterError("context_lens must be >= 0")
        needed = -(-(int(lens.max()) + n) // self.block_size)
        if needed > self.block_tables.shape[1]:
            raise InvalidParameterError(
                f"a request needs {needed} blocks for its context and {n} tree slots, "
                f"block_tables has {self.block_tables.shape[1]} columns"
            )
        return int(lens.max())


@dataclass(frozen=True)
class _Gather:
    """Where the contiguous layout's positions come from: position ``p`` of request ``b`` is flat
    slot ``slots[b * (T + n) + p]`` of the ``[num_blocks * block_size, Hkv, D]`` view, or
    padding where not ``keep[b, p]`` (a padding position reads the request's slot 0). The same
    for every layer of a step."""

    slots: torch.Tensor  # int64 [B * (T + n)]
    keep: torch.Tensor  # bool [B, T + n]

    def apply(self, cache: torch.Tensor, *, zero_padding: bool = True) -> torch.Tensor:
        """``[B, Hkv, T + n, D]`` of one ``[num_blocks, block_size, Hkv, D]`` cache. Without
        ``zero_padding`` the padding positions keep the request's slot-0 K/V: harmless where
        they are masked out, since every query of the request also reads that slot (a
        non-finite value there would spoil the real output anyway)."""
        batch, length = self.keep.shape
        flat = cache.view(-1, cache.shape[2], cache.shape[3])
        picked = flat.index_select(0, self.slots).view(batch, length, cache.shape[2], cache.shape[3])
        if zero_padding:
            picked = torch.where(self.keep[:, :, None, None], picked, cache.new_zeros(()))
        return picked.transpose(1, 2)


def _gather(cache: PagedKV, n: int, t_prefix: int) -> _Gather:
    # Position p of request b holds its slot p - (t_prefix - context_lens[b]); negative = padding.
    shift = (t_prefix - cache.context_lens.long())[:, None]
    slots = torch.arange(t_prefix + n, device=cache.key_cache.device)[None, :] - shift
    keep = slots >= 0
    slots = slots.clamp(min=0)
    blocks = torch.gather(cache.block_tables.long(), 1, slots // cache.block_size)
    return _Gather((blocks * cache.block_size + slots % cache.block_size).reshape(-1), keep)


def gather_contiguous(cache: PagedKV, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k, v [B, Hkv, T + n, D]`` with ``T`` the longest context: each request's context
    right-aligned in ``[T - context_lens[b], T)`` (left padding, zeros) and its ``n`` tree slots
    in the last ``n`` positions, i.e. the contiguous layout with ``prefix_lens = context_lens``."""
    index = _gather(cache, n, cache.check(cache.batch_size, n))
    return index.apply(cache.key_cache).contiguous(), index.apply(cache.value_cache).contiguous()


def _check_tree_only(tree_plan: TreeAttentionPlan) -> None:
    """The paged layout has no holes or left padding of its own: a request's prefix is its
    context (``context_lens``), so a plan with ``kv_valid`` or ``prefix_lens`` is refused."""
    if not isinstance(tree_plan, TreeAttentionPlan):
        raise DTypeError(f"tree_plan must be a TreeAttentionPlan, got {type(tree_plan).__name__}")
    if tree_plan.kv_valid is not None or tree_plan.prefix_lens is not None:
        raise InvalidParameterError(
            "a paged step's prefix is each request's context (context_lens): the plan must carry "
            "only the tree mask (no kv_valid, no prefix_lens)"
        )


def _version(x: torch.Tensor) -> int | None:
    """The in-place version counter of ``x``; None for an inference tensor (it keeps none)."""
    if x.is_inference():
        return None
    return x._version


def _step_layout(tree_plan: TreeAttentionPlan, cache: PagedKV, n: int) -> tuple[_Gather, torch.Tensor]:
    """The gather and the dense ``[B, n, T + n]`` visibility of one step: the contiguous layout
    with ``prefix_lens = context_lens`` (the context right-aligned, then the tree mask). Computed
    on a step's first layer and kept in the plan (every layer of a step shares the plan, block
    tables and context lengths): one entry per plan, keyed by the very tensors and their
    in-place versions, so a changed table is redone (inference tensors have no version: for them
    the key is the tensors alone)."""
    tables, lens = cache.block_tables, cache.context_lens
    key = (_version(tables), _version(lens), n, cache.block_size)
    hit = tree_plan._cache.get("paged")
    if hit is not None and hit[0] is tables and hit[1] is lens and hit[2] == key:
        return hit[3], hit[4]
    t_prefix = cache.check(tree_plan.batch_size, n)
    index = _gather(cache, n, t_prefix)
    # A prefix position is visible iff it holds context (not padding); then the tree mask.
    prefix = index.keep[:, None, :t_prefix].expand(-1, n, -1)
    visible = torch.cat([prefix, tree_plan.tree_mask], dim=-1)
    tree_plan._cache["paged"] = (tables, lens, key, index, visible)
    return index, visible


def _windowed(
    visible: torch.Tensor, tree_plan: TreeAttentionPlan, cache: PagedKV, window: int
) -> torch.Tensor:
    """``visible`` limited to a sliding window of ``window`` positions, as transformers'
    sliding-window layers see: a key at position ``k`` is visible to a query at ``q`` only if
    ``k > q - window``. In the paged layout slot ``p`` of a request's context *is* its position
    ``p`` (accepted tree nodes are compacted into consecutive slots), and a new token's position
    is its request's context length plus the new tokens it sees, minus one (a chunk token sees
    its chunk so far, a tree node the whole chunk, its ancestors and itself). Kept in the plan
    next to the unwindowed mask, per window (the layers of a step share it)."""
    slot = ("paged_window", window)
    hit = tree_plan._cache.get(slot)
    if hit is not None and hit[0] is visible:
        return hit[1]
    n = tree_plan.tree_mask.shape[-1]
    t_prefix = visible.shape[-1] - n
    lens = cache.context_lens.long()[:, None]  # [B, 1]
    new_pos = lens + tree_plan.tree_mask.sum(-1) - 1  # [B, n]
    prefix_pos = torch.arange(t_prefix, device=visible.device)[None, :] - (t_prefix - lens)  # [B, T]
    key_pos = torch.cat([prefix_pos, new_pos], dim=-1)  # [B, T + n]
    inside = key_pos[:, None, :] > new_pos[:, :, None] - window
    windowed = visible & inside
    tree_plan._cache[slot] = (visible, windowed)
    return windowed


def tree_attention(
    q: torch.Tensor,
    cache: PagedKV,
    tree_plan: TreeAttentionPlan,
    scale: float | None = None,
    *,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Reference tree attention over the paged layout: ``q [B, Hq, n, D]`` -> ``[B, n, Hq, D]``
    (gathers the pages into the contiguous layout, then :func:`reference.tree_attention`). The
    gather and mask are derived once per plan and reused by later calls with the same block
    tables and context lengths (the other layers of a step).

    ``window`` (a sliding-window layer's ``sliding_window``: keys more than ``window - 1``
    positions before the query are hidden) and ``softcap`` (logit soft-capping) implement the
    two attention options of served architectures that plain causal attention lacks; the CUDA
    kernel's paged mode implements neither."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise InvalidParameterError(f"window must be a positive int, got {window!r}")
    if not isinstance(cache, PagedKV):
        raise DTypeError(f"cache must be a PagedKV, got {type(cache).__name__}")
    if not isinstance(q, torch.Tensor) or q.ndim != 4:
        raise DTypeError("q must be a 4-D [B, Hq, n, D] tensor")
    _check_tree_only(tree_plan)
    if cache.batch_size != q.shape[0]:
        raise InvalidParameterError(f"the paged KV has {cache.batch_size} requests, the queries {q.shape[0]}")
    tree_plan = tree_plan.to(q.device)
    tree_plan.check_kv(q.shape[0], q.shape[2], q.shape[2])
    index, visible = _step_layout(tree_plan, cache, q.shape[2])
    if window is not None:
        visible = _windowed(visible, tree_plan, cache, window)
    k = index.apply(cache.key_cache, zero_padding=False)  # the mask hides the padding
    v = index.apply(cache.value_cache, zero_padding=False)
    return reference.tree_attention(q, k, v, visible, scale, softcap)


def random_paged_kv(
    batch: int,
    kv_heads: int,
    context_lens: list[int],
    n: int,
    head_dim: int,
    block_size: int = 16,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    spare_blocks: int = 3,
) -> PagedKV:
    """A cache holding random K/V for ``batch`` requests of ``context_lens[b] + n`` slots, with
    their blocks scattered over the pool in a random order (plus ``spare_blocks`` unused ones,
    filled with NaN so that reading a wrong block shows)."""
    if len(context_lens) != batch:
        raise InvalidParameterError(f"{len(context_lens)} context lengths for batch {batch}")
    needed = [-(-(ctx + n) // block_size) for ctx in context_lens]
    total = sum(needed) + spare_blocks
    key_cache = torch.randn(
        total, block_size, kv_heads, head_dim, generator=generator, dtype=dtype, device=device
    )
    value_cache = torch.randn(
        total, block_size, kv_heads, head_dim, generator=generator, dtype=dtype, device=device
    )
    order = torch.randperm(total, generator=generator, device=device)
    used = order[: sum(needed)]
    spare = order[sum(needed) :]
    key_cache[spare] = float("nan")
    value_cache[spare] = float("nan")
    tables = torch.zeros(batch, max(needed, default=0), dtype=torch.int32, device=device)
    start = 0
    for b, count in enumerate(needed):
        tables[b, :count] = used[start : start + count].to(torch.int32)
        start += count
    lens = torch.tensor(context_lens, dtype=torch.int32, device=device)
    return PagedKV(key_cache, value_cache, tables, lens)
