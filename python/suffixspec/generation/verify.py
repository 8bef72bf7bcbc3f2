"""Acceptance of token trees against the target model's block outputs.

Block row 0 is the root (the last emitted token), block row `i + 1` is tree node `i`.
Each function returns, per request, the accepted node indices (root first) and the token the
model emits after them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from suffixspec._native import TokenTree, accept_greedy_batch

Acceptance = tuple[np.ndarray, int]
_NONE = np.zeros(0, dtype=np.int64)


def accept_greedy(trees: Sequence[TokenTree], targets: np.ndarray) -> list[Acceptance]:
    """Longest path whose every token equals the model's argmax; then the model's own token.
    `targets` `[B, n]` holds the argmax of every block row. One native call for the batch."""
    accepted, bonus = accept_greedy_batch(list(trees), targets)
    return [(nodes, int(b)) for nodes, b in zip(accepted, bonus.tolist(), strict=True)]


def _children_table(trees: Sequence[TokenTree], n: int) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Children of each block row per request, and their tokens `[B, n, C]` (padded with 0)."""
    kids = []
    for tree in trees:
        parents = np.asarray(tree.parents, dtype=np.int64)
        rows = [np.nonzero(parents == node)[0] for node in range(-1, len(tree))]
        rows += [_NONE] * (n - len(rows))
        kids.append(rows)
    width = max(1, max(len(k) for rows in kids for k in rows))
    tokens = np.zeros((len(trees), n, width), dtype=np.int64)
    for b, (tree, rows) in enumerate(zip(trees, kids, strict=True)):
        ids = np.asarray(tree.token_ids, dtype=np.int64)
        for r, k in enumerate(rows):
            tokens[b, r, : len(k)] = ids[k]
    return kids, tokens


def accept_sampling(
    trees: Sequence[TokenTree], probs: torch.Tensor, generator: torch.Generator | None
) -> list[Acceptance]:
    """Multi-step speculative sampling with deterministic drafts (SpecInfer).

    At each node on the walk the children are tried in order: child `c` is accepted with
    probability `p'(c)`, where `p'` is the target distribution with the children rejected so
    far removed and renormalised; if every child is rejected the emitted token is drawn from
    that residual. Each emitted token is therefore distributed exactly as `p`, the
    distribution plain sampling would draw from. `probs` is `[B, n, V]`.
    """
    batch, n, _ = probs.shape
    kids, child_tokens = _children_table(trees, n)
    device = probs.device
    child_idx = torch.from_numpy(child_tokens).to(device, non_blocking=True)
    gen_device = generator.device if generator is not None else device
    uniforms = torch.rand(child_idx.shape, generator=generator, device=gen_device).to(device)
    host = torch.stack([probs.gather(2, child_idx), uniforms]).cpu().numpy().astype(np.float64)
    child_p, u = host[0], host[1]

    accepted: list[np.ndarray] = []
    final_rows = np.zeros(batch, dtype=np.int64)
    excluded: list[tuple[int, int]] = []  # (batch row, token) removed from the final residual
    for b, tree in enumerate(trees):
        ids = tree.token_ids
        path, row = [], 0
        while True:
            mass, chosen, rejected = 1.0, -1, []
            for j, child in enumerate(kids[b][row]):
                p = child_p[b, row, j]
                if u[b, row, j] * mass < p:  # u < p / mass: accept with the residual's probability
                    chosen = int(child)
                    break
                mass -= p
                rejected.append(int(ids[child]))
            if chosen < 0:
                excluded.extend((b, t) for t in rejected)
                break
            path.append(chosen)
            row = chosen + 1
        accepted.append(np.asarray(path, dtype=np.int64))
        final_rows[b] = row

    rows = torch.from_numpy(final_rows).to(device)
    target = probs[torch.arange(batch, device=device), rows]
    residual = target
    if excluded:
        pairs = torch.tensor(excluded, dtype=torch.long, device=device)
        residual = target.clone()
        residual[pairs[:, 0], pairs[:, 1]] = 0.0
        # Rounding can reject children that held all the mass (a ~1e-7 event): then draw from p.
        residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, target)
    if generator is not None and generator.device != device:
        # multinomial needs a generator on the tensor's device: sample on the generator's side.
        residual = residual.to(generator.device)
    bonus = torch.multinomial(residual, 1, generator=generator)[:, 0].cpu().numpy()
    return [(path, int(tok)) for path, tok in zip(accepted, bonus, strict=True)]


def sample_tokens(probs: torch.Tensor, generator: torch.Generator | None) -> np.ndarray:
    """One token per row of `probs` `[B, V]` (as `model.generate` samples)."""
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].cpu().numpy()
