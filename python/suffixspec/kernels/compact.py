"""KV compaction after acceptance: the accepted tree nodes' KV gathered into place.

One index tensor per step serves every layer; the work is torch gathers and slice copies on
the cache's device (no host round trip per layer).
"""

from __future__ import annotations

from typing import Any

import torch

from suffixspec.errors import DTypeError, IncompatibleModelError, InvalidParameterError

__all__ = ["compact_kv"]


def compact_kv(cache: Any, src_positions: torch.Tensor, dst_start: int) -> None:
    """In every layer of ``cache``, copies KV position ``src_positions[b, j]`` of request b to
    position ``dst_start + j`` and drops every position from ``dst_start + m`` on.

    Typical use after verifying a tree at positions ``[T_prefix, T_prefix + n)``: ``dst_start =
    T_prefix`` and ``src_positions[b] = T_prefix + accepted_nodes[b]`` (root first; rows with
    fewer accepted nodes repeat their last index and mark the surplus invalid in the next
    step's ``kv_valid``).

    Args:
        cache: a transformers ``DynamicCache`` (``cache.layers[i].keys/values`` ``[B, H, T, D]``).
        src_positions: int64 ``[B, m]`` absolute KV positions, on the cache's device.
        dst_start: first destination position; ``dst_start + m`` must not exceed ``T``.
    """
    if not isinstance(src_positions, torch.Tensor) or src_positions.dtype != torch.int64:
        raise DTypeError("src_positions must be an int64 torch.Tensor [B, m]")
    if src_positions.ndim != 2:
        raise DTypeError(f"src_positions must be [B, m], got shape {tuple(src_positions.shape)}")
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise IncompatibleModelError(f"{type(cache).__name__} has no .layers (expected a DynamicCache)")
    batch, m = src_positions.shape
    # Validate every layer before touching any: bad input changes nothing.
    for index, layer in enumerate(layers):
        if getattr(layer, "is_sliding", False):
            raise IncompatibleModelError(f"layer {index} is a sliding-window cache layer")
        keys = layer.keys
        if keys.ndim != 4 or keys.shape[0] != batch:
            raise InvalidParameterError(
                f"layer {index}: KV shape {tuple(keys.shape)} does not fit src_positions batch {batch}"
            )
        if dst_start < 0 or dst_start + m > keys.shape[2]:
            raise InvalidParameterError(
                f"layer {index}: destination [{dst_start}, {dst_start + m}) exceeds KV length {keys.shape[2]}"
            )
        if src_positions.device.type == "cpu" and src_positions.numel():  # checkable without a sync
            low, high = int(src_positions.min()), int(src_positions.max())
            if low < 0 or high >= keys.shape[2]:
                raise InvalidParameterError(
                    f"src_positions must lie in [0, {keys.shape[2]}), got values in [{low}, {high}]"
                )
    index_tensors: dict[torch.device, torch.Tensor] = {}
    for layer in layers:
        device = layer.keys.device
        if device not in index_tensors:
            index_tensors[device] = src_positions.to(device)[:, None, :, None]
        layer.keys = _gather_into(layer.keys, index_tensors[device], dst_start)
        layer.values = _gather_into(layer.values, index_tensors[device], dst_start)


def _gather_into(x: torch.Tensor, index: torch.Tensor, dst_start: int) -> torch.Tensor:
    batch, heads, _, dim = x.shape
    m = index.shape[2]
    picked = x.gather(2, index.expand(batch, heads, m, dim))  # a copy: overlapping ranges are safe
    x[:, :, dst_start : dst_start + m] = picked
    return x[:, :, : dst_start + m]
