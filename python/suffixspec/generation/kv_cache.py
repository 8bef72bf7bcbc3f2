"""The KV cache of a ragged batch under tree verification.

A transformers `DynamicCache` of plain layers holds the slots; `valid` `[B, T]` says which slots
hold a real token of each row and `positions` `[B, T]` its position. Rows advance by different
amounts each step, so compaction leaves holes (invalid slots) in rows that accepted fewer
tokens; they are masked out and squeezed away by `defragment` once they waste too much.
All index work happens on the model's device, with one index tensor per step shared by layers.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache

from suffixspec.kernels.compact import compact_kv


class TreeKVCache:
    def __init__(self, valid: torch.Tensor, positions: torch.Tensor):
        # Plain layers everywhere: sliding windows are applied by the mask, so compaction never
        # fights a layer that crops itself.
        self.cache = DynamicCache()
        self.valid = valid
        self.positions = positions
        self.valid_counts = valid.sum(dim=1).cpu().numpy()  # host mirror, for defrag decisions

    @property
    def length(self) -> int:
        """Slots per row (T)."""
        return self.valid.shape[1]

    @property
    def all_valid(self) -> bool:
        """No padding and no holes: every slot of every row is attended."""
        return bool((self.valid_counts == self.length).all())

    def _layers(self):
        return [layer for layer in self.cache.layers if layer.is_initialized and layer.keys.numel()]

    def keep_block(self, keep: np.ndarray, counts: np.ndarray, block_positions: torch.Tensor) -> None:
        """After a forward pass appended a block of `n` slots: keep, per row, the block slots
        `keep[b, :counts[b]]` (block-relative, root first) moved to the front of the block, and
        drop the rest of the block. `keep` is `[B, m]` with `m = counts.max()`."""
        start, m = self.length, keep.shape[1]
        device = self.valid.device
        if (keep == np.arange(m)).all():  # accepted a chain prefix: already in place
            if m < block_positions.shape[1]:
                for layer in self._layers():
                    layer.keys = layer.keys[:, :, : start + m]
                    layer.values = layer.values[:, :, : start + m]
            block_positions = block_positions[:, :m]
        else:
            idx = torch.from_numpy(keep).to(device, non_blocking=True)
            compact_kv(self.cache, idx + start, start)
            block_positions = torch.gather(block_positions, 1, idx)
        new_valid = torch.arange(m, device=device)[None, :] < torch.from_numpy(counts).to(device)[:, None]
        self.valid = torch.cat([self.valid, new_valid], dim=1)
        self.positions = torch.cat([self.positions, block_positions], dim=1)
        self.valid_counts = self.valid_counts + counts

    def select_rows(self, rows: np.ndarray) -> None:
        """Keeps only batch rows `rows` (finished requests leave the batch)."""
        idx = torch.from_numpy(rows).to(self.valid.device)
        self.cache.batch_select_indices(idx)
        self.valid = self.valid[idx]
        self.positions = self.positions[idx]
        self.valid_counts = self.valid_counts[rows]

    def maybe_defragment(self, min_waste: int = 64, max_waste_ratio: float = 0.25) -> bool:
        """Right-aligns every row's valid slots (like left padding) when holes that all rows share
        waste more than `max_waste_ratio` of the slots; amortised O(1) per step."""
        total = self.length
        keep_len = int(self.valid_counts.max())
        waste = total - keep_len
        if waste < min_waste or waste < max_waste_ratio * total:
            return False
        # A stable sort puts each row's invalid slots first and keeps valid slots in order.
        order = torch.sort(self.valid.to(torch.int8), dim=1, stable=True).indices[:, total - keep_len :]
        for layer in self._layers():
            for name in ("keys", "values"):
                t = getattr(layer, name)
                b, h, _, d = t.shape
                setattr(layer, name, torch.gather(t, 2, order[:, None, :, None].expand(b, h, keep_len, d)))
        self.valid = torch.gather(self.valid, 1, order)
        self.positions = torch.gather(self.positions, 1, order)
        return True
