"""Dead letters: changes a sink gave up on, kept until someone retries them.

Why in the database: giving up must not lose a change either.  A sink (or a
handler calling :meth:`Batch.reject`) moves the changes here with the reason
and moves on; ``pgpulse consumers retry GROUP`` marks them, and the group's
workers claim them (a lease each, like partitions) and deliver them again as
a batch whose acknowledgement deletes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgpulse.log.change import Change

__all__ = ["DeadLetter", "claim_retries", "list_dead_letters", "request_retry"]

_CLAIM = """
with claimed as (
    select id from pgpulse.dead_letters
    where group_name = $1 and retry_requested
      and (claimed_by is null or claimed_until < now())
    order by id limit $3 for update skip locked
)
update pgpulse.dead_letters d
set claimed_by = $2, claimed_until = now() + $4::interval
from claimed where d.id = claimed.id
returning d.id, d.change_id, d.event_id, d.tbl, d.op, d.pk::text as pk,
          d."row"::text as row, d.old::text as old, to_json(d.ts)::text as ts
"""


async def claim_retries(
    conn: Any,
    group: str,
    worker: str,
    limit: int,
    lease: dt.timedelta,
    name_of: Callable[[str], str],
) -> tuple[list[int], list[Change]]:
    """Claim up to *limit* dead letters marked for retry: (their ids, the
    changes, in the order they were logged)."""
    rows = sorted(
        await conn.fetch(_CLAIM, group, worker, limit, lease), key=lambda r: r["id"]
    )
    changes = [
        Change(
            id=r["change_id"],
            xid=0,
            table=r["tbl"],
            name=name_of(r["tbl"]),
            op=r["op"],
            pk=r["pk"] or "{}",
            row=r["row"],
            old=r["old"],
            ts=r["ts"] or "",
            event_id=r["event_id"],
        )
        for r in rows
    ]
    return [r["id"] for r in rows], changes


async def request_retry(conn: Any, group: str) -> int:
    """Mark every dead letter of *group* for delivery again; returns how many."""
    done = await conn.execute(
        "update pgpulse.dead_letters set retry_requested = true, claimed_by = null, "
        "claimed_until = null where group_name = $1 and not retry_requested",
        group,
    )
    return int(done.split()[-1])


@dataclass
class DeadLetter:
    id: int
    change_id: int
    table: str
    op: str
    error: str
    attempts: int
    failed_at: dt.datetime
    retry_requested: bool


async def list_dead_letters(
    conn: Any, group: str, limit: int = 100
) -> list[DeadLetter]:
    rows = await conn.fetch(
        "select id, change_id, tbl, op, error, attempts, failed_at, retry_requested "
        "from pgpulse.dead_letters where group_name = $1 order by id limit $2",
        group,
        limit,
    )
    return [
        DeadLetter(
            r["id"],
            r["change_id"],
            r["tbl"],
            r["op"],
            r["error"],
            r["attempts"],
            r["failed_at"],
            r["retry_requested"],
        )
        for r in rows
    ]
