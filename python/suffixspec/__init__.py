"""suffixspec: lossless speculative decoding with suffix trees.

Importing ``suffixspec`` is cheap: the torch/transformers parts (``generate``, ``hf``,
``kernels``) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from suffixspec import errors
from suffixspec._native import Draft, SuffixTree, TokenTree
from suffixspec._native import __version__ as __version__
from suffixspec.cache import SuffixCache
from suffixspec.config import SpecConfig
from suffixspec.errors import (
    DTypeError,
    DuplicateRequestError,
    EngineIntegrationError,
    IncompatibleModelError,
    InvalidParameterError,
    InvalidTokenError,
    InvalidTreeError,
    KernelUnavailableError,
    ModelNotFoundError,
    QueueFullError,
    RequestFailedError,
    SuffixSpecError,
    TraceFormatError,
    UnknownRequestError,
)

if TYPE_CHECKING:
    from suffixspec.engine import SLO, AsyncEngine, Engine, RequestOutput, RequestParams, ServingStats
    from suffixspec.generation import GenerationOutput, RequestStats, generate

__all__ = [
    "SLO",
    "AsyncEngine",
    "DTypeError",
    "Draft",
    "DuplicateRequestError",
    "Engine",
    "EngineIntegrationError",
    "GenerationOutput",
    "IncompatibleModelError",
    "InvalidParameterError",
    "InvalidTokenError",
    "InvalidTreeError",
    "KernelUnavailableError",
    "ModelNotFoundError",
    "QueueFullError",
    "RequestFailedError",
    "RequestOutput",
    "RequestParams",
    "RequestStats",
    "ServingStats",
    "SpecConfig",
    "SuffixCache",
    "SuffixSpecError",
    "SuffixTree",
    "TokenTree",
    "TraceFormatError",
    "UnknownRequestError",
    "errors",
    "generate",
]

# Names served lazily so that `import suffixspec` does not import torch.
_LAZY = {
    "generate": "suffixspec.generation",
    "GenerationOutput": "suffixspec.generation",
    "RequestStats": "suffixspec.generation",
    "AsyncEngine": "suffixspec.engine",
    "Engine": "suffixspec.engine",
    "RequestParams": "suffixspec.engine",
    "RequestOutput": "suffixspec.engine",
    "SLO": "suffixspec.engine",
    "ServingStats": "suffixspec.engine",
}
_LAZY_MODULES = {"hf", "kernels", "replay", "generation", "engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"suffixspec.{name}")
    raise AttributeError(f"module 'suffixspec' has no attribute {name!r}")
