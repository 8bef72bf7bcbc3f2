"""``suffixspec.AsyncEngine``: an ``async for`` stream per request over one :class:`Engine`.

One background task steps the engine (in a worker thread, so the event loop stays responsive)
while requests are unfinished and routes each step's outputs to their streams. Adding and
aborting requests take the same lock as a step, so they land between steps. A stream closed
before its request finished (a client that went away) aborts the request and frees its KV.
A request that a failed step stage ends (:meth:`Engine.step` says which) fails only its own
stream, which raises the output's :class:`~suffixspec.errors.RequestFailedError` (the stage's
exception chained; the engine logged it); the other requests go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, TypeVar

from suffixspec.engine.engine import Engine
from suffixspec.engine.params import RequestOutput, RequestParams
from suffixspec.errors import InvalidParameterError, QueueFullError, RequestFailedError

__all__ = ["AsyncEngine", "RequestStream"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncEngine:
    """Wraps an :class:`Engine` (or builds one from ``Engine``'s arguments).

    Attributes:
        max_waiting: the most requests left waiting for admission; one more raises
            :class:`QueueFullError` (None: no limit).
        on_step: called between steps with each step's outputs and its duration in seconds.
    """

    def __init__(self, model_or_engine: Any, *args: Any, **kwargs: Any):
        if isinstance(model_or_engine, Engine):
            if args or kwargs:
                raise InvalidParameterError("pass either an Engine or the arguments to build one")
            self.engine = model_or_engine
        else:
            self.engine = Engine(model_or_engine, *args, **kwargs)
        self._lock = asyncio.Lock()
        self._streams: dict[Hashable, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._task: asyncio.Task[None] | None = None
        self.max_waiting: int | None = None
        self.on_step: Callable[[list[RequestOutput], float], None] | None = None

    async def generate(
        self, request_id: Hashable, prompt: Any, params: RequestParams | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Adds the request and yields its output after every step that advanced it, the last
        one ``finished``. Bad input raises the engine's typed errors before anything runs."""
        stream = await self.add_request(request_id, prompt, params)
        try:
            async for out in stream:
                yield out
        finally:
            await stream.aclose()

    async def add_request(
        self, request_id: Hashable, prompt: Any, params: RequestParams | None = None
    ) -> RequestStream:
        """Adds the request now (bad input, or a full queue, raises here) and returns its stream,
        to iterate to the end or close (``aclose``: the request is aborted)."""
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        async with self._lock:
            waiting = len(self.engine.scheduler.waiting)
            if self.max_waiting is not None and waiting >= self.max_waiting:
                raise QueueFullError(f"{waiting} requests are already waiting (limit {self.max_waiting})")
            self.engine.add_request(request_id, prompt, params)
            self._streams[request_id] = queue
        self._start()
        return RequestStream(self, request_id, queue)

    async def abort(self, request_id: Hashable) -> None:
        """Ends the request if it is still running (no error when it already ended); its stream
        gets a last output with ``finish_reason`` ``"abort"``."""
        async with self._lock:
            self._abort(request_id)

    async def abort_all(self) -> None:
        """Aborts every request still queued or running (a server's shutdown timeout)."""
        async with self._lock:
            for request_id in list(self._streams):
                self._abort(request_id)

    def _abort(self, request_id: Hashable) -> None:
        if request_id in self.engine:
            out = self.engine.abort(request_id)
            stream = self._streams.pop(request_id, None)
            if stream is not None:
                stream.put_nowait(out)

    async def inspect(self, fn: Callable[[Engine], T]) -> T:
        """``fn(engine)`` between steps (the engine is not safe to read while a step runs)."""
        async with self._lock:
            return fn(self.engine)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            async with self._lock:
                if not self.engine.has_unfinished():
                    return
                start = time.monotonic()
                try:
                    outputs = await asyncio.to_thread(self.engine.step)
                except Exception as exc:  # step() contains its stages' failures: a bug of its own
                    # Every stream fails; the loop stops until the next request starts it, whose
                    # step then finds the scheduler's step unfinished and ends what is left.
                    logger.exception("the engine failed outside its stages; every stream ends")
                    for request_id, queue in self._streams.items():
                        queue.put_nowait(RequestFailedError(request_id, "the engine", exc))
                    self._streams.clear()
                    return
                if self.on_step is not None:
                    self.on_step(outputs, time.monotonic() - start)
            for out in outputs:  # an ended request's stream leaves (its queue holds the rest)
                stream = (
                    self._streams.pop(out.request_id, None)
                    if out.finished
                    else self._streams.get(out.request_id)
                )
                if stream is not None:
                    stream.put_nowait(out if out.error is None else out.error)
            await asyncio.sleep(0)  # let streams and new requests in between steps


class RequestStream:
    """One request's outputs, an async iterator that ends after the ``finished`` one. Closing
    it before then (``aclose``, also when never iterated) aborts the request."""

    def __init__(
        self, owner: AsyncEngine, request_id: Hashable, queue: asyncio.Queue[RequestOutput | BaseException]
    ):
        self.request_id = request_id
        self._owner, self._queue, self._done = owner, queue, False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):  # its step failed: the request has ended
            self._end()
            raise item
        if item.finished:
            self._end()
        return item

    def _end(self) -> None:
        self._done = True
        self._owner._streams.pop(self.request_id, None)

    async def aclose(self) -> None:
        if not self._done:
            self._end()
            # Shielded: a cancelled consumer (a client that went away) must still free the
            # request's blocks, even when the abort waits for a running step to end.
            await asyncio.shield(self._owner.abort(self.request_id))
