"""Which architectures suffixspec serves: an allow-list of those its tests verified lossless.

Tree verification feeds a model blocks whose KV slots have holes (compaction) and whose rows are
sibling branches, with positions and a 4D mask saying what each row sees. That is exact only for
attention that takes visibility from the mask and order from the positions. Attention that uses
the KV *slot index* (local windows, chunks) or builds biases from the 2D padding mask (ALiBi)
silently computes something else, and config fields alone do not tell (GPT-Neo's local layers
look like full attention to transformers' layer-type helpers). So nothing is served on trust: a
class is served only once `tests/test_generate_architectures.py` verified it (fp32 greedy equal
to `model.generate` over ragged batches, warm and cold caches, path, tree and adversarial
branching drafts), and only in the attention variants verified. Everything else is refused with
the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suffixspec.errors import IncompatibleModelError

#: transformers causal-LM classes verified lossless (the README lists them).
SERVED = frozenset(
    {
        "CohereForCausalLM",
        "FalconForCausalLM",
        "GPT2LMHeadModel",
        "GPTBigCodeForCausalLM",
        "GPTJForCausalLM",
        "GPTNeoForCausalLM",
        "GPTNeoXForCausalLM",
        "Gemma2ForCausalLM",
        "GemmaForCausalLM",
        "GraniteForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "Olmo2ForCausalLM",
        "OlmoForCausalLM",
        "Phi3ForCausalLM",
        "PhiForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "StableLmForCausalLM",
        "Starcoder2ForCausalLM",
    }
)

#: Audited and refused, with the reason (attention that verification cannot reproduce).
REFUSED = {
    "BloomForCausalLM": "its ALiBi biases are built from the 2D padding mask by slot, not from positions",
    "MptForCausalLM": "its ALiBi biases are built from the key slot index, not from positions",
}


def _gpt_neo_variant(config: Any) -> str | None:
    if "local" in (getattr(config, "attention_layers", None) or ()):
        return (
            "its 'local' attention layers apply their window by KV slot index, which compaction "
            "holes and sibling tree nodes shift (only all-'global' GPT-Neo models are served)"
        )
    return None


def _falcon_variant(config: Any) -> str | None:
    if getattr(config, "alibi", False):
        return "alibi=True builds its biases from the 2D padding mask, which a tree block does not have"
    return None


#: Attention variants of served classes that are refused, by a check on the model's config.
VARIANT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "GPTNeoForCausalLM": _gpt_neo_variant,
    "FalconForCausalLM": _falcon_variant,
}


def refusal_reason(model: Any) -> str | None:
    """Why `model` is not served (None: it is)."""
    cls = type(model)
    name = cls.__name__
    if not cls.__module__.startswith("transformers.models."):
        return (
            f"{name} ({cls.__module__}) is not one of transformers' own model classes; only those "
            "verified lossless are served"
        )
    if name in REFUSED:
        return f"{name} is not supported: {REFUSED[name]}"
    if name not in SERVED:
        return (
            f"{name} has not been verified lossless under tree verification, so it is not served "
            f"(served: {', '.join(sorted(SERVED))})"
        )
    check = VARIANT_CHECKS.get(name)
    reason = check(model.config) if check is not None else None
    return f"{name} is not supported in this configuration: {reason}" if reason else None


def check_architecture(model: Any) -> None:
    """Raises :class:`IncompatibleModelError` with the reason unless `model` is served."""
    reason = refusal_reason(model)
    if reason is not None:
        raise IncompatibleModelError(reason)
