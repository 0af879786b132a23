"""Reading what a resuming client missed, from the log, into its outbox.

Why apart from the gateway: this is the half of "nothing lost, nothing twice"
that reads (the other half, holding live events back and releasing those the
read did not cover, is :meth:`~pgpulse.gateway.Gateway.attach` with the bus).
It reads in one snapshot (:func:`pgpulse.log.changelog.read_since`), shows
each change as the client may see it (its filters, in Python or by
PostgreSQL, its policy's columns), and applies backpressure: it waits while
the client's outbox is half full.  A log pruned past the client's position,
or a position from another database's future, gets an explicit ``reset``.
Behind a broker the missed changes can come from the stream instead
(:mod:`pgpulse.broker.replay`): the same delivery, no log read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from pgpulse.config import Settings
from pgpulse.log import changelog
from pgpulse.log.change import Change
from pgpulse.log.changelog import NameOf
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.routing import db_filters
from pgpulse.routing.bus import Bus
from pgpulse.routing.subscriber import Subscriber
from pgpulse.routing.wire import control_event

__all__ = ["CATCH_UP_FAILED", "Replay", "abandon", "catch_up", "read_missed", "replay"]

#: Reason prefix of a stream ended because reading the missed changes failed.
CATCH_UP_FAILED = "reading the missed changes from the {source} failed"

log = logging.getLogger("pgpulse.gateway")


class Replay(Protocol):
    """The changes a client missed, from elsewhere than the log."""

    @property
    def reached(self) -> Snapshot:
        """Every change visible here is among the batches (or was seen)."""
        ...

    def batches(self) -> AsyncIterator[list[Change]]: ...


async def _deliver(
    conn: Any, bus: Bus, subscriber: Subscriber, changes: Sequence[Change]
) -> int:
    """Queue *changes* as *subscriber* may see them; returns how many."""
    for table, filters in bus.db_filters_for(subscriber).items():
        mine = [c for c in changes if c.table == table]
        if mine:
            await db_filters.evaluate(
                conn, filters[0].table, mine, filters, bus.row_security
            )
    count = 0
    for change in changes:
        variant, tags = subscriber.evaluate(change, bus.errors)
        if variant is not None:
            subscriber.outbox.put(subscriber.encode(change, variant, tags))
            count += 1
    return count


async def replay(
    pool: Any, bus: Bus, subscriber: Subscriber, source: Replay, settings: Settings
) -> Snapshot:
    """Queue for *subscriber* what *source* holds; returns its ``reached``.
    A pool connection is taken only for filters PostgreSQL evaluates."""
    half = max(1, settings.outbox_limit // 2)
    count = 0
    needs = bool(bus.db_filters_for(subscriber))
    async with pool.acquire() if needs else contextlib.nullcontext() as conn:
        async for changes in source.batches():
            count += await _deliver(conn, bus, subscriber, changes)
            if subscriber.outbox.closed is not None:
                break
            await subscriber.outbox.drained(half)
    log.debug("caught up %s with %d changes from the stream", subscriber.label, count)
    return source.reached


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
            count += await _deliver(conn, bus, subscriber, changes)
            if subscriber.outbox.closed is not None:
                break
            await subscriber.outbox.drained(half)
        log.debug("caught up %s with %d changes", subscriber.label, count)
        return reached


async def read_missed(
    pool: Any,
    bus: Bus,
    subscriber: Subscriber,
    tables: list[str],
    start: Cursor,
    name_of: NameOf,
    settings: Settings,
    source: Replay | None,
) -> Snapshot:
    """What *subscriber* missed since *start*: from *source* (the broker's
    stream) when it holds it, else from the log."""
    if source is not None:
        return await replay(pool, bus, subscriber, source, settings)
    # Each read waits at most query_timeout for a lock or a statement
    # (changelog.read_since); a large backlog may take longer in all.
    return await catch_up(pool, bus, subscriber, tables, start, name_of, settings)


def abandon(bus: Bus, subscriber: Subscriber, exc: BaseException, source: str) -> None:
    """Nothing after the gap may reach a client whose catch-up failed: its
    Last-Event-ID would move past changes it never got.  So it leaves the
    bus (the live events held for it are dropped) and its stream ends with
    the reason; it reconnects from its own last event id and reads them."""
    bus.remove(subscriber)
    subscriber.pending = None
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    reason = (
        f"{CATCH_UP_FAILED.format(source=source)} ({what}); reconnect with "
        "your last event id to read them"
    )
    log.warning("%s: %s", subscriber.label, reason)
    subscriber.outbox.close(reason)
