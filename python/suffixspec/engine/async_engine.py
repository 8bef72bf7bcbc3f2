"""``suffixspec.AsyncEngine``: an ``async for`` stream per request over one :class:`Engine`.

One background task steps the engine (in a worker thread, so the event loop stays responsive)
while requests are unfinished and routes each step's outputs to their streams. Adding and
aborting requests take the same lock as a step, so they land between steps. A stream closed
before its request finished (a client that went away) aborts the request and frees its KV.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from typing import Any

from suffixspec.engine.engine import Engine
from suffixspec.engine.params import RequestOutput, RequestParams
from suffixspec.errors import InvalidParameterError

__all__ = ["AsyncEngine"]


class AsyncEngine:
    """Wraps an :class:`Engine` (or builds one from ``Engine``'s arguments)."""

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

    async def generate(
        self, request_id: Hashable, prompt: Any, params: RequestParams | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Adds the request and yields its output after every step that advanced it, the last
        one ``finished``. Bad input raises the engine's typed errors before anything runs."""
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        async with self._lock:
            self.engine.add_request(request_id, prompt, params)
            self._streams[request_id] = queue
        self._start()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                await self.abort(request_id)

    async def abort(self, request_id: Hashable) -> None:
        """Ends the request if it is still running (no error when it already ended)."""
        async with self._lock:
            if request_id in self.engine:
                self.engine.abort(request_id)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            async with self._lock:
                if not self.engine.has_unfinished():
                    return
                try:
                    outputs = await asyncio.to_thread(self.engine.step)
                except Exception as exc:  # every waiting stream learns why the engine stopped
                    for queue in self._streams.values():
                        queue.put_nowait(exc)
                    raise
            for out in outputs:
                stream = self._streams.get(out.request_id)
                if stream is not None:
                    stream.put_nowait(out)
            await asyncio.sleep(0)  # let streams and new requests in between steps
