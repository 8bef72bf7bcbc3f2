"""The engine's torch paged attention equals attention over the same K/V laid out contiguously."""

from __future__ import annotations

import numpy as np
import torch

from suffixspec._native import BlockPool
from suffixspec.engine.paged_attention import paged_attention
from suffixspec.engine.paged_cache import PagedKVCache, new_tokens_mask, step_meta
from suffixspec.kernels import reference

HQ, HKV, D, BS = 4, 2, 8, 8


def test_new_tokens_mask_is_causal_chunk_then_tree() -> None:
    # chunk of 2, then nodes 0 (root child), 1 (child of 0), 2 (root child)
    mask = new_tokens_mask(2, np.array([-1, 0, -1]))
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert (mask == expected).all()


def test_paged_attention_equals_contiguous_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = BlockPool(24, BS)
    cache = PagedKVCache(1, 24, BS, HKV, D)
    # (context already cached, chunk of known tokens, tree parents): a decode row with a tree,
    # a prefill chunk continuing a cached prefix, a first prefill chunk.
    rows = [(19, 1, np.array([-1, 0, 0, 1])), (9, 7, np.zeros(0, np.int64)), (0, 12, np.zeros(0, np.int64))]
    full_k, full_v = [], []
    for r, (ctx, chunk, parents) in enumerate(rows):
        q = chunk + len(parents)
        assert pool.reserve(r, ctx + q)
        k = torch.randn(ctx + q, HKV, D, generator=gen)
        v = torch.randn(ctx + q, HKV, D, generator=gen)
        full_k.append(k)
        full_v.append(v)
        if ctx:  # the cached prefix, written where the block table says
            cache.write(0, torch.from_numpy(pool.slot_mapping(r, 0, ctx).astype(np.int64)), k[:ctx], v[:ctx])
    width = max(len(pool.block_table(r)) for r in range(len(rows)))
    tables = np.zeros((len(rows), width), np.int32)
    for r in range(len(rows)):
        tables[r, : len(pool.block_table(r))] = pool.block_table(r)
    ctx_lens = np.array([c for c, _, _ in rows], np.int32)
    chunk_lens = np.array([c for _, c, _ in rows], np.int32)
    query_lens = np.array([c + len(p) for _, c, p in rows], np.int32)
    slots = np.concatenate(
        [pool.slot_mapping(r, int(ctx_lens[r]), int(query_lens[r])) for r in range(len(rows))]
    )
    meta = step_meta(
        slots, tables, ctx_lens, chunk_lens, query_lens, [p for *_, p in rows], BS, torch.device("cpu")
    )
    n = int(query_lens.sum())
    query = torch.randn(1, HQ, n, D, generator=gen)
    new_k = torch.cat([k[c:] for k, c in zip(full_k, ctx_lens, strict=True)])
    new_v = torch.cat([v[c:] for v, c in zip(full_v, ctx_lens, strict=True)])
    out = paged_attention(
        cache, meta, 0, query, new_k.transpose(0, 1)[None], new_v.transpose(0, 1)[None], None
    )
    assert out.shape == (1, n, HQ, D)

    offset = 0
    for r, (ctx, chunk, parents) in enumerate(rows):
        q = chunk + len(parents)
        visible = torch.ones(1, q, ctx + q, dtype=torch.bool)
        visible[0, :, ctx:] = torch.from_numpy(new_tokens_mask(chunk, parents))
        expected = reference.tree_attention(
            query[:, :, offset : offset + q],
            full_k[r].transpose(0, 1)[None],
            full_v[r].transpose(0, 1)[None],
            visible,
        )
        torch.testing.assert_close(out[:, offset : offset + q], expected)
        if not len(parents):  # a pure chunk is plain causal attention over prefix + chunk
            keys = full_k[r].repeat_interleave(HQ // HKV, dim=1).transpose(0, 1)[None]
            values = full_v[r].repeat_interleave(HQ // HKV, dim=1).transpose(0, 1)[None]
            sdpa = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, offset : offset + q], keys, values, attn_mask=visible[:, None]
            )
            torch.testing.assert_close(out[:, offset : offset + q], sdpa.transpose(1, 2))
        offset += q
    # every new token's K/V landed at its slot
    flat = PagedKVCache.flat(cache.key_cache[0])
    torch.testing.assert_close(flat[torch.from_numpy(slots.astype(np.int64))], new_k)
