"""Paged attention plugged into transformers models through ``AttentionInterface``.

While :func:`paged_attention_active` is open on a model, a forward call that carries
``suffixspec_paged=PagedBatch(...)`` runs every attention layer as the engine needs it: the step's
new K/V is written at the plan's ``slot_mapping`` into the layer's paged cache, then each request's
queries attend over its blocks (prefix + new tokens) with the step's causal/tree visibility. Calls
without the kwarg run the model's original attention unchanged (see
``suffixspec.generation.compat.attention_switched``). This is the torch path (any device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from suffixspec.engine.paged_cache import PagedKVCache, StepMeta
from suffixspec.errors import IncompatibleModelError
from suffixspec.kernels import reference
from suffixspec.kernels.integration import refuse_unsupported_options

__all__ = ["PAGED_KWARG", "PagedBatch", "paged_attention", "paged_attention_active"]

PAGED_KWARG = "suffixspec_paged"


@dataclass(frozen=True)
class PagedBatch:
    """The forward kwarg of one engine step: the cache to read and write, and the step's layout."""

    cache: PagedKVCache
    meta: StepMeta


def paged_attention(
    cache: PagedKVCache,
    meta: StepMeta,
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """One layer of one step. ``query [1, Hq, N, D]``, ``key/value [1, Hkv, N, D]`` are the step's
    flat tokens (transformers' layout); returns ``[1, N, Hq, D]``."""
    cache.write(layer, meta.slot_mapping, key[0].transpose(0, 1), value[0].transpose(0, 1))
    keys = PagedKVCache.flat(cache.key_cache[layer])
    values = PagedKVCache.flat(cache.value_cache[layer])
    outs = []
    for row in meta.rows:
        q = query[:, :, row.offset : row.offset + row.query_len]
        k = keys[row.gather_slots].transpose(0, 1)[None].to(query.dtype)
        v = values[row.gather_slots].transpose(0, 1)[None].to(query.dtype)
        outs.append(reference.tree_attention(q, k, v, row.visible[None], scaling))
    return torch.cat(outs, dim=1)


def _attention(original: Callable[..., Any]) -> Callable[..., Any]:
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        batch = kwargs.get(PAGED_KWARG)
        if batch is None:
            return original(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        refuse_unsupported_options(kwargs, module, "paged attention")
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise IncompatibleModelError(
                f"{type(module).__name__} has no layer_idx; paged attention needs it"
            )
        return paged_attention(batch.cache, batch.meta, int(layer), query, key, value, scaling), None

    attention.__name__ = "suffixspec_paged_attention"
    return attention


def _register(original: str) -> str:
    from suffixspec.generation.compat import attention_function, register_attention

    if original == "eager":
        from transformers.models.llama.modeling_llama import eager_attention_forward

        deferred: Callable[..., Any] = eager_attention_forward
    else:
        deferred = attention_function(original)
    name = f"suffixspec_paged_{original}"
    register_attention(name, _attention(deferred), mask_like=original)
    return name


@contextlib.contextmanager
def paged_attention_active(model: Any) -> Iterator[None]:
    """Routes ``model``'s attention through :func:`paged_attention` for calls carrying
    ``suffixspec_paged``, while open."""
    from suffixspec.generation.compat import attention_switched

    with attention_switched(model, _register):
        yield
