"""Which models the engine serves, and which implementation of the paged contract runs them.

The engine replaces every layer's attention by paged attention (``engine/paged_attention.py``)
through transformers' ``AttentionInterface``. That is exact only for a model whose attention
really goes through that interface, reads its order from the positions
and its visibility from the paged layout, and whose layer options (sliding windows, logit
soft-capping) the paged path implements. Config fields alone do not tell: Falcon, GPT-J and
GPT-Neo compute attention themselves (transformers' layer-type helpers say nothing of it), and
StableLM's layers drop extra forward kwargs, so the engine also hands the step's batch over in a
context variable (``paged_attention.CURRENT_BATCH``). So, as for ``suffixspec.generate``
(``generation/support.py``), a class is served only once ``tests/test_engine_architectures.py``
verified it (fp32 greedy through the engine equal to ``model.generate``, ragged prompts, branching
drafts, chunked prefill and preemption), and every step checks that every layer's attention ran
through the paged path (:func:`check_layers_ran`), so that a model that slips through (another
transformers release, say) fails loudly instead of answering wrongly.
"""

from __future__ import annotations

from typing import Any

from suffixspec.errors import IncompatibleModelError, InvalidParameterError
from suffixspec.generation.attention import AttentionBackend
from suffixspec.generation.compat import ModelInfo, inspect_model, original_attn_implementation
from suffixspec.generation.config import ATTENTION_MODES
from suffixspec.generation.support import SERVED

__all__ = [
    "PAGED_ARCHITECTURES",
    "UNREACHABLE",
    "attention_backend",
    "check_layers_ran",
    "check_model",
    "torch_only_reason",
]

#: Classes ``suffixspec.generate`` serves whose attention the paged path cannot reach, and why.
UNREACHABLE = {
    "FalconForCausalLM": "it computes attention itself, not through transformers' AttentionInterface",
    "GPTJForCausalLM": "it computes attention itself, not through transformers' AttentionInterface",
    "GPTNeoForCausalLM": "it computes attention itself, not through transformers' AttentionInterface",
}

#: Classes verified lossless through the paged path (tests/test_engine_architectures.py runs
#: every one): every class ``suffixspec.generate`` serves except the unreachable ones.
PAGED_ARCHITECTURES = SERVED - UNREACHABLE.keys()

#: Layer kinds the paged path implements (transformers' ``config.layer_types`` names).
_LAYER_TYPES = {"full_attention", "sliding_attention"}


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def torch_only_reason(model: Any) -> str | None:
    """What in ``model``'s attention only the torch implementation of the paged contract does
    (sliding windows, logit soft-capping); None when the CUDA kernel's paged mode can run it."""
    text = _text_config(model)
    layer_types = set(getattr(text, "layer_types", None) or ())
    window = getattr(text, "sliding_window", None)
    if "sliding_attention" in layer_types or (
        window is not None and getattr(text, "use_sliding_window", True) and not layer_types
    ):
        return "sliding-window layers"
    if getattr(text, "attn_logit_softcapping", None) is not None:
        return "attention logit soft-capping"
    return None


def check_model(model: Any) -> ModelInfo:
    """The generation loop's checks (architecture allow-list, configuration variants) plus the
    engine's own allow-list; raises :class:`IncompatibleModelError` with the reason."""
    info = inspect_model(model)
    name = type(model).__name__
    if name not in PAGED_ARCHITECTURES:
        why = UNREACHABLE.get(name, "it has not been verified lossless under it")
        raise IncompatibleModelError(
            f"{name} cannot be served by the engine's paged attention: {why} "
            f"(served: {', '.join(sorted(PAGED_ARCHITECTURES))})"
        )
    text = _text_config(model)
    implementation = original_attn_implementation(model)
    if getattr(text, "attn_logit_softcapping", None) is not None and implementation != "eager":
        # transformers 5.17's sdpa attention drops the soft-cap without a word (later releases
        # refuse it): the model's own output is then not the model's, and neither loop may copy it.
        raise IncompatibleModelError(
            f"{name} soft-caps its attention logits, which transformers' {implementation!r} attention "
            "does not implement; load the model with attn_implementation='eager'"
        )
    other = set(getattr(text, "layer_types", None) or ()) - _LAYER_TYPES
    if other:
        raise IncompatibleModelError(
            f"{name} has {sorted(other)} layers; the engine's paged attention implements "
            f"{sorted(_LAYER_TYPES)} only"
        )
    return info


def attention_backend(model: Any, mode: str) -> str:
    """The paged backend of ``attention=mode``: ``"cuda"`` (the kernel's paged mode) or
    ``"torch"`` (its reference). The same resolution as ``suffixspec.generate``
    (``generation.attention``) for what the kernel can run; where that would leave the model's
    own attention ("auto" without a usable kernel) the engine runs the torch reference, and a
    model with sliding windows or soft-capping always gets the torch reference ("cuda" is refused
    with the reason)."""
    if mode not in ATTENTION_MODES:
        raise InvalidParameterError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
    reason = torch_only_reason(model)
    if reason is not None:
        if mode == "cuda":
            raise IncompatibleModelError(
                f"{type(model).__name__} uses {reason}, which the CUDA kernel's paged mode does not "
                "implement; serve it with attention='torch' or 'auto' (the torch reference)"
            )
        return "torch"
    return "cuda" if AttentionBackend(model, mode).backend == "cuda" else "torch"


def check_layers_ran(model: Any, layers_run: set[int], num_layers: int) -> None:
    """Raises :class:`IncompatibleModelError` unless the attention of every one of the
    ``num_layers`` decoder layers ran through the paged path during a forward call."""
    if len(layers_run) != num_layers:
        missing = sorted(set(range(num_layers)) - layers_run)
        raise IncompatibleModelError(
            f"{type(model).__name__}'s attention did not run through the engine's paged attention in "
            f"layers {missing[:8]}{'...' if len(missing) > 8 else ''} (they compute attention "
            "themselves, not through transformers' AttentionInterface); its output would be wrong, "
            "so it is not served"
        )
