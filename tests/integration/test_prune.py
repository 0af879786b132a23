"""Pruning the log by age: exactly the old changes, never a newer one, and only
through the xid index (the log has no index on capture time)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from pgpulse import capture
from pgpulse.log import prune

DAY = dt.timedelta(days=1)


async def _logged(conn: asyncpg.Connection, n: int) -> list[int]:
    """*n* changes, one transaction each; their xids in order."""
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    for i in range(1, n + 1):
        await conn.execute("insert into docs values ($1)", i)
    rows = await conn.fetch("select xid::text from pgpulse.changes order by xid")
    return [int(r["xid"]) for r in rows]


async def _age(conn: asyncpg.Connection, ids: list[int], days: int) -> None:
    """Back-date the changes of rows *ids* by *days*."""
    await conn.execute(
        "update pgpulse.changes set ts = now() - make_interval(days => $2) "
        "where (pk->>'id')::int = any($1) or (\"row\"->>'id')::int = any($1)",
        ids,
        days,
    )


async def _left(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "select (\"row\"->>'id')::int as id from pgpulse.changes order by xid"
    )
    return [r["id"] for r in rows]


async def _seq_scans(conn: asyncpg.Connection) -> int:
    await conn.execute("select pg_stat_force_next_flush()")
    await conn.execute("select pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval(
            "select seq_scan from pg_stat_user_tables "
            "where relid = 'pgpulse.changes'::regclass"
        )
    )


async def test_deletes_exactly_the_changes_older_than_the_cut(conn):
    xids = await _logged(conn, 30)
    await _age(conn, list(range(1, 21)), 10)
    await _age(conn, list(range(21, 26)), 6)
    scans = await _seq_scans(conn)
    result = await prune.prune(conn, older_than=7 * DAY, batch_size=7)
    assert await _seq_scans(conn) == scans  # the bisection and deletes: index only
    assert result.deleted == 20
    assert await _left(conn) == list(range(21, 31))
    assert result.pruned_xid == xids[19]


async def test_never_deletes_a_newer_change_written_out_of_xid_order(conn):
    await _logged(conn, 30)
    # Change 11 was captured late by a transaction that started early.
    await _age(conn, [*range(1, 11), *range(12, 21)], 10)
    await prune.prune(conn, older_than=7 * DAY)
    left = await _left(conn)
    assert set(range(21, 31)) | {11} <= set(left)
    assert not set(range(1, 11)) & set(left)
    # Old changes after the late one go by the next prune at the latest, once
    # the cut has passed it.
    await _age(conn, [11], 10)
    await prune.prune(conn, older_than=7 * DAY)
    assert await _left(conn) == list(range(21, 31))


async def test_nothing_old_enough_deletes_nothing(conn):
    await _logged(conn, 5)
    result = await prune.prune(conn, older_than=7 * DAY)
    assert (result.deleted, result.pruned_xid) == (0, 0)
    assert await _left(conn) == [1, 2, 3, 4, 5]


async def test_age_and_row_count_together_take_the_larger_cut(conn):
    await _logged(conn, 20)
    await _age(conn, list(range(1, 6)), 10)
    result = await prune.prune(conn, older_than=7 * DAY, keep_rows=12)
    assert result.deleted == 8
    assert await _left(conn) == list(range(9, 21))
    result = await prune.prune(conn, older_than=7 * DAY, keep_rows=100)
    assert result.deleted == 0


async def test_an_empty_log_prunes_nothing(conn):
    result = await prune.prune(conn, older_than=DAY)
    assert result.deleted == 0
