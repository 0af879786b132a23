"""Log reads stay index range scans on a large log the planner knows nothing
about (never analyzed: a young or fast-growing log), instead of scanning the
whole log on every read."""

from __future__ import annotations

import asyncpg

from pgpulse import capture, changelog
from pgpulse.cursor import Cursor


async def _scans(conn: asyncpg.Connection) -> tuple[int, int]:
    """(sequential, index) scans of pgpulse.changes, this backend's included."""
    await conn.execute("select pg_stat_force_next_flush()")
    row = await conn.fetchrow(
        "select seq_scan, idx_scan from pg_stat_user_tables "
        "where relid = 'pgpulse.changes'::regclass"
    )
    assert row is not None
    return int(row["seq_scan"]), int(row["idx_scan"] or 0)


async def test_reads_of_an_unanalyzed_large_log_use_the_index(conn, database):
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs")
    await conn.execute(
        "insert into docs select g, repeat('x', 100) from generate_series(1, 150000) g"
    )
    reader = await asyncpg.connect(database, server_settings=changelog.READ_SETTINGS)
    try:
        assert await reader.fetchval(
            "select last_analyze is null and last_autoanalyze is null "
            "from pg_stat_user_tables where relid = 'pgpulse.changes'::regclass"
        )
        start = await changelog.current_position(reader)
        for i in (150001, 150002, 150003):
            await conn.execute("insert into docs values ($1, 'new')", i)
        before = await _scans(reader)

        batch = await changelog.read_batch(reader, start, lambda t: t)
        assert batch is not None
        assert [c.row for c in batch.changes] == [
            f'{{"id": {i}, "title": "new"}}' for i in (150001, 150002, 150003)
        ]
        # read_since sets what it needs itself, on any connection.
        plain = await asyncpg.connect(database)
        try:
            seen = [
                c.row
                async for _, chunk in changelog.read_since(
                    plain, Cursor.point(start), lambda t: t
                )
                for c in chunk
            ]
            plain_seq, _ = await _scans(plain)
        finally:
            await plain.close()
        assert len(seen) == 3
        seq, idx = await _scans(reader)
    finally:
        await reader.close()
    assert (seq, plain_seq) == (before[0], before[0]), "a log read scanned the log"
    assert idx > before[1]
