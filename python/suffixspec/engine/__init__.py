"""The serving engine: continuous batching with tree speculation over a paged KV cache.

``RequestParams``, ``SLO`` and ``RequestOutput`` import without torch; ``Engine`` and ``AsyncEngine``
load torch and transformers on first use (``suffixspec.Engine``)."""

from __future__ import annotations

import importlib
from typing import Any

from suffixspec.engine.params import SLO, RequestOutput, RequestParams, ServingStats

__all__ = ["SLO", "AsyncEngine", "Engine", "RequestOutput", "RequestParams", "ServingStats"]

_LAZY = {"Engine": "suffixspec.engine.engine", "AsyncEngine": "suffixspec.engine.async_engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'suffixspec.engine' has no attribute {name!r}")
