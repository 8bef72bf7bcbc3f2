"""Prompts in any accepted form -> validated per-request token arrays."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch

from suffixspec.errors import DTypeError, InvalidParameterError, InvalidTokenError
from suffixspec.generation.config import token_list


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise DTypeError(f"{what} must hold integer token ids, got a {value.dtype} tensor")
        return value.detach().cpu().numpy().astype(np.int64, copy=False)
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise DTypeError(f"{what} must hold integer token ids, got a {value.dtype} array")
        return value.astype(np.int64, copy=False)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for v in value:
            if isinstance(v, bool) or not isinstance(v, Integral):
                raise DTypeError(f"{what} must hold integer token ids, got {v!r}")
        return np.asarray(value, dtype=np.int64).reshape(-1)
    raise DTypeError(f"{what} must be a tensor, an array or a list of token ids, got {type(value).__name__}")


def _as_mask(value: Any) -> np.ndarray:
    """An attention mask as `model.generate` accepts it (integer, bool or float 0/1) -> bool."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float().numpy() if value.dtype.is_floating_point else value.numpy()
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DTypeError(f"attention_mask must hold 0/1 (int, bool or float), got {type(value).__name__}")
    if value.dtype.kind != "b" and not np.isin(value, (0, 1)).all():
        raise InvalidParameterError("attention_mask must hold only 0 and 1")
    return value.astype(bool)


def infer_attention_mask(input_ids: Any, pad_token_id: Any, eos_token_id: Any) -> np.ndarray | None:
    """The mask `model.generate` infers for a `[B, L]` `input_ids` without one: padding wherever
    it holds the pad id, if it holds it and the pad id is no EOS id; None otherwise."""
    if not isinstance(input_ids, (torch.Tensor, np.ndarray)) or input_ids.ndim != 2:
        return None
    pads, eos = token_list(pad_token_id, "pad_token_id"), token_list(eos_token_id, "eos_token_id")
    if not pads or pads[0] in eos:
        return None
    ids = _as_array(input_ids, "input_ids")
    return ids != pads[0] if (ids == pads[0]).any() else None


def _is_nested(value: Any) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 2
    return (
        isinstance(value, Sequence)
        and len(value) > 0
        and all(isinstance(v, (Sequence, np.ndarray, torch.Tensor)) for v in value)
    )


def normalize_prompts(input_ids: Any, attention_mask: Any = None) -> list[np.ndarray]:
    """Per-request prompts from a `[L]` or `[B, L]` tensor/array (padding given by `attention_mask`),
    one list of ids, or a batch of lists of different lengths."""
    if isinstance(input_ids, (torch.Tensor, np.ndarray)) and input_ids.ndim not in (1, 2):
        raise DTypeError(f"input_ids must be 1-D or 2-D, got shape {tuple(input_ids.shape)}")
    if not _is_nested(input_ids):
        if attention_mask is not None:
            attention_mask = _as_mask(attention_mask).reshape(1, -1)
        input_ids = [input_ids]
    rows = [_as_array(row, "input_ids") for row in input_ids]
    if not rows:
        raise InvalidParameterError("input_ids holds no prompt")
    if attention_mask is not None:
        mask = _as_mask(attention_mask)
        if mask.shape != (len(rows), rows[0].shape[0]) or any(r.shape != rows[0].shape for r in rows):
            raise InvalidParameterError(
                f"attention_mask of shape {mask.shape} does not match input_ids of {len(rows)} rows"
            )
        rows = [row[m] for row, m in zip(rows, mask, strict=True)]
    return rows


def validate_prompts(
    prompts: list[np.ndarray], *, vocab_size: int, max_positions: int | None, max_new_tokens: int
) -> None:
    """Rejects empty prompts, ids outside the vocabulary and prompts the model cannot position."""
    for i, prompt in enumerate(prompts):
        if prompt.size == 0:
            raise InvalidParameterError(f"prompt {i} is empty")
        lo, hi = int(prompt.min()), int(prompt.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise InvalidTokenError(
                f"prompt {i} holds token id {bad}, outside the vocabulary [0, {vocab_size})"
            )
        if max_positions is not None:
            if prompt.size > max_positions:
                raise InvalidParameterError(
                    f"prompt {i} has {prompt.size} tokens, more than the model's maximum of {max_positions}"
                )
            if prompt.size + max_new_tokens > max_positions:
                raise InvalidParameterError(
                    f"prompt {i} ({prompt.size} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                    f"model's maximum of {max_positions} positions"
                )
