"""uvicorn's server with suffixspec's shutdown: stop accepting, let running requests finish for
up to a timeout, then abort them so that each response still ends properly (``finish_reason``
``"abort"``) instead of a connection cut by uvicorn's own timeout."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from suffixspec.engine.async_engine import AsyncEngine

__all__ = ["GracefulServer"]

logger = logging.getLogger("suffixspec.server")


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: AsyncEngine, shutdown_timeout: float):
        super().__init__(config)
        self.engine = engine
        self.shutdown_timeout = shutdown_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn stops listening, then waits for open responses: ours end once aborted.
        aborter = asyncio.create_task(self._abort_after(self.shutdown_timeout))
        try:
            await super().shutdown(sockets)
        finally:
            aborter.cancel()

    async def _abort_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        logger.warning("shutdown: requests still running after %.1f s are aborted", seconds)
        await self.engine.abort_all()
