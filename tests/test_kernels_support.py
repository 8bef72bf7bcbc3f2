"""Shared helpers of the tree-attention tests (no tests here): random token trees, their masks
built straight from parent pointers, and a naive per-request, per-head, per-query oracle."""

from __future__ import annotations

import numpy as np
import torch

TREE_SHAPES = ("chain", "star", "random", "empty")


def random_parents(rng: np.random.Generator, size: int, shape: str) -> list[int]:
    """Parents (-1 = the root) of ``size`` draft nodes, parents before children."""
    if shape == "empty" or size == 0:
        return []
    if shape == "chain":
        return list(range(-1, size - 1))
    if shape == "star":
        return [-1] * size
    return [int(rng.integers(-1, i)) if i else -1 for i in range(size)]


def block_visibility(parents: list[int], n: int) -> np.ndarray:
    """bool ``[n, n]`` of one request's verification block (index 0 = the root, node i at
    i + 1): a row sees the root, itself and its ancestors; padding rows the root and themselves."""
    seen = np.zeros((n, n), dtype=bool)
    seen[:, 0] = True
    seen[np.arange(n), np.arange(n)] = True
    for node in range(len(parents)):
        ancestor = node
        while ancestor >= 0:
            seen[node + 1, ancestor + 1] = True
            ancestor = parents[ancestor]
    return seen


def tree_batch_mask(all_parents: list[list[int]]) -> torch.Tensor:
    """bool ``[B, n, n]`` with ``n = 1 + max tree size``."""
    n = 1 + max((len(p) for p in all_parents), default=0)
    return torch.from_numpy(np.stack([block_visibility(p, n) for p in all_parents]))


def naive_tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_mask: torch.Tensor,
    prefix_visible: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``[B, n, Hq, D]`` float64, one softmax per (request, head, query) over the explicit
    list of visible positions; zeros where a query sees nothing."""
    batch, hq, n, dim = q.shape
    hkv, kv_len = k.shape[1], k.shape[2]
    t_prefix = kv_len - n
    out = torch.zeros(batch, n, hq, dim, dtype=torch.float64)
    for b in range(batch):
        prefix = [p for p in range(t_prefix) if bool(prefix_visible[b, p])]
        for i in range(n):
            keys = prefix + [t_prefix + j for j in range(n) if bool(tree_mask[b, i, j])]
            if not keys:
                continue
            for h in range(hq):
                kvh = h // (hq // hkv)
                scores = (k[b, kvh, keys].double() @ q[b, h, i].double()) * scale
                probs = torch.softmax(scores, dim=0)
                out[b, i, h] = probs @ v[b, kvh, keys].double()
    return out


def random_validity(
    rng: np.random.Generator, batch: int, t_prefix: int, mode: str
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """(kv_valid, prefix_lens, the prefix positions each request sees) for ``mode`` in
    ``all`` | ``lens`` (left padding) | ``holes`` | ``both``."""
    kv_valid = prefix_lens = None
    visible = torch.ones(batch, t_prefix, dtype=torch.bool)
    if mode in ("holes", "both"):
        kv_valid = torch.from_numpy(rng.random((batch, t_prefix)) < 0.7)
        visible &= kv_valid
    if mode in ("lens", "both"):
        prefix_lens = torch.from_numpy(rng.integers(0, t_prefix + 1, batch)).long()
        visible &= torch.arange(t_prefix)[None, :] >= t_prefix - prefix_lens[:, None]
    return kv_valid, prefix_lens, visible
