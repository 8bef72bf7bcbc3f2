"""``SpecConfig``: the one settings type for drafting, shared by every entry point.

``suffixspec.generate``, the ``custom_generate`` hook, the replay tool, the serving engine and the
engine adapters all take a ``SpecConfig`` (or map their own option names onto one, e.g. vLLM's
``suffix_decoding_*`` fields), so a setting means the same thing, with the same default,
everywhere. The defaults are defined once, in the Rust core (``suffixspec_cache::defaults``), and
read here through the native module, so Python and Rust cannot drift.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from suffixspec._native import SPEC_DEFAULTS
from suffixspec.errors import InvalidParameterError

__all__ = ["ATTENTION_MODES", "DRAFTERS", "SEED_RANGE", "SpecConfig", "check_int", "check_real"]

#: The seeds ``torch.Generator.manual_seed`` accepts (inclusive): anything else overflows inside it.
SEED_RANGE = (-(2**63), 2**64 - 1)

#: Drafting algorithms: suffixspec's (drafts sized by expected acceptance) and arctic-inference's.
DRAFTERS = ("suffixspec", "arctic")

#: Attention implementations of the verification step: "auto" (the CUDA tree-attention kernel
#: where it runs, the model's own attention elsewhere), "cuda" (the kernel or an error), "torch".
ATTENTION_MODES = ("auto", "cuda", "torch")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> None:
    """Raises :class:`InvalidParameterError` unless ``value`` is an int (not a bool) in range."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidParameterError(f"{name} must be <= {maximum}, got {value}")


def check_real(
    name: str, value: Any, minimum: float | None = None, maximum: float | None = None, open_min: bool = False
) -> None:
    """Raises :class:`InvalidParameterError` unless ``value`` is a finite real (not a bool) in range."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise InvalidParameterError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if open_min else value < minimum):
        raise InvalidParameterError(f"{name} must be {'>' if open_min else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidParameterError(f"{name} must be <= {maximum}, got {value}")


# Typed views of the core's defaults (the dict's values are int, float or bool).
_D: dict[str, Any] = dict(SPEC_DEFAULTS)


@dataclass(frozen=True)
class SpecConfig:
    """How drafts are proposed, how large a verified draft may be, and how much the suffix cache keeps.

    Attributes:
        max_depth: depth of the suffix trees: the longest context match and draft counted.
        max_spec_tokens: most draft tokens (path) or nodes (tree) proposed per request and step.
        max_spec_factor, max_spec_offset: a draft matched on ``m`` context tokens has at most
            ``floor(m * max_spec_factor + max_spec_offset)`` tokens.
        min_token_prob: draft nodes less likely than this to be reached are dropped.
        use_tree_spec: draft trees (several continuations per step) instead of paths.
        max_tree_nodes: most nodes of a draft tree verified per request and step.
        min_match_len: suffixspec's decoding loop skips drafts matched on fewer context tokens.
        drafter: "suffixspec" (drafts sized by expected acceptance; the default here) or "arctic"
            (arctic-inference's drafts, the default of the drop-in ``SuffixCache.speculate``).
        max_cached_requests, max_cached_tokens: budgets of the cache's global tree of finished
            responses (oldest evicted first).
    """

    max_depth: int = _D["max_depth"]
    max_spec_tokens: int = _D["max_spec_tokens"]
    max_spec_factor: float = _D["max_spec_factor"]
    max_spec_offset: float = _D["max_spec_offset"]
    min_token_prob: float = _D["min_token_prob"]
    use_tree_spec: bool = _D["use_tree_spec"]
    max_tree_nodes: int = _D["max_tree_nodes"]
    min_match_len: int = _D["min_match_len"]
    drafter: str = _D["drafter"]
    max_cached_requests: int = _D["max_cached_requests"]
    max_cached_tokens: int = _D["max_cached_tokens"]

    def __post_init__(self) -> None:
        check_int("max_depth", self.max_depth, minimum=1)
        check_int("max_spec_tokens", self.max_spec_tokens, minimum=0)
        check_int("min_match_len", self.min_match_len, minimum=0)
        check_int("max_tree_nodes", self.max_tree_nodes, minimum=1)
        check_int("max_cached_requests", self.max_cached_requests, minimum=0)
        check_int("max_cached_tokens", self.max_cached_tokens, minimum=0)
        check_real("max_spec_factor", self.max_spec_factor, minimum=0.0)
        check_real("max_spec_offset", self.max_spec_offset)
        check_real("min_token_prob", self.min_token_prob, minimum=0.0, maximum=1.0)
        if self.drafter not in DRAFTERS:
            raise InvalidParameterError(f"drafter must be one of {DRAFTERS}, got {self.drafter!r}")
        if not isinstance(self.use_tree_spec, bool):
            raise InvalidParameterError(f"use_tree_spec must be a bool, got {self.use_tree_spec!r}")

    @property
    def node_budget(self) -> int:
        """Largest number of draft nodes verified per request and step."""
        return min(self.max_spec_tokens, self.max_tree_nodes)

    def replace(self, **changes: Any) -> SpecConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidParameterError(f"unknown SpecConfig settings: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def speculate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``SuffixCache.speculate`` / ``speculate_batch`` these settings imply."""
        return {
            "max_spec_tokens": self.max_spec_tokens,
            "max_spec_factor": self.max_spec_factor,
            "max_spec_offset": self.max_spec_offset,
            "min_token_prob": self.min_token_prob,
            "use_tree_spec": self.use_tree_spec,
            "drafter": self.drafter,
        }

    def cache_kwargs(self) -> dict[str, Any]:
        """The constructor arguments of :class:`suffixspec.SuffixCache` these settings imply."""
        return {
            "max_depth": self.max_depth,
            "max_cached_requests": self.max_cached_requests,
            "max_cached_tokens": self.max_cached_tokens,
        }
