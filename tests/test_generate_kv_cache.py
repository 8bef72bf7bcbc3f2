"""KV bookkeeping of ragged tree verification: compaction, row removal, defragmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from suffixspec.generation.kv_cache import TreeKVCache

HEADS, DIM, LAYERS = 2, 4, 3


def appended(kv: TreeKVCache, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Appends a block of `n` random slots to every layer (as a forward pass does); returns the
    new keys per layer."""
    blocks = []
    batch = kv.valid.shape[0]
    for layer in range(LAYERS):
        k = torch.randn(batch, HEADS, n, DIM, generator=gen)
        kv.cache.update(k, k + 1000.0, layer)
        blocks.append(k)
    return blocks


def row_contents(kv: TreeKVCache, b: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each layer's valid keys of row `b` in slot order, and their positions."""
    valid = kv.valid[b]
    keys = [layer.keys[b][:, valid] for layer in kv.cache.layers]
    for layer, k in zip(kv.cache.layers, keys, strict=True):
        torch.testing.assert_close(layer.values[b][:, valid], k + 1000.0)  # values move with keys
    return keys, kv.positions[b][valid]


def test_random_steps_keep_exactly_the_accepted_slots_in_order():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    batch, prompt = 3, 5
    valid = torch.ones(batch, prompt, dtype=torch.bool)
    valid[0, :2] = False  # left padding of a shorter prompt
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    kv = TreeKVCache(valid, positions)
    first = appended(kv, prompt, gen)
    expected = [[[f[b][:, valid[b]]] for f in first] for b in range(batch)]
    expected_pos = [list(positions[b][valid[b]]) for b in range(batch)]
    defragged = 0
    for _ in range(40):
        n = int(rng.integers(1, 9))
        block = appended(kv, n, gen)
        block_pos = torch.arange(n)[None, :].repeat(batch, 1) + 100
        counts = rng.integers(1, n + 1, batch)
        keep = np.tile(np.arange(counts.max()), (batch, 1))
        for b in range(batch):
            # Root first, then distinct block slots in increasing order (an accepted path).
            keep[b, 1 : counts[b]] = np.sort(rng.choice(np.arange(1, n), counts[b] - 1, replace=False))
            for layer in range(LAYERS):
                expected[b][layer].append(block[layer][b][:, keep[b, : counts[b]]])
            expected_pos[b] += list(block_pos[b][keep[b, : counts[b]]])
        kv.keep_block(keep, counts, block_pos)
        defragged += kv.maybe_defragment(min_waste=8, max_waste_ratio=0.2)
        for b in range(batch):
            keys, pos = row_contents(kv, b)
            for layer in range(LAYERS):
                torch.testing.assert_close(keys[layer], torch.cat(expected[b][layer], dim=1))
            assert pos.tolist() == [int(p) for p in expected_pos[b]]
        assert kv.valid_counts.tolist() == kv.valid.sum(1).tolist()
    assert defragged > 0  # holes did pile up and were squeezed out


def test_select_rows_and_all_valid():
    gen = torch.Generator().manual_seed(1)
    kv = TreeKVCache(torch.ones(3, 4, dtype=torch.bool), torch.arange(4).repeat(3, 1))
    first = appended(kv, 4, gen)
    assert kv.all_valid
    appended(kv, 3, gen)
    kv.keep_block(
        np.asarray([[0, 1], [0, 2], [0, 1]]), np.asarray([2, 1, 2]), torch.arange(3).repeat(3, 1) + 4
    )
    assert not kv.all_valid  # row 1 kept one slot of two: a hole
    kv.select_rows(np.asarray([0, 2]))
    assert kv.valid.shape == (2, 6) and kv.all_valid
    keys, _ = row_contents(kv, 1)
    torch.testing.assert_close(keys[0][:, :4], first[0][2])
