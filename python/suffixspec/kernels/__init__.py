"""GPU tree attention for the verification step, with a torch reference path.

Verification attends ``n`` tree-node queries per request over the request's whole KV cache:
memory-bandwidth bound on a GPU. ``cuda/tree_attention.cu`` (embedded in the native module,
compiled at run time through CuPy, once per device) reads every KV tile once for all queries
of a GQA group and splits long prefixes across thread blocks; ``reference`` is the torch path
(CPUs, and the kernel's test oracle).

Typical use (one plan per step, shared by all layers)::

    with kernels.attention_context(model, mode="auto"):
        step_plan = kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid)
        logits = model(..., suffixspec_plan=step_plan).logits

Importing this module imports torch but never CuPy (CuPy is loaded on the first kernel call).
"""

from __future__ import annotations

import torch

from suffixspec import _native
from suffixspec.errors import InvalidParameterError, KernelUnavailableError
from suffixspec.kernels import cuda_backend, reference
from suffixspec.kernels.availability import is_available, require, unavailable_reason
from suffixspec.kernels.compact import compact_kv
from suffixspec.kernels.integration import PLAN_KWARG, attention_context, resolve_mode
from suffixspec.kernels.plan import TreeAttentionPlan, pack_bits, plan

__all__ = [
    "PLAN_KWARG",
    "KernelUnavailableError",
    "TreeAttentionPlan",
    "attention_context",
    "compact_kv",
    "cuda_source",
    "cuda_source_names",
    "is_available",
    "pack_bits",
    "plan",
    "reference",
    "resolve_mode",
    "tree_attention",
    "unavailable_reason",
]


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_plan: TreeAttentionPlan,
    scale: float | None = None,
    *,
    mode: str = "auto",
) -> torch.Tensor:
    """Tree attention ``q [B, Hq, n, D]`` over ``k, v [B, Hkv, T, D]`` -> ``[B, n, Hq, D]``.

    ``mode``: ``"cuda"`` (the kernel; :class:`KernelUnavailableError` where it cannot run),
    ``"torch"`` (the reference), ``"auto"`` (the kernel when the tensors are on a CUDA device it
    supports, else the reference).
    """
    if mode not in ("auto", "cuda", "torch"):
        raise InvalidParameterError(f"mode must be 'auto', 'cuda' or 'torch', got {mode!r}")
    use_cuda = mode == "cuda" or (
        mode == "auto"
        and q.dtype in cuda_backend.SUPPORTED_DTYPES
        and q.shape[-1] in cuda_backend.SUPPORTED_HEAD_DIMS
        and is_available(q.device)
    )
    if use_cuda:
        if mode == "cuda":
            require(q.device)
        return cuda_backend.tree_attention(q, k, v, tree_plan, scale)
    return reference.tree_attention(q, k, v, tree_plan, scale)


def cuda_source_names() -> list[str]:
    """Names of the ``.cu`` sources embedded in the native module."""
    return _native.cuda_source_names()


def cuda_source(name: str) -> str:
    """Text of an embedded ``.cu`` source."""
    return _native.cuda_source(name)
