"""How consumer groups are doing: lag, throughput, dead letters.

Read from the database (every worker writes its counters there), so
``pgpulse consumers`` and every gateway's ``/metrics`` show the same numbers
whichever process asks.  Lag counts the changes of the group's tables after
its oldest position (before its filter), and how old the oldest of them is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pgpulse.log.cursor import Cursor

__all__ = ["GroupStats", "group_stats"]

#: A worker seen within this many seconds counts as live.
LIVE_SECONDS = 60


@dataclass
class GroupStats:
    name: str
    tables: list[str]
    filter: str
    partitions: int
    workers: int
    delivered: int
    redelivered: int
    takeovers: int
    resets: int
    reset_reason: str | None
    dead_letters: int
    retry_pending: int
    lag_changes: int
    lag_seconds: float


_GROUPS = """
select g.name, g.tables, g.filter, g.partitions, g.takeovers, g.resets,
       g.reset_reason,
       (select count(*) from pgpulse.consumer_workers w
        where w.group_name = g.name
          and w.seen_at > now() - make_interval(secs => $1)) as workers,
       (select coalesce(sum(p.delivered), 0) from pgpulse.consumer_partitions p
        where p.group_name = g.name) as delivered,
       (select coalesce(sum(p.redelivered), 0) from pgpulse.consumer_partitions p
        where p.group_name = g.name) as redelivered,
       (select count(*) from pgpulse.dead_letters d
        where d.group_name = g.name) as dead_letters,
       (select count(*) from pgpulse.dead_letters d
        where d.group_name = g.name and d.retry_requested) as retry_pending,
       array(select distinct p.position from pgpulse.consumer_partitions p
             where p.group_name = g.name) as positions
from pgpulse.consumer_groups g
where $2::text is null or g.name = $2
order by g.name
"""

_LAG = """
select count(*) as n, min(ts) as oldest
from pgpulse.changes c
where (c.xid >= $1::text::xid8 or c.xid = any($2::text[]::xid8[]))
  and c.tbl = any($3::text[])
"""


async def group_stats(conn: Any, group: str | None = None) -> list[GroupStats]:
    """Every group (or *group*), with its lag counted now."""
    if await conn.fetchval("select to_regclass('pgpulse.consumer_groups')") is None:
        return []
    out: list[GroupStats] = []
    async with conn.transaction(readonly=True):
        await conn.execute("set local enable_seqscan = off; set local jit = off")
        now = await conn.fetchval("select now()")
        for row in await conn.fetch(_GROUPS, LIVE_SECONDS, group):
            lag_changes = 0
            oldest: dt.datetime | None = None
            for position in row["positions"]:
                # Everything not visible at the position's first snapshot: a
                # cursor inside a batch counts that batch again (an upper bound).
                xmax, xip = Cursor.decode(position).prev.unseen_params()
                lag = await conn.fetchrow(_LAG, xmax, xip, row["tables"])
                lag_changes = max(lag_changes, lag["n"])
                if lag["oldest"] is not None and (
                    oldest is None or lag["oldest"] < oldest
                ):
                    oldest = lag["oldest"]
            out.append(
                GroupStats(
                    name=row["name"],
                    tables=list(row["tables"]),
                    filter=row["filter"],
                    partitions=row["partitions"],
                    workers=row["workers"],
                    delivered=int(row["delivered"]),
                    redelivered=int(row["redelivered"]),
                    takeovers=row["takeovers"],
                    resets=row["resets"],
                    reset_reason=row["reset_reason"],
                    dead_letters=row["dead_letters"],
                    retry_pending=row["retry_pending"],
                    lag_changes=lag_changes,
                    lag_seconds=(
                        max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
                    ),
                )
            )
    return out
