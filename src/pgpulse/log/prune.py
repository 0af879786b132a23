"""Pruning the change log: by age and/or row count, never leaving a silent gap.

Why its own module: the listener and every resume read the log
(:mod:`pgpulse.log.changelog`); one process at a time deletes from it.  The
newest pruned transaction id is recorded in ``pgpulse.state`` so a client
resuming from before it gets an explicit ``reset`` instead of a gap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgpulse.log.changelog import pruned_xid

__all__ = ["PruneResult", "consumer_hold", "prune", "run_pruner"]

log = logging.getLogger("pgpulse.log.prune")


@dataclass
class PruneResult:
    deleted: int
    pruned_xid: int


async def prune(
    conn: Any,
    *,
    older_than: dt.timedelta | None = None,
    keep_rows: int | None = None,
    batch_size: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> PruneResult:
    """Delete old changes (by age and/or keeping the newest *keep_rows*).

    Records the newest pruned transaction id so a client resuming from before it
    gets an explicit ``reset`` rather than a silent gap.  Deletes in batches so
    it never holds long locks.  "Newest" is by transaction id, then log order
    (the xid index finds the cut; there is no index on id).  Age is the
    capture time; the cut by age is found on the xid index too
    (:func:`_age_boundary`), so a change is never deleted before it is
    *older_than* old, though one written late by an old transaction may wait
    for a later prune.
    """
    if older_than is None and keep_rows is None:
        raise ValueError("prune needs older_than and/or keep_rows")
    if keep_rows is not None and keep_rows < 0:
        raise ValueError(f"keep_rows must be >= 0, got {keep_rows}")
    total = 0
    cutoff_xid: str | None = None
    cutoff_id = 0
    if older_than is not None and older_than < dt.timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    too_old = dt.datetime.now(dt.UTC) - older_than if older_than is not None else None
    age_xid = None if too_old is None else await _age_boundary(conn, too_old)
    if keep_rows is not None:
        # The newest change beyond keep_rows: it and everything older go.
        cutoff = await conn.fetchrow(
            "select xid::text as xid, id from pgpulse.changes "
            "order by xid desc, id desc offset $1 limit 1",
            keep_rows,
        )
        if cutoff is not None:
            cutoff_xid, cutoff_id = cutoff["xid"], cutoff["id"]
    if age_xid is None and cutoff_xid is None:
        return PruneResult(0, await pruned_xid(conn))  # nothing old enough
    # Consumer groups keep what they have not acknowledged (up to their
    # max_lag, past which they are reset): the cuts stop at their hold.
    hold = await consumer_hold(conn)
    if hold is not None:
        age_xid = _lower(age_xid, hold)
        if cutoff_xid is not None and int(cutoff_xid) >= int(hold):
            cutoff_xid, cutoff_id = str(int(hold) - 1), 2**62
    while True:
        async with conn.transaction():
            # Both cuts are xid ranges: index scans, never the whole log.
            await conn.execute("set local enable_seqscan = off; set local jit = off")
            row = await conn.fetchrow(
                """
                with gone as (
                    delete from pgpulse.changes
                    where ctid = any(array(
                        select ctid from pgpulse.changes
                        where ($1::text is not null and xid < $1::text::xid8
                               and ts < $2)
                           or ($3::text is not null and (xid < $3::text::xid8
                               or (xid = $3::text::xid8 and id <= $4)))
                        limit $5
                    ))
                    returning xid
                )
                select count(*) as n, max(xid)::text as max_xid from gone
                """,
                age_xid,
                too_old,
                cutoff_xid,
                cutoff_id,
                batch_size,
            )
            if row["n"]:
                await conn.execute(
                    "update pgpulse.state set pruned_xid = greatest(pruned_xid, "
                    "$1::text::xid8), pruned_at = now()",
                    row["max_xid"],
                )
        total += row["n"]
        if progress is not None:
            progress(row["n"])
        if row["n"] < batch_size:
            break
    return PruneResult(total, await pruned_xid(conn))


def _lower(xid: str | None, hold: str) -> str:
    """The age cut (changes with xid below it may go), stopped at *hold*."""
    if xid is None:
        return "0"
    return xid if int(xid) <= int(hold) else hold


_LAGGING = """
select g.name, g.max_lag, min(p.hold_xid)::text as hold
from pgpulse.consumer_groups g
join pgpulse.consumer_partitions p on p.group_name = g.name
where g.max_lag is not null
group by g.name, g.max_lag
"""


async def consumer_hold(conn: Any) -> str | None:
    """The oldest xid a consumer group still needs (None: no group holds
    anything), after resetting groups that lag more than their ``max_lag``.

    A reset group starts again from now: its workers get a batch with
    ``reset`` set (the changes it missed are gone) and the log names it.
    """
    if await conn.fetchval("select to_regclass('pgpulse.consumer_groups')") is None:
        return None
    async with conn.transaction():
        await conn.execute("set local enable_seqscan = off; set local jit = off")
        for group in await conn.fetch(_LAGGING):
            oldest = await conn.fetchrow(_FIRST_FROM, group["hold"])
            if oldest is None:
                continue
            lag = await conn.fetchval(
                "select now() - $1::timestamptz > $2",
                oldest["ts"],
                group["max_lag"],
            )
            if not lag:
                continue
            now = await conn.fetchval("select pg_current_snapshot()::text")
            xmin = now.split(":", 1)[0]
            reason = (
                f"consumer group {group['name']!r} lagged more than "
                f"{group['max_lag']} (its oldest unacknowledged change is from "
                f"{oldest['ts'].isoformat()}); pruning reset it to the current "
                "position: the changes it had not acknowledged are lost to it"
            )
            log.error("%s", reason)
            await conn.execute(
                "update pgpulse.consumer_partitions set position = $2, "
                "hold_xid = $3::text::xid8 where group_name = $1",
                group["name"],
                now,
                xmin,
            )
            await conn.execute(
                "update pgpulse.consumer_groups set resets = resets + 1, "
                "reset_reason = $2, reset_at = now() where name = $1",
                group["name"],
                reason,
            )
        hold: str | None = await conn.fetchval(
            "select min(hold_xid)::text from pgpulse.consumer_partitions"
        )
    return hold


_FIRST_FROM = """
select xid::text as xid, ts from pgpulse.changes
where xid >= $1::text::xid8 order by xid limit 1
"""


async def _age_boundary(conn: Any, too_old: dt.datetime) -> str | None:
    """The xid from which changes are no longer older than *too_old*, or
    ``None`` when the oldest change is not.

    Found by bisection over the xid index: the log has no index on capture
    time (every captured row paid for one; pruning runs once a minute).
    Capture time grows with xid, except for changes written late by a
    transaction that started early: the delete also checks the time, so such
    a change is kept, and a change after the boundary that is already old
    waits for a later prune."""
    async with conn.transaction(readonly=True):
        await conn.execute("set local enable_seqscan = off; set local jit = off")
        first = await conn.fetchrow(_FIRST_FROM, "0")
        if first is None or first["ts"] >= too_old:
            return None
        # The first change at or after `low` may be old; the first at or
        # after `high` is not (or there is none).
        low = int(first["xid"]) + 1
        last = await conn.fetchval("select max(xid)::text from pgpulse.changes")
        high = int(last) + 1
        while low < high:
            middle = (low + high) // 2
            row = await conn.fetchrow(_FIRST_FROM, str(middle))
            if row is None or row["ts"] >= too_old:
                high = middle
            else:
                low = int(row["xid"]) + 1
        return str(low)


#: Only one process prunes at a time (an advisory lock).
_PRUNE_LOCK = 0x7067_7072_756E


async def run_pruner(pool: Any, settings: Any, changes: Callable[[], int]) -> None:
    """A gateway's pruning loop: every ``prune_interval``, if *changes* (the
    changes routed so far) moved, prune under the advisory lock."""
    seen = -1
    while True:
        # Without new changes the log does not grow: an idle gateway sends
        # nothing but the listener's keepalive, pruning included.
        if changes() == seen:
            await asyncio.sleep(settings.prune_interval)
            continue
        seen = changes()
        try:
            async with pool.acquire() as conn:
                got = await conn.fetchval(
                    "select pg_try_advisory_lock($1)", _PRUNE_LOCK
                )
                if got:
                    try:
                        result = await prune(
                            conn,
                            older_than=dt.timedelta(seconds=settings.retention_seconds)
                            if settings.retention_seconds
                            else None,
                            keep_rows=settings.retention_rows,
                        )
                        if result.deleted:
                            log.info("pruned %d old changes", result.deleted)
                    finally:
                        await conn.execute("select pg_advisory_unlock($1)", _PRUNE_LOCK)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("pruning skipped: %s", exc)
        await asyncio.sleep(settings.prune_interval)
