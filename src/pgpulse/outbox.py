"""A bounded per-client send buffer.

Why: one stalled client must never slow the others or grow memory without bound
(DESIGN invariant 6).  The bus only ever appends bytes here (never awaits); the
client's own writer drains it.  When a client falls more than ``limit`` bytes
behind, the outbox closes with a reason and the transport disconnects it; the
client then reconnects with its last event id and catches up from the durable
log, so being cut off loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Outbox"]

DEFAULT_LIMIT = 16 * 1024 * 1024


class Outbox:
    __slots__ = (
        "_chunks",
        "_drain_waiter",
        "_waiter",
        "closed",
        "limit",
        "on_close",
        "size",
    )

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.size = 0
        self.limit = limit
        self.closed: str | None = None
        """The reason the outbox was closed, or ``None`` while open."""
        self.on_close = on_close

    def put(self, data: bytes) -> bool:
        """Queue *data*; returns False (and closes) when over the limit."""
        if self.closed is not None:
            return False
        # A single event larger than the limit still goes through when the
        # client is caught up: no size cliff for big rows.
        if self._chunks and self.size + len(data) > self.limit:
            self.close(
                f"client fell {self.size + len(data)} bytes behind "
                f"(limit {self.limit}); reconnect with Last-Event-ID to catch up"
            )
            return False
        self._chunks.append(data)
        self.size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self._chunks.clear()
        self.size = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake_drain()
        if self.on_close is not None:
            self.on_close(reason)

    async def get(self) -> list[bytes]:
        """Wait for data; returns everything queued (empty list once closed)."""
        while not self._chunks and self.closed is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks, self._chunks = self._chunks, []
        self.size = 0
        self._wake_drain()
        return chunks

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self, below: int) -> None:
        """Wait until less than *below* bytes are queued (producer backpressure)."""
        while self.size >= below and self.closed is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
