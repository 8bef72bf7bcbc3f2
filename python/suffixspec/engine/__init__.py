"""The serving engine: continuous batching with tree speculation over a paged KV cache.

``RequestParams``, ``SLO`` and ``RequestOutput`` import without torch; ``Engine`` loads torch and
transformers on first use (``suffixspec.Engine``)."""

from __future__ import annotations

import importlib
from typing import Any

from suffixspec.engine.params import SLO, RequestOutput, RequestParams, RequestStats

__all__ = ["SLO", "Engine", "RequestOutput", "RequestParams", "RequestStats"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        return importlib.import_module("suffixspec.engine.engine").Engine
    raise AttributeError(f"module 'suffixspec.engine' has no attribute {name!r}")
