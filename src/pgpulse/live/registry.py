"""Every live query of one gateway process, woken by the bus's batches.

Why one registry: clients asking the same query (same normalized request,
same policy context) join one :class:`~pgpulse.live.shared.SharedQuery`; a
batch of changes marks dirty only the queries that read a changed table and
that the change can affect, so a refresh is per batch per distinct query,
never per client.  A query nobody listens to is kept a little while, without
being read: a client that reconnects meanwhile gets one read's difference as a
patch set (resuming its patches), and after the linger time it is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pgpulse.live.shared import SharedQuery
from pgpulse.log.change import Change
from pgpulse.routing.outbox import Outbox

__all__ = ["LiveQueries"]

log = logging.getLogger("pgpulse.live")

#: Seconds a query without clients is kept for reconnecting clients.
LINGER = 30.0

Affects = Callable[[Change], bool]


class LiveQueries:
    """The live queries of one process."""

    def __init__(self, linger: float = LINGER) -> None:
        self.linger = linger
        self.queries: dict[str, SharedQuery] = {}
        self._affects: dict[str, Affects | None] = {}
        """Per query, a cheap test of whether a change can affect it (None:
        any change to its tables can)."""
        self._by_table: dict[str, set[SharedQuery]] = {}
        self._lock = asyncio.Lock()
        self.skipped = 0
        """Changes to a query's tables dropped without a database round trip."""
        self._past_refreshes = 0
        """Refreshes of queries dropped since."""

    # -- the bus's side ------------------------------------------------------------

    def observe(self, changes: Sequence[Change]) -> None:
        """Called with each dispatched batch: mark the affected queries."""
        if not self._by_table:
            return
        for change in changes:
            queries = self._by_table.get(change.table)
            if not queries:
                continue
            for query in queries:
                if query._dirty or query.stale:
                    continue
                if query.idle_since is not None:
                    # Nobody listens: remember to read it again when a
                    # client comes back, instead of reading it now.
                    query.stale = True
                    continue
                affects = self._affects.get(query.id)
                if affects is not None and change.op != "TRUNCATE":
                    try:
                        if not affects(change):
                            self.skipped += 1
                            continue
                    except Exception:
                        pass
                query.mark_dirty()

    # -- clients' side -------------------------------------------------------------

    async def join(
        self,
        query_id: str,
        create: Callable[[], Awaitable[tuple[SharedQuery, Affects | None]]],
        outbox: Outbox,
        transport: str = "sse",
    ) -> SharedQuery:
        """The shared query *query_id* (created and read first if new), with
        *outbox* among its clients."""
        async with self._lock:
            query = self.queries.get(query_id)
            if query is not None and query.failed is not None:
                await self._drop(query)
                query = None
            if query is None:
                query, affects = await create()
                self.queries[query_id] = query
                self._affects[query_id] = affects
                for table in query.tables:
                    self._by_table.setdefault(table, set()).add(query)
                # Observing before the first read: see the module docstring
                # of pgpulse.live.shared ("Stitching").
                query.mark_dirty()
            query.idle_since = None
            if query.stale:
                # Changes came while nobody listened: read it again (one
                # patch set, which resuming clients get) before joining.
                query.stale = False
                query.mark_dirty()
        await query.settled()
        query.outboxes[outbox] = transport
        # The last other client may have left while this one waited: the
        # query looked idle, and changes meanwhile were only marked stale.
        query.idle_since = None
        if query.stale:
            query.stale = False
            query.mark_dirty()  # its patch set follows this client's opening
        return query

    def leave(self, query: SharedQuery, outbox: Outbox) -> None:
        query.outboxes.pop(outbox, None)
        if not query.outboxes:
            query.idle_since = time.monotonic()

    async def sweep(self) -> None:
        """Drop queries without clients for longer than the linger time."""
        now = time.monotonic()
        for query in list(self.queries.values()):
            idle = query.idle_since
            gone = query.failed is not None and not query.outboxes
            if gone or (idle is not None and now - idle >= self.linger):
                await self._drop(query)

    async def _drop(self, query: SharedQuery) -> None:
        self._past_refreshes += query.refreshes
        query.refreshes = 0
        if self.queries.get(query.id) is query:
            del self.queries[query.id]
            self._affects.pop(query.id, None)
        for table in query.tables:
            queries = self._by_table.get(table)
            if queries is not None:
                queries.discard(query)
                if not queries:
                    del self._by_table[table]
        await query.close()

    def on_catalog(self) -> None:
        """The catalog was read again (a migration): every query reads again;
        one whose rows changed shape sends its clients a new snapshot."""
        for query in self.queries.values():
            if query.idle_since is not None:
                query.stale = True
            elif query.version:
                query.mark_dirty()

    async def upkeep(self, interval: float) -> None:
        """Keep live streams open through proxies (a comment line, as on
        /v1/events) and drop queries nobody has listened to for a while."""
        ping = b": ping\n\n"
        while True:
            await asyncio.sleep(interval)
            await self.sweep()
            for query in list(self.queries.values()):
                for outbox, transport in list(query.outboxes.items()):
                    if transport == "sse":
                        outbox.put(ping)

    def close_streams(self, reason: str) -> None:
        for query in list(self.queries.values()):
            for outbox in list(query.outboxes):
                outbox.close(reason)

    async def close(self) -> None:
        for query in list(self.queries.values()):
            query.fail("the server is shutting down")
            await self._drop(query)

    def stats(self) -> dict[str, Any]:
        return {
            "queries": len(self.queries),
            "clients": sum(len(q.outboxes) for q in self.queries.values()),
            "refreshes": self._past_refreshes
            + sum(q.refreshes for q in self.queries.values()),
            "skipped": self.skipped,
        }
