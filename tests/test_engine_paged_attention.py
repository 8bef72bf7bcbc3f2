"""The engine's paged attention: one batched call of the paged tree-attention contract per group
of equal query lengths equals the per-request torch loop it replaced (kept here as the oracle)
and attention over the same K/V laid out contiguously; the ``attention=`` choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from suffixspec._native import BlockPool
from suffixspec.engine.paged_attention import paged_attention
from suffixspec.engine.paged_cache import PagedKVCache, new_tokens_mask, step_meta
from suffixspec.kernels import reference

HQ, HKV, D, BS = 4, 2, 8, 8


def per_row_paged_attention(
    cache: PagedKVCache,
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    slot_mapping: np.ndarray,
    block_tables: np.ndarray,
    context_lens: np.ndarray,
    chunk_lens: np.ndarray,
    query_lens: np.ndarray,
    tree_parents: Sequence[np.ndarray],
    block_size: int,
) -> torch.Tensor:
    """The oracle: the engine's former torch path, one request at a time (write the step's K/V,
    then each request's queries over its gathered slots with its dense visibility)."""
    cache.write(
        layer,
        torch.from_numpy(slot_mapping.astype(np.int64)),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
    )
    keys = PagedKVCache.flat(cache.key_cache[layer])
    values = PagedKVCache.flat(cache.value_cache[layer])
    outs, offset = [], 0
    for b in range(len(query_lens)):
        ctx, q = int(context_lens[b]), int(query_lens[b])
        prefix = np.arange(ctx, dtype=np.int64)
        prefix_slots = (
            block_tables[b][prefix // block_size].astype(np.int64) * block_size + prefix % block_size
        )
        slots = torch.from_numpy(
            np.concatenate([prefix_slots, slot_mapping[offset : offset + q].astype(np.int64)])
        )
        visible = torch.ones(q, ctx + q, dtype=torch.bool)
        visible[:, ctx:] = torch.from_numpy(new_tokens_mask(int(chunk_lens[b]), tree_parents[b]))
        k = keys[slots].transpose(0, 1)[None].to(query.dtype)
        v = values[slots].transpose(0, 1)[None].to(query.dtype)
        outs.append(reference.tree_attention(query[:, :, offset : offset + q], k, v, visible[None]))
        offset += q
    return torch.cat(outs, dim=1)


@dataclass
class Step:
    """One ragged step over a one-layer cache: every request's prefix already cached, the new
    tokens' queries and K/V in transformers' flat layout, and the scheduler-style arrays."""

    cache: PagedKVCache
    rows: list[tuple[int, int, np.ndarray]]  # (context, chunk of known tokens, tree parents)
    slot_mapping: np.ndarray
    block_tables: np.ndarray
    full_k: list[torch.Tensor]  # [context + query_len, Hkv, D] per request
    full_v: list[torch.Tensor]
    query: torch.Tensor  # [1, Hq, N, D]
    key: torch.Tensor  # [1, Hkv, N, D]
    value: torch.Tensor

    @property
    def context_lens(self) -> np.ndarray:
        return np.array([c for c, _, _ in self.rows], np.int32)

    @property
    def chunk_lens(self) -> np.ndarray:
        return np.array([c for _, c, _ in self.rows], np.int32)

    @property
    def query_lens(self) -> np.ndarray:
        return np.array([c + len(p) for _, c, p in self.rows], np.int32)

    def meta_args(self) -> tuple:
        parents = [p for *_, p in self.rows]
        block_size = self.cache.block_size
        return (
            self.slot_mapping,
            self.block_tables,
            self.context_lens,
            self.chunk_lens,
            self.query_lens,
            parents,
            block_size,
            self.cache.key_cache[0].device,
        )


def build_step(
    rows: list[tuple[int, int, np.ndarray]],
    seed: int = 0,
    block_size: int = BS,
    dtype: torch.dtype = torch.float32,
    *,
    dims: tuple[int, int, int] = (HQ, HKV, D),
    device: str = "cpu",
) -> Step:
    """A :class:`Step` of ``rows`` with random K/V and queries (``dims``: query heads, KV heads,
    head dim), its blocks from a real block pool, on ``device``."""
    hq, hkv, dim = dims
    gen = torch.Generator().manual_seed(seed)
    needed = sum(-(-(ctx + chunk + len(p)) // block_size) for ctx, chunk, p in rows)
    pool = BlockPool(needed + 4, block_size)
    cache = PagedKVCache(1, needed + 4, block_size, hkv, dim, dtype=dtype, device=device)
    full_k, full_v = [], []
    for r, (ctx, chunk, parents) in enumerate(rows):
        q = chunk + len(parents)
        assert pool.reserve(r, ctx + q)
        k = torch.randn(ctx + q, hkv, dim, generator=gen).to(device, dtype)
        v = torch.randn(ctx + q, hkv, dim, generator=gen).to(device, dtype)
        full_k.append(k)
        full_v.append(v)
        if ctx:  # the cached prefix, written where the block table says
            prefix = torch.from_numpy(pool.slot_mapping(r, 0, ctx).astype(np.int64)).to(device)
            cache.write(0, prefix, k[:ctx], v[:ctx])
    width = max(len(pool.block_table(r)) for r in range(len(rows)))
    tables = np.zeros((len(rows), width), np.int32)
    for r in range(len(rows)):
        tables[r, : len(pool.block_table(r))] = pool.block_table(r)
    slots = np.concatenate(
        [pool.slot_mapping(r, ctx, chunk + len(p)) for r, (ctx, chunk, p) in enumerate(rows)]
    )
    n = len(slots)
    new_k = torch.cat([k[ctx:] for k, (ctx, _, _) in zip(full_k, rows, strict=True)])
    new_v = torch.cat([v[ctx:] for v, (ctx, _, _) in zip(full_v, rows, strict=True)])
    query = torch.randn(1, hq, n, dim, generator=gen).to(device, dtype)
    return Step(
        cache,
        rows,
        slots,
        tables,
        full_k,
        full_v,
        query,
        new_k.transpose(0, 1)[None],
        new_v.transpose(0, 1)[None],
    )


def random_parents(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random tree of ``size`` nodes, parents before children (-1: a child of the root)."""
    return np.array([int(rng.integers(-1, i)) for i in range(size)], np.int64)


def random_rows(
    rng: np.random.Generator, count: int, max_ctx: int, max_nodes: int
) -> list[tuple[int, int, np.ndarray]]:
    """Prefill chunks (first or continuing), decode rows (one known token + a tree) and last
    prefill chunks with a tree, with few distinct query lengths so that groups have several
    requests of different shapes."""
    rows = []
    for _ in range(count):
        kind = int(rng.integers(0, 3))
        ctx = int(rng.integers(0, max_ctx + 1))
        if kind == 0:  # prefill chunk
            rows.append((ctx, int(rng.integers(1, max_nodes + 2)), np.zeros(0, np.int64)))
        elif kind == 1:  # decode: the last emitted token, then the draft tree
            rows.append((max(ctx, 1), 1, random_parents(rng, int(rng.integers(0, max_nodes + 1)))))
        else:  # last prefill chunk carrying a tree
            chunk = int(rng.integers(1, 4))
            rows.append((ctx, chunk, random_parents(rng, int(rng.integers(0, max_nodes - chunk + 2)))))
    return rows


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


# Every group shares one query length (5 here) with different shapes: branching trees, a prefill
# chunk (a chain), a chunk carrying a tree, an empty context; plus singleton groups.
MIXED_GROUP = [
    (19, 1, np.array([-1, 0, 0, 1])),
    (40, 1, np.array([-1, -1, -1, 2])),
    (0, 5, np.zeros(0, np.int64)),
    (9, 3, np.array([-1, 0])),
    (23, 1, np.zeros(0, np.int64)),
    (0, 12, np.zeros(0, np.int64)),
]


def _grouped_equals_per_row(step: Step) -> None:
    n = len(step.slot_mapping)
    args = step.meta_args()
    meta = step_meta(*args)
    assert sum(g.context_lens.numel() for g in meta.groups) == len(step.rows)
    assert len(meta.groups) == len(set(step.query_lens.tolist()))  # one call per query length
    got = paged_attention(step.cache, meta, 0, step.query, step.key, step.value, None)
    assert got.shape == (1, n, HQ, D)
    expected = per_row_paged_attention(step.cache, 0, step.query, step.key, step.value, *args[:6], args[6])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # against the K/V laid out contiguously, independently of any block table
    offset = 0
    for r, (ctx, chunk, parents) in enumerate(step.rows):
        q = chunk + len(parents)
        visible = torch.ones(1, q, ctx + q, dtype=torch.bool)
        visible[0, :, ctx:] = torch.from_numpy(new_tokens_mask(chunk, parents))
        full = reference.tree_attention(
            step.query[:, :, offset : offset + q],
            step.full_k[r].transpose(0, 1)[None],
            step.full_v[r].transpose(0, 1)[None],
            visible,
        )
        torch.testing.assert_close(got[:, offset : offset + q], full, rtol=1e-6, atol=1e-6)
        offset += q


@pytest.mark.parametrize("block_size", [8, 16])
def test_grouped_batched_path_equals_the_per_row_loop_on_a_mixed_group(block_size: int) -> None:
    step = build_step(MIXED_GROUP, seed=3, block_size=block_size)
    assert sorted(step.query_lens.tolist()) == [1, 5, 5, 5, 5, 12]
    _grouped_equals_per_row(step)


@pytest.mark.parametrize("seed", range(6))
def test_grouped_batched_path_equals_the_per_row_loop_on_random_ragged_steps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    step = build_step(random_rows(rng, int(rng.integers(1, 14)), max_ctx=70, max_nodes=6), seed=seed)
    _grouped_equals_per_row(step)


def test_every_layer_reuses_the_step_layout_and_sees_its_own_cache() -> None:
    # Two layers of one step: the gather/mask derived on layer 0 serves layer 1, whose cache
    # holds other K/V; each layer equals the per-row oracle on its own cache.
    step = build_step(MIXED_GROUP, seed=5)
    two = PagedKVCache(2, step.cache.key_cache[0].shape[0], BS, HKV, D)
    two.key_cache[1].copy_(step.cache.key_cache[0])
    two.value_cache[1].copy_(step.cache.value_cache[0])
    two.key_cache[0].normal_()
    two.value_cache[0].normal_()
    oracle = PagedKVCache(2, step.cache.key_cache[0].shape[0], BS, HKV, D)
    for layer in range(2):
        oracle.key_cache[layer].copy_(two.key_cache[layer])
        oracle.value_cache[layer].copy_(two.value_cache[layer])
    args = step.meta_args()
    meta = step_meta(*args)
    for layer in range(2):
        got = paged_attention(two, meta, layer, step.query, step.key, step.value, None)
        expected = per_row_paged_attention(oracle, layer, step.query, step.key, step.value, *args[:6], BS)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_a_low_precision_step_matches_the_per_row_loop() -> None:
    step = build_step(MIXED_GROUP, seed=7, dtype=torch.bfloat16)
    args = step.meta_args()
    got = paged_attention(step.cache, step_meta(*args), 0, step.query, step.key, step.value, None)
    expected = per_row_paged_attention(step.cache, 0, step.query, step.key, step.value, *args[:6], BS)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=1.6e-2, atol=1e-2)


def test_an_unknown_backend_is_refused() -> None:
    from suffixspec.errors import InvalidParameterError

    step = build_step(MIXED_GROUP[:2])
    with pytest.raises(InvalidParameterError, match="backend"):
        paged_attention(
            step.cache, step_meta(*step.meta_args()), 0, step.query, step.key, step.value, None, "tpu"
        )


def test_the_attention_choice_resolves_once_and_refuses_what_cannot_run() -> None:
    pytest.importorskip("transformers")
    from suffixspec import Engine, RequestParams
    from suffixspec.errors import InvalidParameterError, KernelUnavailableError
    from suffixspec.kernels import availability
    from tiny_models import plain_greedy_tokens, random_prompts, tiny_model

    model = tiny_model("LlamaForCausalLM")  # fp32 on the CPU: the kernel cannot run it
    assert Engine(model, num_blocks=16).attention_backend == "torch"  # "auto"
    with pytest.raises(InvalidParameterError, match="attention"):
        Engine(model, num_blocks=16, attention="flash")
    if not availability.is_available():
        with pytest.raises(KernelUnavailableError, match="CUDA"):
            Engine(model, num_blocks=16, attention="cuda")
    engine = Engine(model, num_blocks=16, attention="torch")
    assert engine.attention_backend == "torch"
    prompts = random_prompts([5, 21, 9], seed=4)
    outputs = engine.generate(prompts, RequestParams(max_new_tokens=12))
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.token_ids == plain_greedy_tokens(model, prompt, 12)
