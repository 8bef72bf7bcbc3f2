"""The OpenAI-compatible FastAPI app over one :class:`suffixspec.AsyncEngine`.

``/v1/completions`` and ``/v1/chat/completions`` (``stream: true`` as server-sent events in
OpenAI's chunk format, ending with ``data: [DONE]``), ``/v1/models``, ``/health`` and
``/metrics``. Errors use OpenAI's error body; bad input is a 4xx, never a 500. A request that
fails inside the engine (its stream raises :class:`~suffixspec.errors.RequestFailedError`; the
engine logged it) gets a 500, or, streamed, an error event that ends its stream; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from suffixspec.engine.params import RequestOutput, RequestParams
from suffixspec.errors import InvalidParameterError, QueueFullError, SuffixSpecError
from suffixspec.server.metrics import CONTENT_TYPE, ServerMetrics
from suffixspec.server.schemas import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
    to_request_params,
)

if TYPE_CHECKING:  # the engine (torch) loads only once a model is served
    from suffixspec.engine.async_engine import AsyncEngine, RequestStream

__all__ = ["APIError", "build_app"]

logger = logging.getLogger("suffixspec.server")


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _api_error(exc: Exception) -> APIError:
    """The answer to an exception raised while adding or running a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return APIError(429, f"the server is busy: {exc}", "rate_limit_error", code="queue_full")
    if isinstance(exc, SuffixSpecError) and isinstance(exc, ValueError | TypeError):
        return APIError(400, str(exc))
    return APIError(
        500, f"the engine failed while running the request: {type(exc).__name__}: {exc}", "internal_error"
    )


@dataclass
class _Served:
    """What the handlers share."""

    engine: AsyncEngine
    model_name: str
    context_len: int
    metrics: ServerMetrics
    created: int


def _context_len(engine: AsyncEngine) -> int:
    """The most tokens (prompt + output) one request may hold: the model's positions, and the pool."""
    inner = engine.engine
    pool = inner.scheduler.num_blocks * inner.scheduler.block_size
    positions = inner.info.max_positions
    return pool if positions is None else min(pool, positions)


def build_app(engine: AsyncEngine, *, model_name: str, max_queued: int | None = None) -> FastAPI:
    """The app serving ``engine`` as ``model_name``; more than ``max_queued`` requests waiting
    for admission are answered 429."""
    if engine.engine.tokenizer is None:
        raise InvalidParameterError("the server needs the engine's tokenizer")
    served = _Served(engine, model_name, _context_len(engine), ServerMetrics(), int(time.time()))
    engine.max_waiting = max_queued
    engine.on_step = served.metrics.observe_step

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.abort_all()  # whatever is left once the server stops

    app = FastAPI(title="suffixspec", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.served = served

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        served.metrics.observe_refused("invalid")
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                detail = err.get("ctx", {}).get("error", "")
                return APIError(400, f"malformed JSON body: {err.get('msg')} {detail}".strip()).response()
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return APIError(400, "invalid request body: " + "; ".join(problems)).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": model_name,
            "object": "model",
            "created": served.created,
            "owned_by": "suffixspec",
            "max_model_len": served.context_len,
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    async def metrics() -> Response:
        await engine.inspect(served.metrics.set_engine_state)
        return Response(served.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: Request) -> Response:
        try:
            _check_model(served, body.model)
            prompt = body.single_prompt()
            if isinstance(prompt, str):  # between steps: the step thread decodes with it
                ids = await engine.inspect(lambda e: list(e.tokenizer(prompt)["input_ids"]))
            else:
                ids = list(prompt)
            _check_prompt_fits(served, ids, param="prompt")
            params = to_request_params(body, default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS)
            return await _serve(served, http, body, ids, params, chat=False)
        except Exception as exc:
            raise _refused(served, exc) from exc

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http: Request) -> Response:
        try:
            _check_model(served, body.model)
            ids = await engine.inspect(lambda e: _chat_prompt(e.tokenizer, body))
            _check_prompt_fits(served, ids, param="messages")
            params = to_request_params(body, default_max_tokens=served.context_len - len(ids))
            return await _serve(served, http, body, ids, params, chat=True)
        except Exception as exc:
            raise _refused(served, exc) from exc

    return app


def _refused(served: _Served, exc: Exception) -> APIError:
    """The answer to a request that failed before or while running (an engine failure was
    already counted by :func:`_followed`)."""
    error = _api_error(exc)
    if error.status >= 500:
        logger.error("request failed: %s", error.message)
    else:
        served.metrics.observe_refused("queue_full" if error.status == 429 else "invalid")
    return error


def _check_model(served: _Served, name: str) -> None:
    if name != served.model_name:
        raise APIError(
            404,
            f"model {name!r} does not exist; this server serves {served.model_name!r}",
            param="model",
            code="model_not_found",
        )


def _check_prompt_fits(served: _Served, ids: list[int], param: str) -> None:
    if len(ids) >= served.context_len:
        raise APIError(
            400,
            f"the prompt is {len(ids)} tokens; the model's context is {served.context_len} "
            "tokens (prompt + output)",
            param=param,
        )


def _chat_prompt(tokenizer: Any, body: ChatCompletionRequest) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(
            400, "this model's tokenizer has no chat template: use /v1/completions with a text prompt"
        )
    messages = [m.template_dict() for m in body.messages]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # the template rejects the conversation (roles, order, ...)
        raise APIError(400, f"the chat template rejected the messages: {exc}", param="messages") from exc
    # The template writes the special tokens it wants (BOS, ...): none are added again.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


#: How often a non-streaming request checks that its client is still there.
_DISCONNECT_POLL_S = 0.25


async def _serve(
    served: _Served, http: Request, body: Any, ids: list[int], params: RequestParams, *, chat: bool
) -> Response:
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    outputs = _followed(served, await served.engine.add_request(request_id, ids, params), params)
    if body.stream:  # a client that leaves ends the response: its stream closes, the request aborts
        usage = bool(body.stream_options is not None and body.stream_options.include_usage)
        events = _events(served, request_id, outputs, chat=chat, include_usage=usage)
        return StreamingResponse(events, media_type="text/event-stream")

    async def last_output() -> RequestOutput | None:
        last = None
        async for out in outputs:
            last = out
        return last

    # Nothing is sent before the end: watch the connection, so that a client that leaves
    # aborts its request instead of leaving it to run.
    task = asyncio.ensure_future(last_output())
    while not task.done():
        await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
        if not task.done() and await http.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            logger.info("request %s: the client went away; aborted", request_id)
            return Response(status_code=499)
    try:
        last = task.result()
    except Exception as exc:
        raise _api_error(exc) from exc
    assert last is not None
    return JSONResponse(_response(served, request_id, last, chat=chat))


async def _followed(
    served: _Served, stream: RequestStream, params: RequestParams
) -> AsyncGenerator[RequestOutput, None]:
    """``stream``, recording in the metrics how the request ended (a stream left before its end:
    ``abort``; the engine failed: ``error``)."""
    last: RequestOutput | None = None
    outcome = "abort"
    try:
        async for out in stream:
            last = out
            yield out
    except Exception:
        outcome = "error"
        raise
    finally:
        if last is not None and last.finished:
            served.metrics.observe_finished(last, params.slo)
        else:
            served.metrics.observe_refused(outcome)
        await stream.aclose()


def _usage(out: RequestOutput) -> dict[str, int]:
    prompt, completion = len(out.prompt_token_ids), len(out.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _response(served: _Served, request_id: str, out: RequestOutput, *, chat: bool) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": out.text},
            "logprobs": None,
            "finish_reason": out.finish_reason,
        }
    else:
        choice = {"index": 0, "text": out.text, "logprobs": None, "finish_reason": out.finish_reason}
    return {
        "id": request_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": served.model_name,
        "choices": [choice],
        "usage": _usage(out),
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _events(
    served: _Served,
    request_id: str,
    outputs: AsyncIterator[RequestOutput],
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """OpenAI's stream: one chunk per step that added text, the last with its finish reason."""
    created = int(time.time())
    head: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": served.model_name,
    }

    def chunk(text: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        body = {**head, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return body

    if chat:
        yield _sse(chunk(None, None, first=True))
    try:
        async for out in outputs:
            if out.new_text or out.finished:
                yield _sse(chunk(out.new_text, out.finish_reason if out.finished else None))
            if out.finished and include_usage:
                yield _sse({**head, "choices": [], "usage": _usage(out)})
    except Exception as exc:  # the engine failed mid-stream: say so, then end the stream
        logger.warning("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
        yield _sse(_api_error(exc).body())
    yield "data: [DONE]\n\n"
