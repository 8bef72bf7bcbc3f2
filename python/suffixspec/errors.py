"""Exception hierarchy of suffixspec.

Every error raised by suffixspec derives from :class:`SuffixSpecError` and from the builtin
exception a Python user would expect (``KeyError`` for an unknown request id, ``ValueError``
for a bad value, ``TypeError`` for a wrong dtype), so both ``except SuffixSpecError`` and
``except ValueError`` work. The native module raises these same classes.
"""

from __future__ import annotations

__all__ = [
    "DTypeError",
    "DuplicateRequestError",
    "EngineIntegrationError",
    "IncompatibleModelError",
    "InvalidParameterError",
    "InvalidTokenError",
    "InvalidTreeError",
    "KernelUnavailableError",
    "ModelNotFoundError",
    "QueueFullError",
    "RequestFailedError",
    "SuffixSpecError",
    "TraceFormatError",
    "UnknownRequestError",
]


class SuffixSpecError(Exception):
    """Base class of every suffixspec error."""


class UnknownRequestError(SuffixSpecError, KeyError, ValueError):
    """A request id that is not active (or not cached, for eviction).

    Also a ``ValueError`` because arctic-inference raises ``ValueError`` there: code written
    for its cache keeps working."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateRequestError(SuffixSpecError, ValueError):
    """A request id that is already active."""


class InvalidTokenError(SuffixSpecError, ValueError):
    """A token id that is negative, too large, or outside the model's vocabulary."""


class InvalidParameterError(SuffixSpecError, ValueError):
    """A parameter out of its range (or not finite)."""


class InvalidTreeError(SuffixSpecError, ValueError):
    """A token tree whose parents, lengths or probabilities are inconsistent."""


class DTypeError(SuffixSpecError, TypeError):
    """An array of the wrong dtype or shape, or a sequence holding non-integers."""


class IncompatibleModelError(SuffixSpecError, TypeError):
    """A model suffixspec cannot drive (no causal LM head, no KV cache support, ...)."""


class KernelUnavailableError(SuffixSpecError, RuntimeError):
    """A GPU kernel was asked for explicitly on a machine that cannot run it."""


class TraceFormatError(SuffixSpecError, ValueError):
    """A malformed trace file; the message names the file and line."""


class ModelNotFoundError(SuffixSpecError, FileNotFoundError):
    """A model that is not where it was looked for (or the default one, not built yet)."""


class EngineIntegrationError(SuffixSpecError, RuntimeError):
    """suffixspec cannot take over an inference engine's drafting as asked (an engine version it
    was not tested with, another plugin replacing the same drafter, a missing opt-in)."""


class QueueFullError(SuffixSpecError, RuntimeError):
    """A request refused because too many are already waiting (a server answers 429)."""


class RequestFailedError(SuffixSpecError, RuntimeError):
    """A request the engine ended with ``finish_reason`` ``"error"`` because a stage of a step
    failed for it (the forward pass, drafting, verification, detokenization, ...); the failure
    is its ``__cause__``. ``stage`` names the stage (see :meth:`suffixspec.Engine.step`).

    A ``RuntimeError``, not a ``ValueError``: the request's input was accepted, the engine (or a
    component it was given, such as a proposer) failed while serving it; a server answers 500."""

    def __init__(self, request_id: object, stage: str, cause: BaseException):
        super().__init__(f"request {request_id!r} failed in {stage}: {type(cause).__name__}: {cause}")
        self.request_id, self.stage = request_id, stage
        self.__cause__ = cause
