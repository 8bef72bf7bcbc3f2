"""transformers integration: ``model.generate(..., custom_generate=suffixspec.hf.generate)``.

transformers calls a callable ``custom_generate`` in place of its own decoding loop, after it has
prepared the generation config, logits processors, stopping criteria, attention mask and cache.
This hook runs the speculative loop of :func:`suffixspec.generate` with those. Keyword arguments
of ``model.generate`` that this signature adds (``suffix_cache``, ``max_spec_tokens``, ...) are
routed here by transformers.

    model.generate(input_ids, max_new_tokens=64, custom_generate=suffixspec.hf.generate,
                   suffix_cache=cache)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from suffixspec.errors import InvalidParameterError

# model_kwargs transformers prepares for every decoder-only model; the loop derives them itself.
_PREPARED_KWARGS = frozenset(
    {"attention_mask", "position_ids", "use_cache", "logits_to_keep", "past_key_values", "cache_position"}
)
_UNSUPPORTED_OUTPUTS = ("output_scores", "output_logits", "output_attentions", "output_hidden_states")


def _caller_streamer() -> Any:
    """The streamer given to `model.generate`, which transformers 5 does not forward to a callable
    `custom_generate` (it already streamed the prompt); read from the calling frame."""
    frame = sys._getframe(2)
    while frame is not None and not (
        frame.f_code.co_name == "generate"
        and frame.f_globals.get("__name__") == "transformers.generation.utils"
    ):
        frame = frame.f_back
    return None if frame is None else frame.f_locals.get("streamer")


def _check_stopping_criteria(stopping_criteria: Any) -> None:
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    for criterion in stopping_criteria or ():
        if not isinstance(criterion, (MaxLengthCriteria, EosTokenCriteria)):
            raise InvalidParameterError(
                f"stopping criterion {type(criterion).__name__} is not supported by suffixspec "
                "(only max length and EOS)"
            )


def _check_model_kwargs(model_kwargs: dict[str, Any]) -> None:
    unknown = sorted(
        k
        for k, v in model_kwargs.items()
        if k not in _PREPARED_KWARGS and v is not None and not (k.startswith("output_") and not v)
    )
    if unknown:
        raise InvalidParameterError(f"model inputs {unknown} are not supported by suffixspec")
    cache = model_kwargs.get("past_key_values")
    if cache is not None and cache.get_seq_length() > 0:
        raise InvalidParameterError("a pre-filled past_key_values is not supported by suffixspec")


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

    if synced_gpus:
        raise InvalidParameterError("synced_gpus is not supported by suffixspec")
    for name in _UNSUPPORTED_OUTPUTS:
        if getattr(generation_config, name, False):
            raise InvalidParameterError(f"{name}=True is not supported by suffixspec")
    _check_stopping_criteria(stopping_criteria)
    _check_model_kwargs(model_kwargs)
    if streamer is None:
        streamer = _caller_streamer()
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
        return GenerateDecoderOnlyOutput(sequences=output.sequences)
    return output.sequences
