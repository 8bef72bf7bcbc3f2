"""Everything suffixspec needs from transformers beyond its documented API, in one place.

Supported: exactly the transformers versions CI tests (the pinned 5.17 of `requirements/dev.txt`
and the newest release of `requirements/transformers-newest.txt`, see `./dev test-newest`).
Each private use below names the public API it stands in for (none exists for any of them) and
is covered by the generation tests under both versions:

- `_prepare_generation_config`: the model's `generation_config` merged with call arguments,
  exactly as `model.generate` merges them (legacy config files, unset values, validation).
- `_prepare_special_tokens` and `_get_logits_processor`: the logits processors
  `model.generate` would build for a config (the public `LogitsProcessorList` needs each
  processor built by hand, with the same defaults and ordering rules).
- the streamer of `model.generate`, which transformers does not forward to a callable
  `custom_generate` (it streams the prompt itself): read from the calling `generate` frame.
- `config._attn_implementation`: the attention switch for tree attention. The switch is made
  per model and reference-counted (see :func:`attention_switched`): the registered function
  defers to the original implementation for every call without a tree plan, so plain forward
  calls running meanwhile on other threads behave exactly as before.
- the KV cache keyword: `past_key_values` until 5.23, `cache` from 5.24 (the old name is
  deprecated there and gone from the signatures).
- `StaticLayer.cumulative_length`: the fill level of each static-cache layer (a device tensor
  that every update advances); :func:`rewind_static_cache` steps it back after a verification
  forward whose entries are scratch (the public `crop` exists for dynamic caches only).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

import torch
from transformers.cache_utils import get_layer_types_and_kwargs

from suffixspec.errors import IncompatibleModelError, InvalidParameterError

# Layer kinds whose KV cache is a plain per-token tensor we can compact; anything else
# (recurrent/linear attention states, chunked or sparse attention) cannot be rolled back.
SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})
# Attention implementations that honour an arbitrary 4D additive mask.
MASKABLE_ATTENTION = frozenset({"eager", "sdpa"})
_FORWARD_ARGS = ("input_ids", "attention_mask", "position_ids")
_CACHE_KWARGS = ("cache", "past_key_values")  # the newer name first


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
    cache_kwarg: str = "past_key_values"  # the forward keyword of the KV cache

    @property
    def mask_kinds(self) -> tuple[str, ...]:
        """Distinct layer types, i.e. the attention masks one forward pass needs."""
        return tuple(dict.fromkeys(self.layer_types))


def inspect_model(model: Any) -> ModelInfo:
    """Checks that `model` is a decoder-only causal LM with a per-token KV cache, of an
    architecture (and attention variant) verified lossless; raises
    :class:`IncompatibleModelError` with the reason otherwise."""
    from suffixspec.generation.support import check_architecture

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
    check_architecture(model)
    params = inspect.signature(model.forward).parameters
    cache_kwarg = next((k for k in _CACHE_KWARGS if k in params), None)
    missing = [a for a in _FORWARD_ARGS if a not in params] + ([] if cache_kwarg else ["past_key_values"])
    if missing:
        raise IncompatibleModelError(f"{name}.forward does not take {missing} (no KV cache support)")
    text_config = config.get_text_config(decoder=True)
    layer_types, _ = get_layer_types_and_kwargs(text_config)
    unsupported = sorted(set(layer_types) - SUPPORTED_LAYER_TYPES)
    if unsupported:
        raise IncompatibleModelError(
            f"{name} has layers of kind {unsupported}; only KV-cache attention works"
        )
    attn = original_attn_implementation(model) or "eager"
    if attn not in MASKABLE_ATTENTION:
        raise IncompatibleModelError(
            f"{name} uses attention implementation {attn!r}, which cannot take a tree mask; "
            "load it with attn_implementation='sdpa' or 'eager'"
        )
    sliding = getattr(text_config, "sliding_window", None) if "sliding_attention" in layer_types else None
    embeddings: Any = cast(Any, model).get_input_embeddings()  # a Module method, not a submodule
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
        cache_kwarg=cache_kwarg or "past_key_values",
    )


# -- generation config and logits processors -------------------------------------------------------


def prepare_generation_config(model: Any, generation_config: Any, **overrides: Any) -> Any:
    """`model.generate`'s own merge of `generation_config` (or the model's) with `overrides`."""
    try:
        config, unused = model._prepare_generation_config(generation_config, **overrides)
    except ValueError as exc:
        raise InvalidParameterError(str(exc)) from exc
    if unused:
        raise InvalidParameterError(f"unknown generation arguments: {sorted(unused)}")
    return config


def logits_processors(model: Any, config: Any, prompt_len: int, device: torch.device) -> Any:
    """The logits processors `model.generate` builds for `config` (warpers only when sampling)."""
    from transformers import LogitsProcessorList

    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device=device)
    return model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=prompt_len,
        encoder_input_ids=None,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(),
        device=device,
        model_kwargs={},
    )


def generate_streamer() -> Any:
    """The streamer given to the `model.generate` call up the stack (None if none): transformers
    does not forward it to a callable `custom_generate`."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (
        frame.f_code.co_name == "generate"
        and frame.f_globals.get("__name__") == "transformers.generation.utils"
    ):
        frame = frame.f_back
    return None if frame is None else frame.f_locals.get("streamer")


# -- attention implementation switch ---------------------------------------------------------------


@dataclass
class _Switch:
    original: str
    name: str
    users: int


_switch_lock = threading.Lock()
_switches: weakref.WeakKeyDictionary[Any, _Switch] = weakref.WeakKeyDictionary()


def original_attn_implementation(model: Any) -> str | None:
    """The model's own attention implementation, also while :func:`attention_switched` is open."""
    with _switch_lock:
        switch = _switches.get(model)
    return switch.original if switch is not None else model.config._attn_implementation


def attention_function(name: str) -> Callable[..., Any]:
    """The attention function registered under `name` (public mapping lookup)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[name]


def register_attention(name: str, function: Callable[..., Any], mask_like: str) -> None:
    """Registers `function` as attention implementation `name`, with the mask function of
    implementation `mask_like`, so that masks are prepared exactly as for that one."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(name, function)
    if mask_like in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_like])


@contextlib.contextmanager
def attention_switched(model: Any, make_name: Callable[[str], str]) -> Iterator[str]:
    """Runs `model` with attention implementation `make_name(original)` while open; yields it.

    Nested and concurrent contexts on one model share one switch: the first to enter makes it,
    the last to leave restores the original. The registered implementation must defer to the
    original for every call it does not handle, which makes the switch invisible to plain
    forward calls made meanwhile (on this thread or another)."""
    with _switch_lock:
        switch = _switches.get(model)
        if switch is None:
            original = model.config._attn_implementation
            switch = _Switch(original, make_name(original), 0)
            _switches[model] = switch
            # Assigning the config attribute switches the config and its sub-configs
            # (transformers' setter); set_attn_implementation() would also walk every module,
            # milliseconds per verification step on a large model.
            model.config._attn_implementation = switch.name
        elif make_name(switch.original) != switch.name:
            raise InvalidParameterError(
                f"{type(model).__name__} is already running attention {switch.name!r} on another "
                f"thread; it cannot run {make_name(switch.original)!r} at the same time"
            )
        switch.users += 1
    try:
        yield switch.name
    finally:
        with _switch_lock:
            switch.users -= 1
            if switch.users == 0:
                del _switches[model]
                model.config._attn_implementation = switch.original


def rewind_static_cache(cache: Any, tokens: int) -> None:
    """Steps every layer of a transformers `StaticCache` back by `tokens` positions, on the device
    (no host synchronisation: capturable); the entries stay in memory and are overwritten next."""
    for layer in cache.layers:
        layer.cumulative_length.sub_(tokens)
