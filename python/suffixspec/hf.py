"""transformers integration: ``model.generate(..., custom_generate=suffixspec.hf.generate)``.

transformers calls a callable ``custom_generate`` in place of its own decoding loop, after it has
prepared the generation config, logits processors, stopping criteria, attention mask and cache.
This hook runs the speculative loop of :func:`suffixspec.generate` with those. Keyword arguments
of ``model.generate`` that this signature adds (``suffix_cache``, ``spec``, ...) are
routed here by transformers.

    model.generate(input_ids, max_new_tokens=64, custom_generate=suffixspec.hf.generate,
                   suffix_cache=cache)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from suffixspec.errors import InvalidParameterError

# model_kwargs transformers prepares for every decoder-only model; the loop derives them itself.
_PREPARED_KWARGS = frozenset(
    {"attention_mask", "position_ids", "use_cache", "logits_to_keep", "cache_position"}
)
# The prepared KV cache, under its name of each supported transformers version.
_CACHE_KWARGS = ("past_key_values", "cache")


def _check_stopping_criteria(stopping_criteria: Any) -> None:
    from transformers.generation.stopping_criteria import (
        EosTokenCriteria,
        MaxLengthCriteria,
        MaxTimeCriteria,
    )

    # All three come from generation_config, which the loop honours itself.
    for criterion in stopping_criteria or ():
        if not isinstance(criterion, (MaxLengthCriteria, EosTokenCriteria, MaxTimeCriteria)):
            raise InvalidParameterError(
                f"stopping criterion {type(criterion).__name__} is not supported by suffixspec "
                "(only max length, max time and EOS)"
            )


def _check_model_kwargs(model_kwargs: dict[str, Any]) -> None:
    unknown = sorted(
        k
        for k, v in model_kwargs.items()
        if k not in _PREPARED_KWARGS
        and k not in _CACHE_KWARGS
        and v is not None
        and not (k.startswith("output_") and not v)
    )
    if unknown:
        raise InvalidParameterError(f"model inputs {unknown} are not supported by suffixspec")
    for name in _CACHE_KWARGS:
        cache = model_kwargs.get(name)
        if cache is not None and cache.get_seq_length() > 0:
            raise InvalidParameterError(f"a pre-filled {name} is not supported by suffixspec")


def generate(
    model: Any,
    input_ids: torch.LongTensor,
    logits_processor: Any = None,
    stopping_criteria: Any = None,
    generation_config: Any = None,
    synced_gpus: bool = False,
    streamer: Any = None,
    *,
    suffix_cache: Any = None,
    spec: Any = None,
    attention: str = "auto",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    on_output: Callable[[Any], None] | None = None,
    **model_kwargs: Any,
) -> Any:
    """The `custom_generate` hook. Returns what `model.generate` would: the sequences tensor, or a
    `GenerateDecoderOnlyOutput` holding it when `return_dict_in_generate=True`.

    Extra arguments (pass them to `model.generate`): `suffix_cache` (a `suffixspec.SuffixCache`
    kept across calls), `spec` (a :class:`suffixspec.SpecConfig`), `attention`,
    `generator`/`seed` for sampling, and `on_output`, called with the full
    :class:`suffixspec.generation.GenerationOutput` (per-request statistics).
    """
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    from suffixspec.generation.api import _spec_config, run_generation
    from suffixspec.generation.compat import generate_streamer
    from suffixspec.generation.config import check_supported_settings

    if synced_gpus:
        raise InvalidParameterError("synced_gpus is not supported by suffixspec")
    check_supported_settings(generation_config)
    _check_stopping_criteria(stopping_criteria)
    _check_model_kwargs(model_kwargs)
    if streamer is None:  # transformers does not forward it to a callable custom_generate
        streamer = generate_streamer()
    spec = _spec_config(spec)
    output = run_generation(
        model,
        input_ids,
        generation_config=generation_config,
        max_new_tokens=generation_config.max_length - input_ids.shape[1],
        attention_mask=model_kwargs.get("attention_mask"),
        processors=logits_processor,
        cache=suffix_cache,
        spec=spec,
        attention=attention,
        generator=generator,
        seed=seed,
        streamer=streamer,
        stream_prompt=False,  # model.generate has streamed it
    )
    if on_output is not None:
        on_output(output)
    if generation_config.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(sequences=output.sequences)  # type: ignore[arg-type]
    return output.sequences
