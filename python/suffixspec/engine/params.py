"""What a caller says about one request (``RequestParams``, ``SLO``) and what it gets back
(``RequestOutput``). Typed and validated at construction; importing this module does not import
torch. Drafting settings are not repeated here: they are the engine's :class:`SpecConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from suffixspec.config import SEED_RANGE, check_int, check_real
from suffixspec.errors import InvalidParameterError, RequestFailedError

__all__ = ["FINISH_REASONS", "SLO", "RequestOutput", "RequestParams", "ServingStats"]

#: Why a request ended: max_new_tokens reached, a stop token, a stop string, ``abort``,
#: ``error`` (a stage of one of its steps failed for it: see :meth:`suffixspec.Engine.step`), or
#: ``time``: its deadline passed (``RequestParams.max_time``, ``Engine.generate(max_time=)``;
#: the name ``suffixspec.generate``'s ``RequestStats.finish_reason`` uses).
FINISH_REASONS = ("length", "stop", "abort", "error", "time")


@dataclass(frozen=True)
class SLO:
    """Latency targets of one request, in milliseconds (None: no target).

    ``tpot_ms`` (time per output token after the first) steers how much the engine speculates for
    the request each step (AdaServe); ``ttft_ms`` (time to first token) orders admission."""

    tpot_ms: float | None = None
    ttft_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("tpot_ms", "ttft_ms"):
            value = getattr(self, name)
            if value is not None:
                check_real(f"SLO.{name}", value, minimum=0.0, open_min=True)


def _token_ids(name: str, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidParameterError(f"{name} must be a sequence of token ids, got {value!r}")
    for tok in value:
        check_int(name, tok, minimum=0)
    return tuple(int(t) for t in value)


@dataclass(frozen=True)
class RequestParams:
    """How one request is decoded.

    Attributes:
        max_new_tokens: most tokens generated (stop tokens included).
        do_sample: sample from the (warped) target distribution; False: greedy, exactly
            ``model.generate``'s greedy output.
        temperature, top_k, top_p: the sampling warpers, as ``model.generate`` applies them
            (None: the model's generation config decides).
        seed: seeds the request's own generator (sampling only), so its output does not depend
            on the other requests of the batch. It does depend on the drafts: verification draws
            one random number per tried draft node, so the same seed repeats its output only
            from the same suffix-cache state (a cache that learned from earlier responses drafts
            differently). Every output follows the model's distribution either way.
        stop_token_ids: tokens that end the request (kept in the output); None: the model's
            ``eos_token_id``.
        stop: strings that end the request (needs the engine's tokenizer; None: none). They
            are checked as plain decoding meets them, token by token: the output ends with the
            first token whose text holds one, and the text stops before the earliest of them,
            however many tokens a speculative step accepted.
        slo: latency targets (see :class:`SLO`); None: best effort.
        priority: larger is more important (admission and preemption).
        max_time: seconds of the engine's clock after :meth:`Engine.add_request` (queueing
            included) at which the request ends, at the first step boundary after it, with
            ``finish_reason`` ``"time"``: its output is then a prefix of its full output, its KV
            is freed and, as ``suffixspec.generate`` does with ``max_time``, that partial
            response feeds the suffix cache. None: no deadline. ``Engine.generate(max_time=)``
            sets the same deadline for a whole call.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_token_ids: Sequence[int] | None = None
    stop: Sequence[str] = ()
    slo: SLO | None = None
    priority: int = 0
    max_time: float | None = None

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        if not isinstance(self.do_sample, bool):
            raise InvalidParameterError(f"do_sample must be a bool, got {self.do_sample!r}")
        if self.temperature is not None:
            check_real("temperature", self.temperature, minimum=0.0, open_min=True)
        if self.top_k is not None:
            check_int("top_k", self.top_k, minimum=1)
        if self.top_p is not None:
            check_real("top_p", self.top_p, minimum=0.0, maximum=1.0, open_min=True)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0, maximum=SEED_RANGE[1])
        if not self.do_sample and any(v is not None for v in (self.temperature, self.top_k, self.top_p)):
            raise InvalidParameterError("temperature, top_k and top_p need do_sample=True")
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", _token_ids("stop_token_ids", self.stop_token_ids))
        stop = () if self.stop is None else self.stop  # None: no stop strings, as OpenAI's null
        if (
            isinstance(stop, str)
            or not isinstance(stop, Sequence)
            or not all(isinstance(s, str) and s for s in stop)
        ):
            raise InvalidParameterError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.slo is not None and not isinstance(self.slo, SLO):
            raise InvalidParameterError(f"slo must be a suffixspec.SLO, got {type(self.slo).__name__}")
        check_int("priority", self.priority, minimum=-(2**31), maximum=2**31 - 1)
        if self.max_time is not None:
            check_real("max_time", self.max_time, minimum=0.0)

    def sampling_overrides(self) -> dict[str, Any]:
        """The ``model.generate`` arguments these params set (merged with the model's config)."""
        overrides: dict[str, Any] = {"do_sample": self.do_sample}
        for name in ("temperature", "top_k", "top_p"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        return overrides


@dataclass
class ServingStats:
    """One served request's counters (``RequestOutput.stats``; ``suffixspec.RequestStats`` is
    ``generate``'s per-request record); times are seconds of the engine's clock
    (``time.monotonic()`` by default)."""

    arrival_time: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None
    steps: int = 0  # steps that emitted tokens for the request
    draft_tokens: int = 0  # draft nodes verified
    accepted_tokens: int = 0  # draft nodes accepted
    preemptions: int = 0
    sit_outs: int = 0  # steps it sat out, ahead of its TPOT pace (``policy="adaserve"``)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def mean_accepted(self) -> float:
        """Accepted draft tokens per emitting step."""
        return self.accepted_tokens / self.steps if self.steps else 0.0


@dataclass
class RequestOutput:
    """One request's progress: from :meth:`Engine.step`, the tokens of that step; from
    :meth:`Engine.generate`, the whole output.

    Attributes:
        request_id: the caller's id.
        prompt_token_ids: the prompt as tokenized.
        token_ids: every token generated so far.
        new_token_ids: the tokens this step added (all of them in ``generate``'s outputs).
        text, new_text: their decoded text ("" without a tokenizer).
        finished: whether the request has ended; ``finish_reason`` says why (one of
            :data:`FINISH_REASONS`).
        stats: per-request counters.
        error: why the request failed (``finish_reason`` ``"error"``; its ``__cause__`` is the
            exception the failed stage raised), else None.
    """

    request_id: Any
    prompt_token_ids: list[int]
    token_ids: list[int]
    new_token_ids: list[int]
    text: str = ""
    new_text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    stats: ServingStats = field(default_factory=ServingStats)
    error: RequestFailedError | None = None
