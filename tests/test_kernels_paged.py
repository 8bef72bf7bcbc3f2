"""The paged KV layout (``docs/paged_kv.md``): the torch paged reference against the contiguous
reference and the naive oracle, its input checks, and the autotuning space of the kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suffixspec import kernels
from suffixspec.errors import DTypeError, InvalidParameterError, SuffixSpecError
from suffixspec.kernels import cuda_backend, paged, reference
from suffixspec.kernels.plan import tree_plan_from_host
from test_kernels_support import naive_tree_attention, random_parents, tree_batch_mask


def random_step(seed: int, batch: int, contexts: list[int], max_nodes: int, dim: int, block_size: int):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    sizes = [max_nodes] + [int(rng.integers(0, max_nodes + 1)) for _ in range(batch - 1)]
    tree_mask = tree_batch_mask([random_parents(rng, s, "random") for s in sizes])
    n = tree_mask.shape[1]
    cache = paged.random_paged_kv(batch, 2, contexts, n, dim, block_size, dtype=torch.float64, generator=gen)
    q = torch.randn(batch, n, 8, dim, generator=gen, dtype=torch.float64).transpose(1, 2)
    return q, cache, tree_mask


@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("seed", range(3))
def test_paged_reference_equals_contiguous_reference_and_the_oracle(block_size, seed):
    contexts = [37, 0, 5, 64][: 2 + seed]  # ragged, one empty context, block-aligned ends
    q, cache, tree_mask = random_step(seed, len(contexts), contexts, 9, 16, block_size)
    n = tree_mask.shape[1]
    got = paged.tree_attention(q, cache, kernels.plan(tree_mask=tree_mask))
    assert torch.isfinite(got).all()  # the NaN spare blocks were never read

    # Contiguous layout built independently: each request's slots copied out block by block.
    t_prefix = max(contexts)
    k = torch.zeros(len(contexts), 2, t_prefix + n, 16, dtype=torch.float64)
    v = torch.zeros_like(k)
    for b, ctx in enumerate(contexts):
        for s in range(ctx + n):
            block = int(cache.block_tables[b, s // block_size])
            dst = t_prefix - ctx + s
            k[b, :, dst] = cache.key_cache[block, s % block_size]
            v[b, :, dst] = cache.value_cache[block, s % block_size]
    lens = torch.tensor(contexts)
    expected = reference.tree_attention(q, k, v, kernels.plan(tree_mask=tree_mask, prefix_lens=lens))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    visible = torch.arange(t_prefix)[None, :] >= t_prefix - lens[:, None]
    oracle = naive_tree_attention(q, k, v, tree_mask, visible, 16**-0.5)
    # The reference computes in fp32, the oracle in fp64.
    torch.testing.assert_close(got, oracle.to(got.dtype), rtol=1e-5, atol=1e-5)


def test_gather_contiguous_right_aligns_contexts_and_ends_with_the_tree_slots():
    cache = paged.random_paged_kv(2, 1, [3, 20], 4, 8, 8, generator=torch.Generator().manual_seed(1))
    k, v = paged.gather_contiguous(cache, 4)
    assert k.shape == v.shape == (2, 1, 24, 8)
    assert (k[0, :, :17] == 0).all()  # left padding of the short request
    slot = 3 + 2  # request 0's tree node 2
    block = int(cache.block_tables[0, slot // 8])
    assert torch.equal(k[0, 0, 20 + 2], cache.key_cache[block, slot % 8, 0])


def test_paged_input_errors_are_typed_and_change_nothing():
    gen = torch.Generator().manual_seed(0)
    cache = paged.random_paged_kv(2, 2, [5, 9], 3, 8, 8, generator=gen)
    before = cache.key_cache.clone()
    q = torch.randn(2, 4, 3, 8)
    tree = kernels.plan(tree_mask=torch.ones(2, 3, 3, dtype=torch.bool))
    with pytest.raises(InvalidParameterError, match="only the tree mask"):
        with_lens = kernels.plan(
            tree_mask=torch.ones(2, 3, 3, dtype=torch.bool), prefix_lens=torch.tensor([1, 1])
        )
        paged.tree_attention(q, cache, with_lens)
    short = paged.PagedKV(cache.key_cache, cache.value_cache, cache.block_tables[:, :1], cache.context_lens)
    with pytest.raises(InvalidParameterError, match="blocks"):
        paged.tree_attention(q, short, tree)
    with pytest.raises(InvalidParameterError, match="power of two"):
        paged.PagedKV(
            cache.key_cache[:, :6].contiguous(),
            cache.value_cache[:, :6].contiguous(),
            cache.block_tables,
            cache.context_lens,
        )
    with pytest.raises(DTypeError, match="int32"):
        paged.PagedKV(cache.key_cache, cache.value_cache, cache.block_tables.long(), cache.context_lens)
    with pytest.raises(DTypeError):
        paged.tree_attention(q, (cache.key_cache, cache.value_cache), tree)
    negative = paged.PagedKV(
        cache.key_cache, cache.value_cache, cache.block_tables, torch.tensor([-1, 2]).int()
    )
    with pytest.raises(SuffixSpecError, match=">= 0"):
        paged.tree_attention(q, negative, tree)
    assert torch.equal(cache.key_cache.nan_to_num(), before.nan_to_num())


def test_the_paged_kernel_refuses_cpu_tensors_and_bad_plans_with_typed_errors():
    cache = paged.random_paged_kv(1, 2, [5], 3, 64, 8, dtype=torch.float16)
    q = torch.randn(1, 4, 3, 64, dtype=torch.float16)
    tree = kernels.plan(tree_mask=torch.ones(1, 3, 3, dtype=torch.bool))
    with pytest.raises(kernels.KernelUnavailableError):
        cuda_backend.paged_tree_attention(q, cache, tree)
    with pytest.raises(DTypeError):
        cuda_backend.paged_tree_attention(q, "cache", tree)
    with pytest.raises(InvalidParameterError, match="heads"):
        cuda_backend.paged_tree_attention(torch.randn(1, 3, 3, 64, dtype=torch.float16), cache, tree)


@pytest.mark.parametrize("rows, t_prefix", [(260, 4096), (68, 32768), (4, 100), (512, 16384)])
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_tuning_candidates_are_distinct_valid_launches_of_every_variant(rows, t_prefix, batch):
    cands = cuda_backend.tuning_candidates(
        batch=batch, kv_heads=8, rows=rows, t_prefix=t_prefix, head_dim=128, num_sms=132
    )
    assert {c.variant for c in cands} == set(cuda_backend.VARIANTS)
    launches = set()
    for cand in cands:
        cfg = cuda_backend.launch_config(
            batch=batch,
            kv_heads=8,
            rows=rows,
            t_prefix=t_prefix,
            head_dim=128,
            num_sms=132,
            num_splits=cand.num_splits,
            variant=cand.variant,
        )
        spec = cuda_backend.VARIANTS[cand.variant]
        assert cfg.m_blocks * spec.rows_per_block >= rows > (cfg.m_blocks - 1) * spec.rows_per_block
        assert cfg.num_splits * cfg.chunk >= t_prefix and cfg.chunk % cuda_backend.keys_per_tile(128) == 0
        assert 1 <= cfg.num_splits <= cuda_backend.MAX_SPLITS
        launches.add((cand.variant, cfg.num_splits, cfg.chunk))
    assert len(launches) == len(cands)  # no duplicate launch
    assert cuda_backend.Candidate() in cands  # the default is always measured


def test_unknown_variant_is_a_typed_error():
    with pytest.raises(InvalidParameterError, match="variant"):
        cuda_backend.launch_config(
            batch=1, kv_heads=1, rows=4, t_prefix=10, head_dim=64, num_sms=1, variant="w3"
        )


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 70])
def test_a_host_built_plan_equals_the_device_built_plan(n):
    rng = np.random.default_rng(n)
    mask = rng.random((3, n, n)) < 0.5
    host = tree_plan_from_host(mask, "cpu")
    device = kernels.plan(tree_mask=torch.from_numpy(mask))
    assert torch.equal(host.tree_bits, device.tree_bits) and host.tree_bits.dtype == torch.int32
    assert torch.equal(host.tree_mask, device.tree_mask)
    assert host.kv_valid is None and host.prefix_lens is None and host.valid_lens is None
    with pytest.raises(DTypeError):
        tree_plan_from_host(mask.astype(np.int8), "cpu")


def test_the_reference_reuses_its_step_layout_only_for_unchanged_tables():
    q, cache, tree_mask = random_step(4, 3, [37, 5, 20], 6, 16, 8)
    step = kernels.plan(tree_mask=tree_mask)
    first = paged.tree_attention(q, cache, step)
    torch.testing.assert_close(paged.tree_attention(q, cache, step), first, rtol=0, atol=0)
    cache.context_lens[0] = 30  # changed in place: the layout is derived again
    fresh = paged.tree_attention(q, cache, kernels.plan(tree_mask=tree_mask))
    torch.testing.assert_close(paged.tree_attention(q, cache, step), fresh, rtol=0, atol=0)
    assert not torch.equal(fresh[0], first[0])
    with torch.inference_mode():  # inference tensors keep no version counter
        lens = cache.context_lens.clone()
        inference_cache = paged.PagedKV(cache.key_cache, cache.value_cache, cache.block_tables, lens)
        got = paged.tree_attention(q, inference_cache, step)
    torch.testing.assert_close(got, fresh, rtol=0, atol=0)
