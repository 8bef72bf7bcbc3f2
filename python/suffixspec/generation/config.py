"""Settings of one `generate` call: defaults from the model's `generation_config`, validated up front."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from transformers import GenerationConfig

from suffixspec.config import ATTENTION_MODES, SpecConfig, check_int, check_real
from suffixspec.errors import InvalidParameterError, InvalidTokenError
from suffixspec.generation.compat import prepare_generation_config

__all__ = [
    "ATTENTION_MODES",
    "DecodeConfig",
    "SpecConfig",
    "resolve_generation_config",
    "validate_decode_config",
]


@dataclass(frozen=True)
class DecodeConfig:
    """Resolved decoding settings (the `generation_config` with our checks applied)."""

    generation_config: GenerationConfig
    max_new_tokens: int
    do_sample: bool
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    # Seconds after which generation stops at the next step boundary (`max_time`), or None.
    max_time: float | None = None


# Settings `model.generate` honours that suffixspec does not implement, and why (refused rather
# than silently dropped).
UNSUPPORTED_SETTINGS = {
    "stop_strings": "stop strings need the tokenizer's view of the text; stop on eos_token_id instead",
    "output_scores": "per-step scores are not returned by speculative verification",
    "output_logits": "per-step logits are not returned by speculative verification",
    "output_attentions": "attention weights are not returned by speculative verification",
    "output_hidden_states": "hidden states are not returned by speculative verification",
    "encoder_repetition_penalty": "it penalises by the encoder input, which suffixspec does not model",
    "encoder_no_repeat_ngram_size": "it bans n-grams of the encoder input, which suffixspec does not model",
}
_NEUTRAL = {"encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0)}


def check_supported_settings(config: GenerationConfig) -> None:
    """Refuses the settings of :data:`UNSUPPORTED_SETTINGS` that `config` sets."""
    for name, why in UNSUPPORTED_SETTINGS.items():
        value = getattr(config, name, None)
        if value not in _NEUTRAL.get(name, (None, False)):
            raise InvalidParameterError(f"{name}={value!r} is not supported by suffixspec: {why}")


def token_list(value: Any, name: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, Integral):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        raise InvalidParameterError(f"{name} must be an integer token id or a list of them, got {value!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise InvalidParameterError(f"{name} must hold integer token ids, got {v!r}")
    return tuple(int(v) for v in values)


def resolve_generation_config(
    model: Any, generation_config: GenerationConfig | None = None, **overrides: Any
) -> GenerationConfig:
    """The model's `generation_config` updated with the non-None `overrides`, as `model.generate` does."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        kind = type(generation_config).__name__
        raise InvalidParameterError(f"generation_config must be a transformers.GenerationConfig, got {kind}")
    # Special-token ids are checked before transformers sees them (it raises builtins on bad types).
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        if name in overrides:
            token_list(overrides[name], name)
    pad = overrides.get("pad_token_id")
    if pad is not None and not isinstance(pad, Integral):  # model.generate takes one pad id only
        raise InvalidParameterError(f"pad_token_id must be one integer token id, got {pad!r}")
    if "max_new_tokens" in overrides:
        check_int("max_new_tokens", overrides["max_new_tokens"], minimum=1)
    if "do_sample" in overrides and not isinstance(overrides["do_sample"], bool):
        raise InvalidParameterError(f"do_sample must be a bool, got {overrides['do_sample']!r}")
    return prepare_generation_config(model, generation_config, **overrides)


def validate_decode_config(
    config: GenerationConfig, *, vocab_size: int, max_new_tokens: int | None
) -> DecodeConfig:
    """Checks sampling settings and special tokens; `max_new_tokens` must already be resolved."""
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    check_supported_settings(config)
    if config.max_time is not None:
        check_real("max_time", config.max_time, minimum=0.0)
    do_sample = bool(config.do_sample)
    if config.num_beams not in (None, 1):
        raise InvalidParameterError(f"beam search is not supported (num_beams={config.num_beams})")
    if config.num_return_sequences not in (None, 1):
        raise InvalidParameterError("num_return_sequences > 1 is not supported")
    if do_sample:
        if config.temperature is not None:
            check_real("temperature", config.temperature, minimum=0.0, open_min=True)
        if config.top_k is not None:
            check_int("top_k", config.top_k, minimum=0)
        if config.top_p is not None:
            check_real("top_p", config.top_p, minimum=0.0, maximum=1.0, open_min=True)
    eos = token_list(config.eos_token_id, "eos_token_id")
    pad = token_list(config.pad_token_id, "pad_token_id")
    for name, ids in (("eos_token_id", eos), ("pad_token_id", pad)):
        for t in ids:
            if t < 0:
                raise InvalidTokenError(f"{name} {t} is negative")
    # Like `model.generate`: pad falls back to the first EOS id, then to 0 (only used as filler).
    pad_id = pad[0] if pad else (eos[0] if eos else 0)
    # Ids beyond the vocabulary are tolerated as `model.generate` tolerates them (GPT-2's default
    # EOS 50256 with a small vocabulary): such an EOS can never be emitted, and the pad id only
    # fills the output.
    eos = tuple(t for t in eos if t < vocab_size)
    assert max_new_tokens is not None  # checked above
    return DecodeConfig(
        config,
        int(max_new_tokens),
        do_sample,
        eos,
        pad_id,
        max_time=None if config.max_time is None else float(config.max_time),
    )
