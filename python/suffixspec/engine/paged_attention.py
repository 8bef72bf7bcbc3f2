"""Paged attention plugged into transformers models through ``AttentionInterface``.

While :func:`paged_attention_active` is open on a model, a forward call that carries
``suffixspec_paged=PagedBatch(...)`` runs every attention layer as the engine needs it: the step's
new K/V is written at the plan's ``slot_mapping`` into the layer's paged cache, then each request's
queries attend over its blocks (prefix + new tokens) with the step's causal/tree visibility. Calls
without the kwarg run the model's original attention unchanged (see
``suffixspec.generation.compat.attention_switched``).

The attention is the paged tree-attention contract of ``suffixspec.kernels.paged`` (the layout of
``docs/paged_kv.md``), one batched call per group of requests with the same query length (the
kernel's paged mode needs equal query lengths per launch): backend ``"cuda"`` runs the CUDA
kernel's paged mode, ``"torch"`` its torch reference (any device, any float dtype).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from suffixspec.engine.paged_cache import PagedKVCache, StepMeta
from suffixspec.errors import IncompatibleModelError, InvalidParameterError
from suffixspec.kernels import cuda_backend, paged
from suffixspec.kernels.integration import register_deferring

__all__ = [
    "BACKENDS",
    "CURRENT_BATCH",
    "PAGED_KWARG",
    "TORCH_ONLY_OPTIONS",
    "PagedBatch",
    "paged_attention",
    "paged_attention_active",
    "paged_batch",
]

#: The implementations of the paged contract: the CUDA kernel's paged mode, its torch reference.
BACKENDS = ("cuda", "torch")

PAGED_KWARG = "suffixspec_paged"


#: Layer options of transformers' attention calls that the torch backend implements (sliding
#: windows, Gemma 2's logit soft-capping) and the CUDA kernel's paged mode does not.
TORCH_ONLY_OPTIONS = ("sliding_window", "softcap")


@dataclass(frozen=True)
class PagedBatch:
    """The forward kwarg of one engine step: the cache to read and write, and the step's layout.

    ``layers_run`` collects the layers whose attention ran here during the call: a model whose
    decoder drops the kwarg on its way to the attention function (or computes attention without
    transformers' ``AttentionInterface``) would otherwise run its own attention over nothing but
    the step's tokens and answer wrongly without a sign; the engine checks every layer ran."""

    cache: PagedKVCache
    meta: StepMeta
    backend: str = "torch"  # one of BACKENDS (the engine resolves its ``attention=`` choice once)
    layers_run: set[int] = field(default_factory=set, compare=False)


def paged_attention(
    cache: PagedKVCache,
    meta: StepMeta,
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
    backend: str = "torch",
    *,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """One layer of one step. ``query [1, Hq, N, D]``, ``key/value [1, Hkv, N, D]`` are the step's
    flat tokens (transformers' layout); returns ``[1, N, Hq, D]``. ``sliding_window`` and
    ``softcap`` are the layer's options as transformers passes them (torch backend only)."""
    if backend not in BACKENDS:
        raise InvalidParameterError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and (sliding_window is not None or softcap is not None):
        raise IncompatibleModelError(
            "the CUDA kernel's paged mode implements neither sliding windows nor logit soft-capping; "
            "serve this model with attention='torch'"
        )
    cache.write(layer, meta.slot_mapping, key[0].transpose(0, 1), value[0].transpose(0, 1))
    key_cache, value_cache = cache.key_cache[layer], cache.value_cache[layer]
    _, hq, num_tokens, dim = query.shape
    out = query.new_empty(num_tokens, hq, dim)
    for group in meta.groups:
        n = group.query_len
        # [Hq, B_g * n, D] -> [B_g, Hq, n, D], in the cache's dtype (the contract's q dtype).
        q = query[0].index_select(1, group.token_index).to(key_cache.dtype)
        q = q.view(hq, -1, n, dim).transpose(0, 1)
        view = paged.PagedKV(key_cache, value_cache, group.block_tables, group.context_lens)
        if backend == "cuda":  # CuPy loads on the first launch only
            result = cuda_backend.paged_tree_attention(
                q, view, group.plan, scaling, max_context=group.max_context
            )
        else:
            result = paged.tree_attention(
                q, view, group.plan, scaling, window=sliding_window, softcap=softcap
            )
        out.index_copy_(0, group.token_index, result.reshape(-1, hq, dim).to(out.dtype))
    return out[None]


def _run(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: PagedBatch,
    scaling: float | None,
    **options: Any,
) -> torch.Tensor:
    layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise IncompatibleModelError(f"{type(module).__name__} has no layer_idx; paged attention needs it")
    out = paged_attention(
        batch.cache, batch.meta, int(layer), query, key, value, scaling, batch.backend, **options
    )
    batch.layers_run.add(int(layer))
    return out


#: The step's :class:`PagedBatch` while the engine's model call runs (on that thread or task):
#: found there by layers that drop the forward kwarg on the way to their attention (StableLM),
#: which would otherwise run their own attention over the step's tokens alone.
CURRENT_BATCH: ContextVar[PagedBatch | None] = ContextVar("suffixspec_paged_batch", default=None)


@contextlib.contextmanager
def paged_batch(batch: PagedBatch) -> Iterator[PagedBatch]:
    """Makes ``batch`` the current step's for the forward call made inside."""
    token = CURRENT_BATCH.set(batch)
    try:
        yield batch
    finally:
        CURRENT_BATCH.reset(token)


_register = register_deferring(
    "suffixspec_paged", PAGED_KWARG, "paged attention", _run, TORCH_ONLY_OPTIONS, CURRENT_BATCH
)


@contextlib.contextmanager
def paged_attention_active(model: Any) -> Iterator[None]:
    """Routes ``model``'s attention through :func:`paged_attention` for calls carrying
    ``suffixspec_paged``, while open."""
    from suffixspec.generation.compat import attention_switched

    with attention_switched(model, _register):
        yield
