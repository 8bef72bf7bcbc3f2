"""The kernel's tunable variants and its paged-KV mode against the torch references, on a GPU
(marker ``gpu``; skipped with the reason where CUDA or CuPy is missing)."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import torch

from suffixspec import kernels
from suffixspec.errors import InvalidParameterError
from suffixspec.kernels import cuda_backend, paged, reference
from test_kernels_support import random_parents, random_validity, tree_batch_mask

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not kernels.is_available(), reason=f"needs CUDA + CuPy: {kernels.unavailable_reason()}"
    ),
]

TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 2.5e-2}
VARIANTS = sorted(cuda_backend.VARIANTS)


def assert_close_to(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.isfinite(got).all(), "an output element was never written, or a wrong block was read"
    tol = TOLERANCE[got.dtype]  # absolute, and relative to the value
    excess = ((got.float() - expected.float()).abs() - tol * expected.float().abs()).max().item()
    assert excess <= tol, f"error exceeds {tol} + {tol} * |expected| by {excess - tol:.3g}"


def ragged_tree(rng: np.random.Generator, batch: int, max_size: int) -> torch.Tensor:
    sizes = [max_size] + [int(rng.integers(0, max_size + 1)) for _ in range(batch - 1)]
    return tree_batch_mask([random_parents(rng, size, "random") for size in sizes]).cuda()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_splits", [None, 1, 3, 64])
@pytest.mark.parametrize(
    ("dtype", "dim"), list(itertools.product([torch.float16, torch.bfloat16], [64, 128]))
)
def test_every_variant_matches_the_reference(variant, num_splits, dtype, dim):
    seed = zlib.crc32(repr((variant, num_splits, dtype, dim)).encode())
    rng = np.random.default_rng(seed)
    batch, t_prefix, kv_heads, group = 3, 2500, 2, 8  # 8 x 65 rows: several row blocks of either variant
    tree_mask = ragged_tree(rng, batch, 64)
    n = tree_mask.shape[1]
    kv_valid, prefix_lens, _ = random_validity(rng, batch, t_prefix, "both")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, n, kv_heads * group, dim, generator=gen, device="cuda", dtype=dtype).transpose(
        1, 2
    )
    k = torch.randn(batch, kv_heads, t_prefix + n, dim, generator=gen, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    step = kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid.cuda(), prefix_lens=prefix_lens.cuda())
    cand = cuda_backend.Candidate(variant, num_splits)
    got = cuda_backend.tree_attention(q, k, v, step, candidate=cand)
    assert_close_to(got, reference.tree_attention(q, k, v, step))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize(
    ("dtype", "dim"), list(itertools.product([torch.float16, torch.bfloat16], [64, 128]))
)
def test_paged_kernel_matches_the_paged_reference(variant, block_size, dtype, dim):
    seed = zlib.crc32(repr((variant, block_size, dtype, dim)).encode())
    rng = np.random.default_rng(seed)
    contexts = [4097, 0, 31, 1000, 2 * block_size]  # ragged; empty; block-aligned end
    batch = len(contexts)
    tree_mask = ragged_tree(rng, batch, 40)
    n = tree_mask.shape[1]
    gen = torch.Generator(device="cuda").manual_seed(seed)
    cache = paged.random_paged_kv(
        batch, 2, contexts, n, dim, block_size, dtype=dtype, device="cuda", generator=gen
    )
    q = torch.randn(batch, n, 8, dim, generator=gen, device="cuda", dtype=dtype).transpose(1, 2)
    step = kernels.plan(tree_mask=tree_mask)
    expected = paged.tree_attention(q, cache, step)
    for num_splits in (None, 1, 5):
        got = cuda_backend.paged_tree_attention(
            q, cache, step, candidate=cuda_backend.Candidate(variant, num_splits)
        )
        assert_close_to(got, expected)
    # The sync-free form (the caller knows the longest context) computes the same.
    synced = cuda_backend.paged_tree_attention(q, cache, step)
    free = cuda_backend.paged_tree_attention(q, cache, step, max_context=max(contexts))
    torch.testing.assert_close(free, synced, rtol=0, atol=0)


def test_paged_kernel_at_long_context_and_batch_one():
    gen = torch.Generator(device="cuda").manual_seed(7)
    tree_mask = ragged_tree(np.random.default_rng(7), 1, 64)
    n = tree_mask.shape[1]
    cache = paged.random_paged_kv(
        1, 8, [32768], n, 128, 16, dtype=torch.bfloat16, device="cuda", generator=gen
    )
    q = torch.randn(1, n, 32, 128, generator=gen, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    step = kernels.plan(tree_mask=tree_mask)
    assert_close_to(cuda_backend.paged_tree_attention(q, cache, step), paged.tree_attention(q, cache, step))


def test_paged_kernel_rejects_a_max_context_its_block_tables_cannot_hold():
    cache = paged.random_paged_kv(1, 2, [20], 3, 64, 8, dtype=torch.float16, device="cuda")
    q = torch.randn(1, 4, 3, 64, dtype=torch.float16, device="cuda")
    tree = kernels.plan(tree_mask=torch.ones(1, 3, 3, dtype=torch.bool, device="cuda"))
    with pytest.raises(InvalidParameterError, match="block-table columns"):
        cuda_backend.paged_tree_attention(q, cache, tree, max_context=10**6)
