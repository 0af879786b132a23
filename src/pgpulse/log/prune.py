"""Pruning the change log: by age and/or row count, never leaving a silent gap.

Why its own module: the listener and every resume read the log
(:mod:`pgpulse.log.changelog`); one process at a time deletes from it.  The
newest pruned transaction id is recorded in ``pgpulse.state`` so a client
resuming from before it gets an explicit ``reset`` instead of a gap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgpulse.log.changelog import pruned_xid

__all__ = ["PruneResult", "prune"]


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
