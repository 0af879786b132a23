"""Log reads stay index range scans on a large log the planner knows nothing
about (never analyzed: a young or fast-growing log), instead of scanning the
whole log on every read."""

from __future__ import annotations

import asyncpg
import orjson

from pgpulse import capture
from pgpulse.log import changelog
from pgpulse.log.cursor import Cursor, Snapshot


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


async def _inserted(
    conn: asyncpg.Connection, database: str, rows: int
) -> tuple[asyncpg.Connection, Snapshot]:
    """A log reader, and its position from before *rows* inserted at once into
    a watched table (ids 1 to *rows*)."""
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs")
    reader = await asyncpg.connect(database, server_settings=changelog.READ_SETTINGS)
    start = await changelog.current_position(reader)
    await conn.execute(
        "insert into docs select g, 'x' from generate_series(1, $1::int) g", rows
    )
    return reader, start


async def test_a_large_batch_is_read_in_chunks_that_resume_exactly(conn, database):
    reader, start = await _inserted(conn, database, 1234)
    try:
        first = await changelog.read_batch(reader, start, lambda t: t, limit=500)
        assert not first.complete and len(first.changes) == 500
        # Committed after the batch's snapshot: the next read's, not this one's.
        await conn.execute("insert into docs values (5000, 'late')")
        chunks = [first]
        async for chunk in changelog.read_rest(reader, first, lambda t: t):
            chunks.append(chunk)
        assert [len(c.changes) for c in chunks] == [500, 500, 234]
        assert [c.complete for c in chunks] == [False, False, True]
        changes = [ch for c in chunks for ch in c.changes]
        assert [orjson.loads(ch.pk)["id"] for ch in changes] == list(range(1, 1235))
        assert all(c.snap == first.snap for c in chunks)
        # A client that got the 700th change resumes with exactly the rest,
        # then what committed later.
        rest = [
            orjson.loads(ch.pk)["id"]
            async for _, chunk in changelog.read_since(
                reader, Cursor.decode(changes[699].event_id), lambda t: t
            )
            for ch in chunk
        ]
        assert rest == [*range(701, 1235), 5000]
        following = await changelog.read_batch(reader, first.snap, lambda t: t)
        assert following.complete
        assert [orjson.loads(ch.pk)["id"] for ch in following.changes] == [5000]
    finally:
        await reader.close()


async def _fetched(conn: asyncpg.Connection) -> int:
    """Rows of pgpulse.changes fetched through its indexes so far."""
    await conn.execute("select pg_stat_force_next_flush()")
    return int(
        await conn.fetchval(
            "select coalesce(idx_tup_fetch, 0) from pg_stat_user_tables "
            "where relid = 'pgpulse.changes'::regclass"
        )
    )


async def test_reading_a_large_batch_touches_each_change_a_bounded_number_of_times(
    conn, database
):
    # The log has no index on id: a statement per chunk would find and sort
    # every change of the batch again (10 chunks: 10x the batch).  The rest of
    # a batch streams through one cursor: at most twice the batch in all.
    reader, start = await _inserted(conn, database, 5000)
    try:
        before = await _fetched(reader)
        first = await changelog.read_batch(reader, start, lambda t: t, limit=500)
        read = len(first.changes)
        async for chunk in changelog.read_rest(reader, first, lambda t: t):
            read += len(chunk.changes)
        fetched = await _fetched(reader) - before
    finally:
        await reader.close()
    assert read == 5000
    assert read <= fetched <= 2 * read, f"{fetched} log rows fetched for {read}"
