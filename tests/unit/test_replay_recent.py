"""The gateway's copy of the stream's last messages (broker/replay.py: Recent).

Reads as the relay publishes them: read k goes from snapshot S(k) to S(k+1)
with three changes (two on ``docs``, one on ``other``); stream sequences
count from 50.  A resume is served from memory only when what the client
missed is held whole, and then it is exactly the changes the client's event
id has not seen, of its tables.
"""

from __future__ import annotations

import asyncio

from pgpulse.broker.replay import Bounds, Recent
from pgpulse.log.change import Change
from pgpulse.log.cursor import Cursor, Snapshot

READS = 40
FIRST_SEQ = 50


def snap(k: int) -> Snapshot:
    return Snapshot(100 + 10 * k, 100 + 10 * k, frozenset())


def reads(count: int = READS) -> list[tuple[int, Change]]:
    out = []
    seq, log_id = FIRST_SEQ, 1
    for k in range(count):
        for n, table in enumerate(("public.docs", "public.docs", "public.other")):
            out.append(
                (
                    seq,
                    Change(
                        id=log_id,
                        xid=100 + 10 * k + n,
                        table=table,
                        name=table.split(".")[1],
                        op="INSERT",
                        pk=f'{{"id": {log_id}}}',
                        row="{}",
                        old=None,
                        ts='"2026-01-01T00:00:00+00:00"',
                        event_id=f"{snap(k)}~{snap(k + 1)}~{log_id}",
                    ),
                )
            )
            seq, log_id = seq + 1, log_id + 1
    return out


def held(limit: int = 0, messages: list[tuple[int, Change]] | None = None) -> Recent:
    recent = Recent(limit)
    for seq, change in messages or reads():
        recent.add(seq, change)
    return recent


def ids(
    recent: Recent, start: Cursor, upto: int, tables: list[str]
) -> list[int] | None:
    replay = recent.replay(Bounds(upto, snap(READS)), start, tables)
    if replay is None:
        return None
    out: list[int] = []

    async def drain() -> None:
        async for batch in replay.batches():
            out.extend(c.id for c in batch)

    asyncio.run(drain())
    return out


UPTO = FIRST_SEQ + 3 * READS - 1
ALL = reads()


def expected(start: Cursor, tables: list[str]) -> list[int]:
    return [c.id for _, c in ALL if c.table in tables and not start.seen(c.xid, c.id)]


def test_a_point_position_gets_every_later_change_of_its_tables() -> None:
    for k in (1, 5, 39):
        start = Cursor.point(snap(k))
        got = ids(held(), start, UPTO, ["public.docs"])
        assert got == expected(start, ["public.docs"]) and got, k


def test_a_position_inside_a_read_gets_the_rest_of_that_read() -> None:
    for k, after in ((3, 10), (3, 11), (20, 61)):
        start = Cursor(snap(k), snap(k + 1), after)
        tables = ["public.docs", "public.other"]
        got = ids(held(), start, UPTO, tables)
        assert got == expected(start, tables), (k, after)
        assert got is not None and got[0] == after + 1


def test_only_up_to_what_the_bus_had_dispatched() -> None:
    start = Cursor.point(snap(10))
    upto = FIRST_SEQ + 3 * 20 - 1  # the end of read 19
    got = ids(held(), start, upto, ["public.docs", "public.other"])
    assert got == list(range(31, 61))


def test_what_is_not_held_whole_is_left_to_the_stream_or_the_log() -> None:
    # Older than everything held: nothing proves the client saw what came before.
    assert ids(held(), Cursor.point(snap(0)), UPTO, ["public.docs"]) is None
    # Trimmed: only the last 30 messages (10 reads) held at least.
    trimmed = held(limit=30)
    assert ids(trimmed, Cursor.point(snap(5)), UPTO, ["public.docs"]) is None
    start = Cursor.point(snap(35))
    assert ids(trimmed, start, UPTO, ["public.docs"]) == expected(
        start, ["public.docs"]
    )
    # A sequence missing on the way: what came before it is dropped.
    gap = [m for m in reads() if m[0] != FIRST_SEQ + 60]
    start = Cursor.point(snap(10))
    assert ids(held(messages=gap), start, UPTO, ["public.docs"]) is None
    # Beyond what is held, or a client ahead of this gateway.
    assert ids(held(), start, UPTO + 1, ["public.docs"]) is None
    ahead = Cursor.point(snap(READS + 1))
    assert held().replay(Bounds(UPTO, snap(READS)), ahead, ["public.docs"]) is None
