"""The engine's KV memory in the layout of ``docs/paged_kv.md``, and one step's metadata.

Per decoder layer ``key_cache[layer]`` / ``value_cache[layer]`` are
``[num_blocks, block_size, num_kv_heads, head_dim]`` in the model's dtype; which blocks a request
owns is the Rust scheduler's business (its block tables arrive with each step's plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from suffixspec.errors import IncompatibleModelError
from suffixspec.kernels.plan import TreeAttentionPlan, tree_plan_from_host

__all__ = ["GroupMeta", "PagedKVCache", "StepMeta", "new_tokens_mask", "step_meta"]


@dataclass(frozen=True)
class GroupMeta:
    """The step's requests of one query length ``n``: one batched call of the paged
    tree-attention contract (``suffixspec.kernels.paged.tree_attention``). The kernel's paged mode
    needs equal query lengths per launch, so a step runs one call per distinct length.

    Attributes:
        token_index: int64 ``[B_g * n]``: the flat step rows of the group's queries, request-major
            (request ``b``'s query ``i`` is row ``token_index[b * n + i]``).
        block_tables: int32 ``[B_g, max_blocks]``, the group's rows of the step's block tables.
        context_lens: int32 ``[B_g]``: slots cached before the step (the contract's prefix).
        max_context: ``max(context_lens)``, known on the host (no device sync at launch).
        plan: the group's ``[B_g, n, n]`` visibility among its new tokens (a prefill chunk is a
            chain; a decode row is its chunk then tree nodes), packed once for every layer.
    """

    token_index: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    max_context: int
    plan: TreeAttentionPlan

    @property
    def query_len(self) -> int:
        return self.plan.num_nodes


@dataclass(frozen=True)
class StepMeta:
    """What every layer's paged attention needs for one forward pass over the step's flat tokens."""

    slot_mapping: torch.Tensor  # int64 [num_tokens]: where each new token's K/V is written
    groups: tuple[GroupMeta, ...]  # the step's requests by query length
    block_tables: torch.Tensor  # int32 [B, max_blocks] (docs/paged_kv.md)
    context_lens: torch.Tensor  # int32 [B]
    query_lens: torch.Tensor  # int32 [B]


def new_tokens_mask(chunk_len: int, tree_parents: np.ndarray) -> np.ndarray:
    """Visibility among a row's new tokens: the ``chunk_len`` known tokens are causal; tree node
    ``i`` (parents renumbered within the row, -1 = the chunk's last token) sees the whole chunk,
    its ancestors and itself."""
    n = chunk_len + len(tree_parents)
    mask = np.tril(np.ones((n, n), dtype=bool))
    mask[chunk_len:, chunk_len:] = False
    for i, parent in enumerate(tree_parents.tolist()):
        row = chunk_len + i
        if parent >= 0:
            mask[row, chunk_len:] = mask[chunk_len + parent, chunk_len:]
        mask[row, row] = True
    return mask


def step_meta(
    slot_mapping: np.ndarray,
    block_tables: np.ndarray,
    context_lens: np.ndarray,
    chunk_lens: np.ndarray,
    query_lens: np.ndarray,
    tree_parents: Sequence[np.ndarray],
    block_size: int,
    device: torch.device,
) -> StepMeta:
    """The :class:`StepMeta` of a scheduler plan (arrays as the plan gives them): the step's
    requests grouped by query length, each group's masks packed once on ``device``."""
    query_lens = np.asarray(query_lens, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(query_lens)])
    tables = np.ascontiguousarray(block_tables, dtype=np.int32)
    groups = []
    for n in sorted(set(query_lens.tolist())):
        members = np.flatnonzero(query_lens == n)
        if n == 0:  # no query rows: nothing to attend
            continue
        token_index = (offsets[members][:, None] + np.arange(n)[None, :]).reshape(-1)
        masks = np.stack(
            [new_tokens_mask(int(chunk_lens[b]), np.asarray(tree_parents[b])) for b in members.tolist()]
        )
        ctx = np.ascontiguousarray(context_lens[members], dtype=np.int32)
        # Only the columns the group reads: its longest context plus its n new slots.
        width = max(1, -(-(int(ctx.max()) + n) // block_size))
        groups.append(
            GroupMeta(
                token_index=torch.from_numpy(token_index).to(device),
                block_tables=torch.from_numpy(np.ascontiguousarray(tables[members, :width])).to(device),
                context_lens=torch.from_numpy(ctx).to(device),
                max_context=int(ctx.max()),
                plan=tree_plan_from_host(masks, device),
            )
        )
    return StepMeta(
        slot_mapping=torch.from_numpy(slot_mapping.astype(np.int64)).to(device),
        groups=tuple(groups),
        block_tables=torch.from_numpy(tables).to(device),
        context_lens=torch.from_numpy(np.ascontiguousarray(context_lens, dtype=np.int32)).to(device),
        query_lens=torch.from_numpy(np.ascontiguousarray(query_lens, dtype=np.int32)).to(device),
    )


def _kv_shape(model: Any) -> tuple[int, int, int]:
    """(decoder layers, KV heads, head dim) of a transformers decoder."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    layers = getattr(text, "num_hidden_layers", None)
    if layers is None:
        raise IncompatibleModelError(f"{type(model).__name__}'s config has no num_hidden_layers")
    return int(layers), int(kv_heads), int(head_dim)


class PagedKVCache:
    """Every layer's K/V blocks (allocated once; nothing here grows)."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (num_blocks, block_size, kv_heads, head_dim)
        self.block_size = block_size
        self.key_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.value_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @classmethod
    def for_model(cls, model: Any, num_blocks: int, block_size: int) -> PagedKVCache:
        """A pool for ``model``'s layers, KV heads, head dim, dtype and device."""
        layers, kv_heads, head_dim = _kv_shape(model)
        weight = next(model.parameters())
        return cls(layers, num_blocks, block_size, kv_heads, head_dim, weight.dtype, weight.device)

    @property
    def num_layers(self) -> int:
        return len(self.key_cache)

    def write(self, layer: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Stores ``key``/``value`` ``[num_tokens, kv_heads, head_dim]`` at flat ``slots``."""
        self.flat(self.key_cache[layer])[slots] = key.to(self.key_cache[layer].dtype)
        self.flat(self.value_cache[layer])[slots] = value.to(self.value_cache[layer].dtype)

    @staticmethod
    def flat(cache: torch.Tensor) -> torch.Tensor:
        """``[num_blocks * block_size, kv_heads, head_dim]`` view of one layer's cache."""
        return cache.view(-1, cache.shape[2], cache.shape[3])

    def move(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copies the K/V of flat slots ``src`` to ``dst`` in every layer (the compaction of
        accepted tree nodes; the right side is gathered first, so overlaps are safe)."""
        if src.numel() == 0:
            return
        for cache in (*self.key_cache, *self.value_cache):
            flat = self.flat(cache)
            flat[dst] = flat[src]
