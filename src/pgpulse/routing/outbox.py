"""A bounded per-client send buffer.

Why: one stalled client must never slow the others or grow memory without bound
(DESIGN invariant 6).  The bus only ever appends bytes here (never awaits); the
client's own writer drains it.  When a client falls more than ``limit`` bytes
behind, the outbox closes with a reason and the transport disconnects it; the
client then reconnects with its last event id and catches up from the durable
log, so being cut off loses nothing.

Direct writes: a transport may set ``direct``, a function that writes queued
bytes synchronously when the socket can take them.  The bus then queues a
batch's events with :meth:`put_deferred` and calls :meth:`flush` once per
batch, so a client costs one write per batch and no task switch; only when the
socket pushes back does the client's own writer task take over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Outbox"]

DEFAULT_LIMIT = 16 * 1024 * 1024


class Outbox:
    __slots__ = (
        "_chunks",
        "_dirty",
        "_drain_waiter",
        "_waiter",
        "_woken",
        "closed",
        "direct",
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
        self.direct: Callable[[list[bytes]], bool] | None = None
        """Synchronous writer set by the transport (see the module docstring)."""
        self._dirty = False
        self._woken = False

    def put(self, data: bytes) -> bool:
        """Queue *data* and wake the writer task; returns False (and closes)
        when over the limit."""
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

    def put_deferred(self, data: bytes) -> bool:
        """Queue *data* for the next :meth:`flush` (with a ``direct`` writer;
        otherwise a plain :meth:`put`); True if this made the outbox dirty.

        The bus calls this once per delivery (changes x subscribers), hence
        the inlined checks.
        """
        if self.direct is None or self.closed is not None:
            self.put(data)
            return False
        chunks = self._chunks
        if chunks and self.size + len(data) > self.limit:
            self.put(data)  # closes with the reason
            return False
        chunks.append(data)
        self.size += len(data)
        if self._dirty:
            return False
        self._dirty = True
        return True

    @property
    def dirty(self) -> bool:
        """Deferred data is waiting for :meth:`flush`."""
        return self._dirty

    def flush(self) -> None:
        """Write deferred data now if the transport can, else wake the writer."""
        self._dirty = False
        chunks = self._chunks
        if not chunks or self.closed is not None:
            return
        direct = self.direct
        if direct is not None and direct(chunks):
            self._chunks = []
            self.size = 0
            if self._drain_waiter is not None:
                self._wake_drain()
            return
        self.wake()

    def wake(self) -> None:
        """Wake the writer task even without data (e.g. to finish a write)."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        """Wait for data; returns everything queued (empty list once closed, or
        when woken by :meth:`wake` with nothing queued)."""
        while not self._chunks and self.closed is None and not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False
        if self._dirty:
            # The writer takes deferred data too; the coming flush finds none.
            self._dirty = False
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
