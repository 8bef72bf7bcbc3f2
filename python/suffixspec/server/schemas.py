"""The OpenAI request bodies the server accepts, and their mapping onto :class:`RequestParams`.

Fields follow OpenAI's API; ``top_k``, ``priority`` and ``slo`` are extra body fields (the
``extra_body`` of the official client). Fields that suffixspec does not implement are accepted only
at their neutral value, so that a client never silently gets something other than it asked for.
Validation errors are ``InvalidParameterError`` (the server answers 400).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from suffixspec.config import SEED_RANGE
from suffixspec.engine.params import SLO, RequestParams
from suffixspec.errors import InvalidParameterError

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "SLOField",
    "StreamOptions",
    "to_request_params",
]

#: OpenAI's default ``max_tokens`` of the (legacy) completions endpoint.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class SLOField(BaseModel):
    """Per-request latency targets in milliseconds (AdaServe speculates for ``tpot_ms``)."""

    model_config = ConfigDict(extra="forbid")
    tpot_ms: float | None = Field(default=None, gt=0)
    ttft_ms: float | None = Field(default=None, gt=0)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # extra: -1 and 0 disable it, as in vLLM
    seed: int | None = Field(default=None, ge=0, le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    priority: int = 0  # extra: larger is more important
    slo: SLOField | None = None  # extra
    # Not implemented: accepted only at their neutral value.
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    logit_bias: dict[str, float] | None = None

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            raise InvalidParameterError("n: only n=1 is supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0:
                raise InvalidParameterError(f"{name} is not supported")
        if self.logprobs not in (None, False):
            raise InvalidParameterError("logprobs are not supported")
        if self.logit_bias:
            raise InvalidParameterError("logit_bias is not supported")


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions``: one text prompt or one list of token ids."""

    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def single_prompt(self) -> str | list[int]:
        """The prompt; batches of prompts are refused (one choice per response)."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) != 1:
                raise InvalidParameterError("prompt: one prompt per request (a batch is not supported)")
            prompt = prompt[0]
        if self.echo:
            raise InvalidParameterError("echo is not supported")
        if self.best_of not in (None, 1):
            raise InvalidParameterError("best_of is not supported")
        if self.suffix:
            raise InvalidParameterError("suffix is not supported")
        return prompt  # type: ignore[return-value]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ...: passed to the template

    role: str
    content: str | list[dict[str, Any]] | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message as a chat template reads it (text parts joined)."""
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            texts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidParameterError("messages: only text content parts are supported")
                texts.append(part["text"])
            message["content"] = "".join(texts)
        return message


class ChatCompletionRequest(_SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.tools:
            raise InvalidParameterError("tools are not supported")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise InvalidParameterError("response_format: only text is supported")


def to_request_params(request: _SamplingRequest, *, default_max_tokens: int) -> RequestParams:
    """The engine's settings for ``request``.

    ``temperature`` 0 is greedy decoding (``top_p``/``top_k`` then do not apply); any other
    temperature, or none (OpenAI's default is to sample), samples with the model's generation
    config filling what the request leaves out. ``default_max_tokens`` applies when the request
    sets no limit. Raises ``InvalidParameterError``."""
    request.refuse_unsupported()
    max_tokens = request.max_tokens
    if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens is not None:
        max_tokens = request.max_completion_tokens
    greedy = request.temperature == 0
    top_k = None if request.top_k is None or request.top_k <= 0 else request.top_k
    top_p = None if request.top_p is None or request.top_p == 1 else request.top_p
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if any(not s for s in stop):
        raise InvalidParameterError("stop: empty strings are not allowed")
    slo = None
    if request.slo is not None and (request.slo.tpot_ms is not None or request.slo.ttft_ms is not None):
        slo = SLO(tpot_ms=request.slo.tpot_ms, ttft_ms=request.slo.ttft_ms)
    return RequestParams(
        max_new_tokens=default_max_tokens if max_tokens is None else max_tokens,
        do_sample=not greedy,
        temperature=None if greedy else request.temperature,
        top_k=None if greedy else top_k,
        top_p=None if greedy else top_p,
        seed=request.seed,
        stop=stop,
        slo=slo,
        priority=request.priority,
    )
