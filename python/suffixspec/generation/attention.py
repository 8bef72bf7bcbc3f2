"""Bridge to `suffixspec.kernels` (tree attention) for the verification forward passes.

`attention="auto"` runs the CUDA tree-attention kernel where it can run for the model and leaves
the model's own attention (with our 4D mask) everywhere else, e.g. on CPU; `"cuda"` insists on
the kernel; `"torch"` runs the kernels' torch reference path.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch

from suffixspec.errors import InvalidParameterError, KernelUnavailableError
from suffixspec.generation.config import ATTENTION_MODES


def _kernels() -> Any:
    """The kernels module, or None where it is absent or lacks the entry points we use."""
    try:
        module = importlib.import_module("suffixspec.kernels")
    except ImportError:
        return None
    needed = ("attention_context", "plan", "resolve_mode")
    return module if all(callable(getattr(module, name, None)) for name in needed) else None


class AttentionBackend:
    """Which attention the verification steps of one `generate` call use."""

    def __init__(self, model: Any, mode: str):
        if mode not in ATTENTION_MODES:
            raise InvalidParameterError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
        self.model = model
        self.mode = mode
        self.kernels = _kernels()
        if self.kernels is None and mode != "auto":
            raise KernelUnavailableError(f"attention={mode!r} needs suffixspec.kernels, which is unavailable")
        # Validates up front (unknown mode, kernel unavailable, model the kernel cannot model).
        self.backend = self.kernels.resolve_mode(model, mode) if self.kernels is not None else None
        self.plan_kwarg = getattr(self.kernels, "PLAN_KWARG", "suffixspec_plan")

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Open around the decoding loop: verification calls then run tree attention."""
        if self.backend is None:
            yield
            return
        with self.kernels.attention_context(self.model, self.mode):
            yield

    def forward_kwargs(self, tree_mask: torch.Tensor, kv_valid: torch.Tensor) -> dict[str, Any]:
        """The plan kwarg of one verification forward (empty on the 4D-mask path)."""
        if self.backend is None:
            return {}
        return {self.plan_kwarg: self.kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid)}
