"""`suffixspec.generate`: lossless speculative generation over a transformers causal LM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList

from suffixspec import SuffixCache
from suffixspec.config import SEED_RANGE, check_int
from suffixspec.errors import InvalidParameterError
from suffixspec.generation.attention import AttentionBackend
from suffixspec.generation.batch import Request
from suffixspec.generation.compat import inspect_model
from suffixspec.generation.config import (
    SpecConfig,
    resolve_generation_config,
    validate_decode_config,
)
from suffixspec.generation.inputs import infer_attention_mask, normalize_prompts, validate_prompts
from suffixspec.generation.logits import TargetScorer, build_processors, check_processors
from suffixspec.generation.loop import SpeculativeLoop
from suffixspec.generation.proposer import Proposer, SuffixProposer
from suffixspec.generation.stats import BatchStats, RequestStats
from suffixspec.generation.streaming import StreamSink


@dataclass
class GenerationOutput:
    """Result of :func:`generate`.

    `sequences` is laid out as `model.generate` returns it: `[B, L + N]`, each prompt
    left-padded to the longest one `L`, followed by its generated tokens, right-padded with the
    pad token to the longest generation `N`. `generated` holds each request's new tokens alone.
    """

    sequences: torch.Tensor
    generated: list[list[int]]
    stats: list[RequestStats]
    batch: BatchStats = field(default_factory=BatchStats)


def _make_generator(generator: torch.Generator | None, seed: int | None, device: torch.device):
    if generator is not None and seed is not None:
        raise InvalidParameterError("pass either generator or seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise InvalidParameterError(
                f"generator must be a torch.Generator, got {type(generator).__name__}"
            )
        return generator
    if seed is None:
        return None
    check_int("seed", seed, *SEED_RANGE)
    return torch.Generator(device=device).manual_seed(seed)


def _sequences(
    requests: list[Request], pad_id: int, prefix: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    width = max(r.length - r.prompt_len for r in requests)
    if prefix is None:
        plen = max(r.prompt_len for r in requests)
        out = np.full((len(requests), plen + width), pad_id, dtype=np.int64)
        for b, r in enumerate(requests):
            out[b, plen - r.prompt_len : plen] = r.tokens[: r.prompt_len]
    else:  # keep the caller's own (padded) prompt tensor, as model.generate does
        plen = prefix.shape[1]
        out = np.full((len(requests), plen + width), pad_id, dtype=np.int64)
        out[:, :plen] = prefix.detach().cpu().numpy()
    for b, r in enumerate(requests):
        out[b, plen : plen + r.length - r.prompt_len] = r.generated
    return torch.from_numpy(out).to(device)


def run_generation(
    model: Any,
    input_ids: Any,
    *,
    generation_config: GenerationConfig,
    max_new_tokens: int | None,
    attention_mask: Any = None,
    processors: LogitsProcessorList | None = None,
    cache: SuffixCache | None = None,
    proposer: Proposer | None = None,
    spec: SpecConfig,
    attention: str = "auto",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    streamer: Any = None,
    stream_prompt: bool = True,
) -> GenerationOutput:
    """Shared by :func:`generate` and the transformers hook: validates everything, then runs."""
    info = inspect_model(model)
    if attention_mask is None:
        attention_mask = infer_attention_mask(
            input_ids, generation_config.pad_token_id, generation_config.eos_token_id
        )
    prompts = normalize_prompts(input_ids, attention_mask)
    padded_len = (
        input_ids.shape[-1]
        if isinstance(input_ids, (torch.Tensor, np.ndarray)) and input_ids.ndim == 2
        else max(p.size for p in prompts)
    )
    if max_new_tokens is None:
        max_new_tokens = (
            generation_config.max_new_tokens
            if generation_config.max_new_tokens is not None
            else generation_config.max_length - padded_len
        )
    decode = validate_decode_config(
        generation_config, vocab_size=info.vocab_size, max_new_tokens=max_new_tokens
    )
    validate_prompts(
        prompts, vocab_size=info.vocab_size, max_positions=info.max_positions, max_new_tokens=max_new_tokens
    )
    if processors is None:
        processors = build_processors(model, generation_config, padded_len)
    check_processors(processors)
    sink = StreamSink(streamer, len(prompts), send_prompt=stream_prompt) if streamer is not None else None
    if cache is not None and not isinstance(cache, SuffixCache):
        raise InvalidParameterError(f"cache must be a suffixspec.SuffixCache, got {type(cache).__name__}")
    if proposer is None:
        proposer = SuffixProposer(
            cache if cache is not None else SuffixCache(**spec.cache_kwargs()), spec, info.vocab_size
        )
    elif cache is not None:
        raise InvalidParameterError("pass either cache or proposer, not both")
    backend = AttentionBackend(model, attention)
    rng = _make_generator(generator, seed, info.device)
    if not decode.do_sample:
        rng = None  # greedy decoding draws nothing

    request_ids = [SuffixProposer.new_request_id() for _ in prompts]

    loop = SpeculativeLoop(model, info, decode, spec, TargetScorer(processors), proposer, backend, rng, sink)
    requests = [Request.new(rid, p, max_new_tokens) for rid, p in zip(request_ids, prompts, strict=True)]
    with torch.inference_mode():
        loop.run(requests)
    prefix = input_ids if isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2 else None
    out_device = input_ids.device if isinstance(input_ids, torch.Tensor) else info.device
    return GenerationOutput(
        sequences=_sequences(requests, decode.pad_token_id, prefix, out_device),
        generated=[r.generated.tolist() for r in requests],
        stats=[r.stats for r in requests],
        batch=loop.batch,
    )


def _spec_config(spec: Any) -> SpecConfig:
    if spec is None:
        return SpecConfig()
    if not isinstance(spec, SpecConfig):
        raise InvalidParameterError(f"spec must be a suffixspec.SpecConfig, got {type(spec).__name__}")
    return spec


def generate(
    model: Any,
    input_ids: Any,
    *,
    max_new_tokens: int | None = None,
    cache: SuffixCache | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    max_time: float | None = None,
    spec: SpecConfig | None = None,
    attention_mask: Any = None,
    generation_config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    streamer: Any = None,
    attention: str = "auto",
    proposer: Proposer | None = None,
) -> GenerationOutput:
    """Generates like `model.generate`, token for token (greedy) or in distribution (sampling),
    verifying suffix-cache drafts as token trees so that fewer forward passes are needed.

    Args:
        model: a transformers causal LM (eager or sdpa attention, per-token KV cache).
        input_ids: a `[1, L]` / `[B, L]` tensor (padding given by `attention_mask`), one list of
            ids, or a batch of lists of different lengths.
        max_new_tokens: tokens to generate at most per request (default: from `generation_config`).
        cache: the :class:`suffixspec.SuffixCache` to draft from; finished responses are added to
            it, so reusing one cache across calls lets later requests speculate from earlier ones.
            `None` uses a fresh cache.
        do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id: as in `model.generate`;
            unset values come from the model's `generation_config`. With `pad_token_id` set and
            no `attention_mask`, padding in a `[B, L]` `input_ids` is inferred as
            `model.generate` infers it.
        max_time: seconds; generation stops at the first step boundary after it (each output is
            then a prefix of the plain output). Settings of `generation_config` that suffixspec
            does not implement (`stop_strings`, `output_scores`, `encoder_repetition_penalty`,
            ...) raise :class:`~suffixspec.errors.InvalidParameterError`.
        spec: the drafting settings, a :class:`suffixspec.SpecConfig` (default: ``SpecConfig()``);
            its cache budgets size the fresh cache made when `cache` is None.
        generator, seed: randomness for sampling (a `torch.Generator`, or a seed for a new one).
        streamer: an object with `put(tensor)` / `end()` (e.g. `transformers.TextStreamer`);
            batch size 1 only.
        attention: "auto" (GPU tree-attention kernel when available), "cuda" or "torch".
        proposer: a custom :class:`~suffixspec.generation.proposer.Proposer` instead of `cache`.

    Returns:
        :class:`GenerationOutput` with `.sequences` (as `model.generate` returns them),
        `.generated` and per-request `.stats`.
    """
    inspect_model(model)  # before reading its generation_config
    spec = _spec_config(spec)
    config = resolve_generation_config(
        model,
        generation_config,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        max_time=max_time,
    )
    return run_generation(
        model,
        input_ids,
        generation_config=config,
        max_new_tokens=max_new_tokens,
        attention_mask=attention_mask,
        cache=cache,
        proposer=proposer,
        spec=spec,
        attention=attention,
        generator=generator,
        seed=seed,
        streamer=streamer,
    )
