"""Reading what a resuming client missed, from the log, into its outbox.

Why apart from the gateway: this is the half of "nothing lost, nothing twice"
that reads (the other half, holding live events back and releasing those the
read did not cover, is :meth:`~pgpulse.gateway.Gateway.attach` with the bus).
It reads in one snapshot (:func:`pgpulse.log.changelog.read_since`), shows
each change as the client may see it (its filters, in Python or by
PostgreSQL, its policy's columns), and applies backpressure: it waits while
the client's outbox is half full.  A log pruned past the client's position,
or a position from another database's future, gets an explicit ``reset``.
"""

from __future__ import annotations

import logging
from typing import Any

from pgpulse.config import Settings
from pgpulse.log import changelog
from pgpulse.log.changelog import NameOf
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.routing import db_filters
from pgpulse.routing.bus import Bus
from pgpulse.routing.subscriber import Subscriber
from pgpulse.routing.wire import control_event

__all__ = ["catch_up"]

log = logging.getLogger("pgpulse.gateway")


async def catch_up(
    pool: Any,
    bus: Bus,
    subscriber: Subscriber,
    tables: list[str],
    start: Cursor,
    name_of: NameOf,
    settings: Settings,
) -> Snapshot:
    """Queue for *subscriber* every change of *tables* after *start*; returns
    the snapshot the read reached (every change visible there was read)."""
    half = max(1, settings.outbox_limit // 2)
    async with pool.acquire() as conn:
        now = await changelog.current_position(conn)
        pruned = await changelog.pruned_xid(conn)
        reason = None
        if start.snap.xmax > now.xmax:
            reason = "the event id is from the future of this database"
        elif pruned >= start.prev.xmin:
            reason = "the change log was pruned past the event id"
        if reason is not None:
            log.info("reset for %s: %s", subscriber.label, reason)
            subscriber.outbox.put(
                control_event(
                    subscriber.transport,
                    "reset",
                    {"reason": reason + "; refetch your data"},
                    Cursor.point(now).encode(),
                )
            )
            return now
        reached = now
        count = 0
        async for snap, changes in changelog.read_since(
            conn, start, name_of, tables, timeout=settings.query_timeout
        ):
            reached = snap
            for table, filters in bus.db_filters_for(subscriber).items():
                mine = [c for c in changes if c.table == table]
                if mine:
                    await db_filters.evaluate(
                        conn, filters[0].table, mine, filters, bus.row_security
                    )
            for change in changes:
                variant, tags = subscriber.evaluate(change, bus.errors)
                if variant is not None:
                    subscriber.outbox.put(subscriber.encode(change, variant, tags))
                    count += 1
            if subscriber.outbox.closed is not None:
                break
            await subscriber.outbox.drained(half)
        log.debug("caught up %s with %d changes", subscriber.label, count)
        return reached
