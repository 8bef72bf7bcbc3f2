"""The per-step plan of tree attention: masks and lengths packed once, shared by every layer.

FlashInfer-style split: :func:`plan` runs once per verification step (a few small torch ops on
the masks' device, no host synchronisation), and each layer's attention call only reads it.

KV layout assumed (transformers' ``DynamicCache``): ``[B, H_kv, T, D]`` with
``T = T_prefix + n``; positions ``[0, T_prefix)`` are the request's context ("prefix") and the
last ``n`` positions are the tree block, root first. A prefix position is attended iff it is
valid for its request:

* ``kv_valid[b, p]`` (optional): arbitrary per-position validity (holes, left padding, ...);
* ``prefix_lens[b]`` (optional): the valid prefix is the *last* ``prefix_lens[b]`` positions of
  the prefix region, i.e. ``[T_prefix - prefix_lens[b], T_prefix)`` (left padding).

Both may be given (a position must pass both); with neither, the whole prefix is valid. Inside
the tree block, query ``i`` sees key ``j`` iff ``tree_mask[b, i, j]`` (from
``suffixspec.build_tree_batch``: itself, its ancestors and the root).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from suffixspec.errors import DTypeError, InvalidParameterError

__all__ = ["TreeAttentionPlan", "pack_bits", "pack_bits_host", "plan", "tree_plan_from_host"]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Packs the last dimension of a bool tensor into int32 words: bit ``j % 32`` of word
    ``j // 32`` is ``mask[..., j]``. Runs on the mask's device without synchronising."""
    *lead, length = mask.shape
    words = (length + 31) // 32
    padded = torch.nn.functional.pad(mask.to(torch.int64), (0, words * 32 - length))
    weights = torch.bitwise_left_shift(
        torch.ones(32, dtype=torch.int64, device=mask.device),
        torch.arange(32, dtype=torch.int64, device=mask.device),
    )
    packed = (padded.view(*lead, words, 32) * weights).sum(-1)
    # Reinterpret the unsigned 32-bit value as int32 (the kernel reads the words as uint32).
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def pack_bits_host(mask: np.ndarray) -> np.ndarray:
    """:func:`pack_bits` of a numpy bool array, on the host (the same words, int32)."""
    *lead, length = mask.shape
    words = (length + 31) // 32
    padded = np.zeros((*lead, words * 32), dtype=bool)
    padded[..., :length] = mask
    # Little-endian bit order within bytes and bytes within words: bit j % 32 of word j // 32.
    return np.packbits(padded, axis=-1, bitorder="little").view("<i4").astype(np.int32)


@dataclass(frozen=True, eq=False)
class TreeAttentionPlan:
    """Packed masks of one verification step (build with :func:`plan`).

    Attributes:
        tree_mask: bool ``[B, n, n]``, as given.
        kv_valid: bool ``[B, T_prefix]`` or None, as given.
        prefix_lens: int ``[B]`` or None, as given.
        tree_bits: int32 ``[B, n, ceil(n/32)]``, ``tree_mask`` bit-packed.
        kv_bits: int32 ``[B, ceil(T_prefix/32)]`` or None, ``kv_valid`` bit-packed.
        valid_lens: int32 ``[B]`` or None: the prefix positions before ``T_prefix - valid_lens[b]``
            are invalid (combines ``prefix_lens`` and the first valid position of ``kv_valid``,
            which lets the kernel skip left padding entirely).
    """

    tree_mask: torch.Tensor
    kv_valid: torch.Tensor | None
    prefix_lens: torch.Tensor | None
    tree_bits: torch.Tensor
    kv_bits: torch.Tensor | None
    valid_lens: torch.Tensor | None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return self.tree_mask.shape[0]

    @property
    def num_nodes(self) -> int:
        """``n``: tree-block length (queries per request), root included."""
        return self.tree_mask.shape[1]

    @property
    def prefix_capacity(self) -> int | None:
        """``T_prefix`` when fixed by ``kv_valid``, else None (taken from the KV at run time)."""
        return None if self.kv_valid is None else self.kv_valid.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tree_mask.device

    def check_kv(self, batch: int, num_queries: int, kv_len: int) -> int:
        """Checks the plan against a layer's shapes and returns ``T_prefix``."""
        if batch != self.batch_size or num_queries != self.num_nodes:
            raise InvalidParameterError(
                f"the plan is for batch {self.batch_size} x {self.num_nodes} tree nodes, "
                f"but attention got batch {batch} x {num_queries} queries"
            )
        t_prefix = kv_len - num_queries
        if t_prefix < 0:
            raise InvalidParameterError(
                f"KV length {kv_len} is shorter than the tree block ({num_queries} positions)"
            )
        if self.prefix_capacity is not None and self.prefix_capacity != t_prefix:
            raise InvalidParameterError(
                f"kv_valid covers {self.prefix_capacity} prefix positions, but the KV cache holds "
                f"{t_prefix} before the {num_queries}-position tree block"
            )
        return t_prefix

    def to(self, device: torch.device | str) -> TreeAttentionPlan:
        """This plan on ``device`` (copies made once and cached)."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = ("to", str(device))
        if key not in self._cache:

            def move(x: torch.Tensor | None) -> torch.Tensor | None:
                return None if x is None else x.to(device)

            self._cache[key] = TreeAttentionPlan(
                tree_mask=self.tree_mask.to(device),
                kv_valid=move(self.kv_valid),
                prefix_lens=move(self.prefix_lens),
                tree_bits=self.tree_bits.to(device),
                kv_bits=move(self.kv_bits),
                valid_lens=move(self.valid_lens),
            )
        return self._cache[key]

    def dense_mask(self, t_prefix: int) -> torch.Tensor:
        """bool ``[B, n, t_prefix + n]``: query i of request b sees KV position p (cached)."""
        key = ("dense", t_prefix)
        if key not in self._cache:
            batch, n = self.batch_size, self.num_nodes
            prefix = torch.ones(batch, t_prefix, dtype=torch.bool, device=self.device)
            if self.kv_valid is not None:
                prefix = prefix & self.kv_valid
            if self.valid_lens is not None:
                positions = torch.arange(t_prefix, device=self.device)
                prefix = prefix & (positions[None, :] >= t_prefix - self.valid_lens[:, None].long())
            self._cache[key] = torch.cat([prefix[:, None, :].expand(batch, n, t_prefix), self.tree_mask], -1)
        return self._cache[key]


def plan(
    *,
    tree_mask: torch.Tensor,
    kv_valid: torch.Tensor | None = None,
    prefix_lens: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> TreeAttentionPlan:
    """Packs one verification step's masks for every layer's tree attention.

    Args:
        tree_mask: bool ``[B, n, n]``; row i, column j: tree query i sees tree key j (the root
            first, as built by ``suffixspec.build_tree_batch``).
        kv_valid: bool ``[B, T_prefix]``; False marks prefix KV positions to ignore (padding,
            holes). None: every prefix position is valid.
        prefix_lens: int ``[B]``; request b's valid prefix is the last ``prefix_lens[b]``
            positions before the tree block (left padding). None: no such restriction.
        device: where the plan lives (default: ``tree_mask``'s device).

    Raises:
        DTypeError: a mask that is not bool, or of the wrong shape.
        InvalidParameterError: inconsistent batch sizes, or (for CPU tensors) a length outside
            ``[0, T_prefix]``.
    """
    if not isinstance(tree_mask, torch.Tensor):
        raise DTypeError(f"tree_mask must be a torch.Tensor, got {type(tree_mask).__name__}")
    if tree_mask.dtype != torch.bool or tree_mask.ndim != 3 or tree_mask.shape[1] != tree_mask.shape[2]:
        raise DTypeError(
            f"tree_mask must be a bool [B, n, n] tensor, got {tree_mask.dtype} {tuple(tree_mask.shape)}"
        )
    device = torch.device(device) if device is not None else tree_mask.device
    tree_mask = tree_mask.to(device)
    batch = tree_mask.shape[0]

    kv_bits = None
    valid_lens = None
    if kv_valid is not None:
        if not isinstance(kv_valid, torch.Tensor) or kv_valid.dtype != torch.bool or kv_valid.ndim != 2:
            raise DTypeError("kv_valid must be a bool [B, T_prefix] tensor")
        if kv_valid.shape[0] != batch:
            raise InvalidParameterError(f"kv_valid has batch {kv_valid.shape[0]}, tree_mask has {batch}")
        kv_valid = kv_valid.to(device)
        t_prefix = kv_valid.shape[1]
        kv_bits = pack_bits(kv_valid)
        # Positions before the first valid one are skipped outright (left padding costs nothing).
        first = (
            kv_valid.to(torch.int32).argmax(1)
            if t_prefix
            else torch.zeros(batch, dtype=torch.int64, device=device)
        )
        first = torch.where(kv_valid.any(1), first, t_prefix)
        valid_lens = (t_prefix - first).to(torch.int32)

    if prefix_lens is not None:
        if not isinstance(prefix_lens, torch.Tensor):
            prefix_lens = torch.as_tensor(prefix_lens)
        if prefix_lens.dtype.is_floating_point or prefix_lens.dtype == torch.bool or prefix_lens.ndim != 1:
            raise DTypeError(f"prefix_lens must be an integer [B] tensor, got {prefix_lens.dtype}")
        if prefix_lens.shape[0] != batch:
            raise InvalidParameterError(f"prefix_lens has {prefix_lens.shape[0]} entries for batch {batch}")
        if prefix_lens.device.type == "cpu" and prefix_lens.numel():  # checkable without a device sync
            low, high = int(prefix_lens.min()), int(prefix_lens.max())
            limit = kv_valid.shape[1] if kv_valid is not None else None
            if low < 0 or (limit is not None and high > limit):
                raise InvalidParameterError(
                    f"prefix_lens must lie in [0, {limit if limit is not None else 'T_prefix'}], "
                    f"got values in [{low}, {high}]"
                )
        prefix_lens = prefix_lens.to(device)
        lens = prefix_lens.clamp(min=0).to(torch.int32).contiguous()
        valid_lens = lens if valid_lens is None else torch.minimum(valid_lens, lens)

    return TreeAttentionPlan(
        tree_mask=tree_mask,
        kv_valid=kv_valid,
        prefix_lens=prefix_lens,
        tree_bits=pack_bits(tree_mask),
        kv_bits=kv_bits,
        valid_lens=valid_lens,
    )


def tree_plan_from_host(tree_mask: np.ndarray, device: torch.device | str) -> TreeAttentionPlan:
    """The plan of a tree mask built on the host (bool ``[B, n, n]``; no ``kv_valid`` or
    ``prefix_lens``): packed with numpy and copied to ``device`` once, rather than a few device
    ops per plan as :func:`plan` does (the engine builds one per query-length group per step)."""
    if not isinstance(tree_mask, np.ndarray) or tree_mask.dtype != np.bool_ or tree_mask.ndim != 3:
        raise DTypeError("tree_mask must be a numpy bool [B, n, n] array")
    if tree_mask.shape[1] != tree_mask.shape[2]:
        raise DTypeError(f"tree_mask must be [B, n, n], got {tree_mask.shape}")
    return TreeAttentionPlan(
        tree_mask=torch.from_numpy(np.ascontiguousarray(tree_mask)).to(device),
        kv_valid=None,
        prefix_lens=None,
        tree_bits=torch.from_numpy(pack_bits_host(tree_mask)).to(device),
        kv_bits=None,
        valid_lens=None,
    )
