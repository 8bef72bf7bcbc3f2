"""What the generation loop needs to know about a model, and the checks that it can drive it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import get_layer_types_and_kwargs

from suffixspec.errors import IncompatibleModelError

# Layer kinds whose KV cache is a plain per-token tensor we can compact; anything else
# (recurrent/linear attention states, chunked or sparse attention) cannot be rolled back.
SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})
# Attention implementations that honour an arbitrary 4D additive mask.
MASKABLE_ATTENTION = frozenset({"eager", "sdpa"})
_FORWARD_ARGS = ("input_ids", "attention_mask", "position_ids", "past_key_values")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a causal LM that the loop relies on."""

    vocab_size: int
    max_positions: int | None
    layer_types: tuple[str, ...]
    sliding_window: int | None
    device: torch.device
    dtype: torch.dtype
    supports_logits_to_keep: bool

    @property
    def mask_kinds(self) -> tuple[str, ...]:
        """Distinct layer types, i.e. the attention masks one forward pass needs."""
        return tuple(dict.fromkeys(self.layer_types))


def inspect_model(model: Any) -> ModelInfo:
    """Checks that `model` is a decoder-only causal LM with a per-token KV cache; raises
    :class:`IncompatibleModelError` otherwise."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        raise IncompatibleModelError(f"{name} is not a transformers model (no .config)")
    if getattr(config, "is_encoder_decoder", False):
        raise IncompatibleModelError(f"{name} is an encoder-decoder model; only decoder-only causal LMs work")
    get_head = getattr(model, "get_output_embeddings", None)
    if get_head is None or get_head() is None:
        raise IncompatibleModelError(f"{name} has no causal LM head (use the *ForCausalLM class)")
    if getattr(model, "_is_stateful", False):
        raise IncompatibleModelError(f"{name} keeps a recurrent state that cannot be rolled back")
    params = inspect.signature(model.forward).parameters
    missing = [a for a in _FORWARD_ARGS if a not in params]
    if missing:
        raise IncompatibleModelError(f"{name}.forward does not take {missing} (no KV cache support)")
    text_config = config.get_text_config(decoder=True)
    layer_types, _ = get_layer_types_and_kwargs(text_config)
    unsupported = sorted(set(layer_types) - SUPPORTED_LAYER_TYPES)
    if unsupported:
        raise IncompatibleModelError(
            f"{name} has layers of kind {unsupported}; only KV-cache attention works"
        )
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in MASKABLE_ATTENTION:
        raise IncompatibleModelError(
            f"{name} uses attention implementation {attn!r}, which cannot take a tree mask; "
            "load it with attn_implementation='sdpa' or 'eager'"
        )
    sliding = getattr(text_config, "sliding_window", None) if "sliding_attention" in layer_types else None
    embeddings = model.get_input_embeddings()
    vocab = getattr(embeddings, "num_embeddings", None) or text_config.vocab_size
    weight = next(model.parameters())
    return ModelInfo(
        vocab_size=int(vocab),
        max_positions=getattr(text_config, "max_position_embeddings", None),
        layer_types=tuple(layer_types),
        sliding_window=int(sliding) if sliding is not None else None,
        device=weight.device,
        dtype=weight.dtype,
        supports_logits_to_keep="logits_to_keep" in params,
    )
