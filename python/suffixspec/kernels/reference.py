"""Reference tree attention in plain torch: the materialised mask and an fp32 softmax.

The CPU path of ``suffixspec.kernels`` and the oracle the CUDA kernel is tested against.
"""

from __future__ import annotations

import torch

from suffixspec.errors import DTypeError, InvalidParameterError
from suffixspec.kernels.plan import TreeAttentionPlan, plan

__all__ = ["check_qkv", "tree_attention"]


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    """Validates ``q [B, Hq, n, D]``, ``k, v [B, Hkv, T, D]``; returns ``(B, Hq, n, D, Hkv, T)``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise DTypeError(f"{name} must be a 4-D torch.Tensor")
    batch, hq, n, dim = q.shape
    _, hkv, kv_len, _ = k.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != dim:
        raise DTypeError(
            f"k and v must be [B, Hkv, T, D] matching q [B, Hq, n, D] = {tuple(q.shape)}, "
            f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if hkv == 0 or hq % hkv:
        raise InvalidParameterError(f"{hq} query heads are not a multiple of {hkv} KV heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise DTypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise InvalidParameterError(f"q, k, v devices differ: {q.device}, {k.device}, {v.device}")
    return batch, hq, n, dim, hkv, kv_len


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: TreeAttentionPlan | torch.Tensor,
    scale: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Tree attention of ``n`` tree-node queries over the prefix KV plus the tree block.

    Args:
        q: ``[B, Hq, n, D]`` queries (transformers' layout; any strides).
        k, v: ``[B, Hkv, T, D]`` keys/values, the last ``n`` positions being the tree block;
            query head ``h`` reads KV head ``h // (Hq // Hkv)`` (GQA).
        mask: a :class:`TreeAttentionPlan`; or a bool tensor, either ``[B, n, n]`` (tree mask,
            whole prefix visible) or ``[B, n, T]`` (the full visibility of every KV position).
        scale: score scale (default ``D ** -0.5``).
        softcap: logit soft-capping (Gemma 2): scores become ``softcap * tanh(scores / softcap)``
            after scaling and before masking, as transformers' eager attention does.

    Returns:
        ``[B, n, Hq, D]`` in ``q``'s dtype (transformers' attention-output layout). A query that
        sees no key at all gets zeros.
    """
    batch, hq, n, dim, hkv, kv_len = check_qkv(q, k, v)
    group = hq // hkv
    scale = dim**-0.5 if scale is None else float(scale)
    visible = _dense_mask(mask, batch, n, kv_len, q.device)

    qf = q.to(torch.float32).reshape(batch, hkv, group * n, dim)
    scores = torch.matmul(qf, k.to(torch.float32).transpose(-1, -2)) * scale
    if softcap is not None:
        if not softcap > 0:
            raise InvalidParameterError(f"softcap must be > 0, got {softcap}")
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(batch, hkv, group, n, kv_len)
    visible = visible[:, None, None]  # [B, 1, 1, n, T]
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(visible.any(-1, keepdim=True), probs, 0.0)  # no visible key: zeros, not NaN
    out = torch.matmul(probs.view(batch, hkv, group * n, kv_len), v.to(torch.float32))
    return out.view(batch, hq, n, dim).transpose(1, 2).to(q.dtype).contiguous()


def _dense_mask(
    mask: TreeAttentionPlan | torch.Tensor, batch: int, n: int, kv_len: int, device: torch.device
) -> torch.Tensor:
    if isinstance(mask, TreeAttentionPlan):
        tree_plan = mask.to(device)
        return tree_plan.dense_mask(tree_plan.check_kv(batch, n, kv_len))
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 3:
        raise DTypeError("mask must be a TreeAttentionPlan or a bool [B, n, n] / [B, n, T] tensor")
    if mask.shape[:2] != (batch, n) or mask.shape[2] not in (n, kv_len):
        raise InvalidParameterError(
            f"mask shape {tuple(mask.shape)} fits neither [B, n, n] nor [B, n, T] "
            f"for B={batch}, n={n}, T={kv_len}"
        )
    if mask.shape[2] == kv_len:
        return mask.to(device)
    tree_plan = plan(tree_mask=mask.to(device))
    return tree_plan.dense_mask(tree_plan.check_kv(batch, n, kv_len))
