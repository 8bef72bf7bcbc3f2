"""Plugs tree attention into transformers models through ``transformers.AttentionInterface``.

Inside :func:`attention_context` the model's attention implementation is switched (per model,
shared by concurrent contexts, see ``suffixspec.generation.compat.attention_switched``) to a
registered function that, when the forward call carries ``suffixspec_plan=<TreeAttentionPlan>``
(the verification step), runs tree attention over the layer's full KV (the CUDA kernel or the
torch reference); without the kwarg (prefill, plain decoding) it calls the model's original
implementation unchanged. The mask function registered under the same name is the original
one, so transformers prepares masks exactly as before.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch

from suffixspec.errors import IncompatibleModelError, InvalidParameterError, KernelUnavailableError
from suffixspec.kernels import cuda_backend, reference
from suffixspec.kernels.availability import unavailable_reason

__all__ = ["MODES", "PLAN_KWARG", "attention_context", "register_deferring", "resolve_mode"]

MODES = ("auto", "cuda", "torch")
PLAN_KWARG = "suffixspec_plan"
# Originals whose semantics the wrapper reproduces when it defers (flash/flex/paged variants
# prepare their inputs differently).
_SUPPORTED_ORIGINALS = ("sdpa", "eager")
# Attention kwargs that change the maths in ways tree attention does not implement.
# Attention options transformers passes per layer that tree attention (contiguous or paged) does
# not implement.
_UNSUPPORTED_KWARGS = ("sliding_window", "softcap", "s_aux")


def refuse_unsupported_options(
    kwargs: dict[str, Any], module: torch.nn.Module, implementation: str, implemented: tuple[str, ...] = ()
) -> None:
    """Raises :class:`IncompatibleModelError` if a layer asks for an attention option that
    suffixspec's tree attention does not implement (rather than ignoring it silently);
    ``implemented`` names those of them the caller's attention does implement."""
    for name in _UNSUPPORTED_KWARGS:
        if name not in implemented and kwargs.get(name) is not None:
            raise IncompatibleModelError(
                f"{implementation} does not implement {name!r} (used by {type(module).__name__})"
            )


def _model_facts(model: Any) -> tuple[str, torch.device, torch.dtype, int, str | None]:
    """(attention implementation, device, dtype, head dim, why tree attention cannot model it)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "set_attn_implementation"):
        raise IncompatibleModelError(
            f"{type(model).__name__} is not a transformers PreTrainedModel "
            "(no config / set_attn_implementation)"
        )
    from suffixspec.generation.compat import original_attn_implementation

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    original = original_attn_implementation(model) or "eager"
    return original, device, dtype, head_dim, _unsupported_attention(model, original, text)


def _unsupported_attention(model: Any, original: str, text: Any) -> str | None:
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return (
            f"{type(model).__name__}'s attention does not dispatch through transformers' AttentionInterface"
        )
    if original not in _SUPPORTED_ORIGINALS:
        return (
            f"tree attention wraps the 'sdpa' and 'eager' attention implementations; this model uses "
            f"{original!r} (load it with attn_implementation='sdpa')"
        )
    layer_types = set(getattr(text, "layer_types", None) or ())
    if layer_types - {"full_attention"}:
        return f"the model has {sorted(layer_types)} layers; tree attention implements full attention only"
    if getattr(text, "sliding_window", None) is not None and getattr(text, "use_sliding_window", True):
        return "the model uses sliding-window attention, which tree attention does not implement"
    if getattr(text, "attn_logit_softcapping", None) is not None:
        return "the model soft-caps attention logits, which tree attention does not implement"
    return None


def _cuda_unsupported(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    reason = unavailable_reason(device)
    if reason is not None:
        return reason
    if dtype not in cuda_backend.SUPPORTED_DTYPES:
        return f"the model's dtype is {dtype}; the kernel supports float16 and bfloat16"
    if head_dim not in cuda_backend.SUPPORTED_HEAD_DIMS:
        return f"the model's head dim is {head_dim}; the kernel supports {cuda_backend.SUPPORTED_HEAD_DIMS}"
    return None


def resolve_mode(model: Any, mode: str = "auto") -> str | None:
    """The backend :func:`attention_context` would use: ``"cuda"``, ``"torch"``, or None (the
    model's attention left untouched; only ``mode="auto"`` gives None).

    Raises:
        InvalidParameterError: an unknown mode.
        KernelUnavailableError: ``mode="cuda"`` where the kernel cannot run (the reason says why).
        IncompatibleModelError: ``"cuda"``/``"torch"`` on a model whose attention tree attention
            does not reproduce (neither sdpa nor eager; sliding windows; logit soft-capping), or
            that is not a transformers model.
    """
    if mode not in MODES:
        raise InvalidParameterError(f"mode must be one of {MODES}, got {mode!r}")
    _, device, dtype, head_dim, unsupported = _model_facts(model)
    if mode == "auto":
        ok = unsupported is None and _cuda_unsupported(device, dtype, head_dim) is None
        return "cuda" if ok else None
    if mode == "cuda":
        reason = _cuda_unsupported(device, dtype, head_dim)
        if reason is not None:
            raise KernelUnavailableError(f"CUDA tree attention was requested but cannot run: {reason}")
    if unsupported is not None:
        raise IncompatibleModelError(unsupported)
    return mode


@contextlib.contextmanager
def attention_context(model: Any, mode: str = "auto") -> Iterator[str | None]:
    """Runs tree attention in ``model`` while the context is open.

    Forward calls that pass ``suffixspec_plan=plan(...)`` use tree attention over each layer's
    KV cache; other calls run the model's own attention. ``mode``: ``"cuda"`` (the CUDA kernel;
    raises :class:`KernelUnavailableError` with the reason where it cannot run, never falls
    back), ``"torch"`` (the reference path, any device), ``"auto"`` (``"cuda"`` when it can run
    for this model, else the model is left untouched). Yields the backend in use (``"cuda"``,
    ``"torch"``) or None. The original attention implementation is restored on exit.
    """
    backend = resolve_mode(model, mode)
    if backend is None:
        yield None
        return
    from suffixspec.generation.compat import attention_switched

    with attention_switched(model, lambda original: _register(backend, original)):
        yield backend


def _register(backend: str, original: str) -> str:
    tree_attention = cuda_backend.tree_attention if backend == "cuda" else reference.tree_attention

    def run(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        tree_plan: Any,
        scaling: float | None,
    ) -> torch.Tensor:
        # The plan's masks replace attention_mask (the engine builds both from the same tree).
        return tree_attention(query, key, value, tree_plan, scaling)

    return register_deferring(f"suffixspec_{backend}", PLAN_KWARG, "tree attention", run)(original)


def register_deferring(
    prefix: str,
    kwarg: str,
    label: str,
    run: Callable[..., torch.Tensor],
    options: tuple[str, ...] = (),
    payload_var: ContextVar[Any] | None = None,
) -> Callable[[str], str]:
    """The ``register(original) -> name`` that ``compat.attention_switched`` takes, for an
    attention that runs ``run(module, query, key, value, payload, scaling, **opts)`` on calls
    carrying ``kwarg`` (its value is ``payload``) and defers every other call to the model's own
    ``original`` implementation unchanged. ``options``: the layer options of
    ``_UNSUPPORTED_KWARGS`` that ``run`` implements, passed to it by name when a layer sets
    them (the others are refused). ``payload_var``: where the payload is found when a call
    lacks ``kwarg`` (models whose layers drop extra kwargs on the way to their attention); set it
    only around the forward call it is meant for. Tree attention and the engine's paged
    attention both switch models this way."""
    from suffixspec.generation.compat import register_attention

    def register(original: str) -> str:
        name = f"{prefix}_{original}"
        attention = _deferring_attention(original, kwarg, label, run, options, payload_var)
        register_attention(name, attention, mask_like=original)
        return name

    return register


def _original_attention(original: str, module: torch.nn.Module) -> Callable[..., Any]:
    if original == "eager":  # each modeling file defines its own eager function
        eager: Callable[..., Any] | None = getattr(
            sys.modules.get(type(module).__module__), "eager_attention_forward", None
        )
        if eager is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward

            eager = eager_attention_forward
        return eager
    from suffixspec.generation.compat import attention_function

    return attention_function(original)


def _deferring_attention(
    original: str,
    kwarg: str,
    label: str,
    run: Callable[..., torch.Tensor],
    options: tuple[str, ...] = (),
    payload_var: ContextVar[Any] | None = None,
) -> Callable[..., Any]:
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
        payload = kwargs.get(kwarg)
        if payload is None and payload_var is not None:
            payload = payload_var.get()
        if payload is None:
            return _original_attention(original, module)(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        refuse_unsupported_options(kwargs, module, label, options)
        opts = {name: kwargs[name] for name in options if kwargs.get(name) is not None}
        return run(module, query, key, value, payload, scaling, **opts), None

    attention.__name__ = f"suffixspec_{label.replace(' ', '_')}"
    return attention
