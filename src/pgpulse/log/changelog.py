"""Reading the durable change log (``pgpulse.changes``); pruning is :mod:`.prune`.

Why this shape: the listener and every resuming client read "what is new since
cursor C" the same way.  A read runs in one snapshot N (a single statement, its
later chunks told by xids alone, or a REPEATABLE READ transaction for a resume)
and returns the changes not yet seen at C but visible in N, in id order, which
is commit order for any one row (a second writer of a row waits for the first to
commit before logging).  The condition ``xid >= xmax or xid = any(xip)`` is "not
visible in snapshot" for committed transactions and, unlike
``pg_visible_in_snapshot``, uses the xid index; a long-open transaction therefore
costs one extra index probe, never a rescan.

Reads must never scan the whole log.  The planner has no statistics for a young
or fast-growing log (autovacuum analyzes it at most about once a minute) and
then guesses that a third of it is new: a parallel sequential scan of the whole
log on every read, which cost a busy database half its write throughput.  Every
read therefore runs with :data:`READ_SETTINGS` (the listener's connection
settings; ``SET LOCAL`` in :func:`read_since`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pgpulse.log.change import Change
from pgpulse.log.cursor import Cursor, Snapshot

__all__ = [
    "FAST_LIMIT",
    "READ_SETTINGS",
    "Batch",
    "Lane",
    "current_position",
    "read_batch",
    "read_lanes",
    "read_rest",
    "read_since",
]

#: Rows fetched by one read statement; a larger batch is read in such chunks.
FAST_LIMIT = 500

#: Planner settings for log reads: index range scans only, no parallel workers,
#: and a prepared read planned once: with custom plans (PostgreSQL's default
#: for parameters like these) every read was planned again, about three
#: quarters of the database's work for a read that finds little.
READ_SETTINGS = {
    "enable_seqscan": "off",
    "max_parallel_workers_per_gather": "0",
    "plan_cache_mode": "force_generic_plan",
    # Before PostgreSQL 18, enable_seqscan=off prices the sequential scans of
    # the one-row pgpulse.state and of pgpulse.watched at 10^10, far above
    # jit_above_cost: on a server with JIT (most distribution builds) every
    # read was compiled, ~300 ms for a read that runs in 0.2 ms.  Reads that
    # find a few changes never gain from JIT.
    "jit": "off",
}
_SET_LOCAL = "; ".join(f"set local {k} = {v}" for k, v in READ_SETTINGS.items())

# Tables that publish rows do not log their key (it is in the row): take it
# from the row, or the old row for a DELETE, by the key columns of the table
# (``_KEYS_JOIN``, joined per row and memoized per table).  One key column, the
# common case, is spliced as text around the value (``{"id": `` is built once
# per table): jsonb_build_object looked up its argument types on every row.
_KEYS_JOIN = """
left join lateral (
    select w.pk as keys, '{' || to_json(w.pk[1])::text || ': ' as key1
    from pgpulse.watched w where w.name = c.tbl limit 1
) w on true
"""
_COLUMNS = """
    c.id, c.xid::text as xid, c.tbl, c.op,
    coalesce(c.pk::text, case
        when cardinality(w.keys) = 1
        then w.key1 || coalesce((coalesce(c."row", c.old) -> w.keys[1])::text, 'null')
             || '}'
        else (select jsonb_object_agg(k, coalesce(c."row", c.old) -> k)
              from unnest(w.keys) k)::text
    end, '{}') as pk,
    c."row"::text as row, c.old::text as old, to_json(c.ts)::text as ts
"""

# The state row is a scalar subquery: joined as a table, it made the planner
# copy every change read into a Materialize node (a tenth of the read).
_FAST_SQL = f"""
select s.snap::text as snap, s.pruned_xid::text as pruned_xid, {_COLUMNS}
from (
    select pg_current_snapshot() as snap,
           (select pruned_xid from pgpulse.state) as pruned_xid
) s
left join lateral (
    select * from pgpulse.changes
    where xid >= $1::text::xid8 or xid = any($2::text[]::xid8[])
    order by id + 0
    limit $3
) c on true
{_KEYS_JOIN}
"""

# Changes unseen at P, visible in the transaction's snapshot; optionally limited
# to those also visible in S with id > after (the rest of an interrupted batch).
_SINCE_SQL = f"""
select {_COLUMNS}
from pgpulse.changes c
{_KEYS_JOIN}
where (c.xid >= $1::text::xid8 or c.xid = any($2::text[]::xid8[]))
  and ($3::text is null
       or (not (c.xid >= $3::text::xid8 or c.xid = any($4::text[]::xid8[]))
           and c.id > $5))
  and ($6::text[] is null or c.tbl = any($6::text[]))
order by c.id + 0
"""


@dataclass
class Batch:
    """Changes visible in ``snap`` but not in ``prev``, in id order."""

    prev: Snapshot
    snap: Snapshot
    changes: list[Change]
    pruned_xid: int = 0
    complete: bool = True
    """False: more changes of this batch follow (:func:`read_rest`)."""


NameOf = Callable[[str], str]


def _change(record: Any, prefix: str, name_of: NameOf) -> Change:
    return Change(
        id=record["id"],
        xid=int(record["xid"]),
        table=record["tbl"],
        name=name_of(record["tbl"]),
        op=record["op"],
        pk=record["pk"],
        row=record["row"],
        old=record["old"],
        ts=record["ts"],
        event_id=prefix + str(record["id"]),
    )


async def current_position(conn: Any) -> Snapshot:
    return Snapshot.parse(await conn.fetchval("select pg_current_snapshot()::text"))


async def read_batch(
    conn: Any, prev: Snapshot, name_of: NameOf, limit: int = FAST_LIMIT
) -> Batch:
    """One statement: the new snapshot and up to *limit* new changes.

    When there are more, the batch is not ``complete``: read the rest with
    :func:`read_rest`.  *conn* should carry :data:`READ_SETTINGS` (one
    statement: no ``SET LOCAL``).
    """
    xmax, xip = prev.unseen_params()
    records = await conn.fetch(_FAST_SQL, xmax, xip, limit + 1)
    snap = Snapshot.parse(records[0]["snap"])
    pruned = int(records[0]["pruned_xid"])
    if records[0]["id"] is None:
        return Batch(prev, snap, [], pruned)
    complete = len(records) <= limit
    prefix = Cursor.batch_prefix(prev, snap)
    changes = [_change(r, prefix, name_of) for r in records[:limit]]
    return Batch(prev, snap, changes, pruned, complete)


async def read_rest(
    conn: Any, batch: Batch, name_of: NameOf, limit: int = FAST_LIMIT
) -> AsyncGenerator[Batch, None]:
    """The rest of an incomplete *batch*, in chunks of up to *limit* changes;
    the last chunk (possibly empty) is ``complete``.

    One statement through a cursor, in a read-only transaction: the log has no
    index on id, so a statement per chunk found every change of the batch
    again to sort out its chunk (a 94,000-change backlog took 10 s to read).
    Visibility in the batch's snapshot is told by xids alone (a transaction
    not running at it had ended before it; aborted rows are invisible anyway),
    so a later statement reads exactly the batch.  Same snapshots, so the same
    event-id prefix: a client that stops half-way resumes from any chunk.
    Close the iterator (``contextlib.aclosing``) when stopping early.  *conn*
    should carry :data:`READ_SETTINGS`.
    """
    assert batch.changes, "an incomplete batch has changes"
    args = _since_args(batch.prev, batch.snap, batch.changes[-1].id, None)
    prefix = Cursor.batch_prefix(batch.prev, batch.snap)
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(_SINCE_SQL, *args)
        while True:
            records = await cursor.fetch(limit)
            changes = [_change(r, prefix, name_of) for r in records]
            complete = len(records) < limit
            yield Batch(batch.prev, batch.snap, changes, batch.pruned_xid, complete)
            if complete:
                return


def _since_args(
    prev: Snapshot, snap: Snapshot, after: int | None, tables: list[str] | None
) -> tuple[Any, ...]:
    """$1-$6 of ``_SINCE_SQL``: unseen at *prev*; with *after*, only the rest
    of the batch (*prev*, *snap*) after that id."""
    xmax, xip = prev.unseen_params()
    if after is None:
        return (xmax, xip, None, [], 0, tables)
    sxmax, sxip = snap.unseen_params()
    return (xmax, xip, sxmax, sxip, after, tables)


async def _open_snapshot_read(conn: Any, timeout: float | None) -> Snapshot:
    """Inside a REPEATABLE READ transaction: pgpulse's session settings, the
    optional lock and statement timeout (seconds), and the position it reads to."""
    await conn.execute(_SET_LOCAL)
    if timeout is not None:
        millis = max(1, int(timeout * 1000))
        await conn.execute(
            f"set local lock_timeout = {millis}; set local statement_timeout = {millis}"
        )
    return await current_position(conn)


def _phases(
    cursor: Cursor, now: Snapshot
) -> list[tuple[Snapshot, Snapshot, int | None]]:
    """What to read after *cursor* up to *now*: first the rest of the batch
    the cursor points into, then everything that became visible after it."""
    phases: list[tuple[Snapshot, Snapshot, int | None]] = []
    if cursor.after_id is not None:
        phases.append((cursor.prev, cursor.snap, cursor.after_id))
    phases.append((cursor.snap, now, None))
    return phases


async def read_since(
    conn: Any,
    cursor: Cursor,
    name_of: NameOf,
    tables: list[str] | None = None,
    chunk: int = 200,
    timeout: float | None = None,
) -> AsyncIterator[tuple[Snapshot, list[Change]]]:
    """Everything after *cursor*, in chunks, inside one REPEATABLE READ snapshot.

    Yields ``(snapshot, changes)``; the snapshot (the same for every chunk) is the
    position reached once all chunks are consumed.  Changes carry event ids that
    resume correctly if the reader stops half-way.  With *timeout* (seconds),
    a lock or a statement that waits longer fails instead of waiting forever.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now = await _open_snapshot_read(conn, timeout)
        for prev, snap, after in _phases(cursor, now):
            args = _since_args(prev, snap, after, tables)
            prefix = Cursor.batch_prefix(prev, snap)
            out: list[Change] = []
            async for record in conn.cursor(_SINCE_SQL, *args, prefetch=chunk):
                out.append(_change(record, prefix, name_of))
                if len(out) >= chunk:
                    yield now, out
                    out = []
            if out:
                yield now, out
        yield now, []


@dataclass
class Lane:
    """A reader's share of the log from one position (:func:`read_lanes`)."""

    start: Cursor
    keep: Callable[[Change], bool]
    """Which of the changes read are this lane's."""
    changes: list[Change] = field(default_factory=list)
    end: Cursor | None = None
    """The position after everything read for this lane."""


async def read_lanes(
    conn: Any,
    lanes: list[Lane],
    name_of: NameOf,
    tables: list[str] | None,
    limit: int,
    timeout: float | None = None,
) -> Snapshot:
    """Read each lane's changes after its start, at most *limit* kept in all,
    in one REPEATABLE READ snapshot; returns that snapshot.

    A lane read to the end stops at the point cursor of the snapshot, so lanes
    that started apart end at the same position (and can merge); one cut
    short by *limit* stops at the event id of the last change it read.  The
    transaction ends before the changes are handed on: nobody's work holds a
    snapshot open (consumer groups, :mod:`pgpulse.consumers`).
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now = await _open_snapshot_read(conn, timeout)
        budget = limit
        for lane in lanes:
            lane.changes = []
            lane.end = Cursor.point(now)
            if budget <= 0:
                lane.end = lane.start
                continue
            done = False
            for prev, snap, after in _phases(lane.start, now):
                args = _since_args(prev, snap, after, tables)
                prefix = Cursor.batch_prefix(prev, snap)
                async for record in conn.cursor(
                    _SINCE_SQL, *args, prefetch=min(max(budget, 50), 500)
                ):
                    change = _change(record, prefix, name_of)
                    if lane.keep(change):
                        lane.changes.append(change)
                        budget -= 1
                        if budget <= 0:
                            lane.end = Cursor.decode(change.event_id)
                            done = True
                            break
                if done:
                    break
    return now


async def pruned_xid(conn: Any) -> int:
    return int(await conn.fetchval("select pruned_xid::text from pgpulse.state"))
