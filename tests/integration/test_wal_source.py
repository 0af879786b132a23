"""The wal capture source: changes decoded from the WAL land in the log exactly as
triggers would have logged them, exactly once, in commit order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from pgpulse import capture
from pgpulse.capture.decoder import Decoder
from pgpulse.capture.wal import slot_name, slot_status
from pgpulse.exceptions import ConfigurationError

_LOG_SQL = """
select tbl, op, pk::text as pk, "row"::text as row, old::text as old
from pgpulse.changes where tbl = any($1::text[]) order by id
"""


@contextlib.asynccontextmanager
async def decoding(dsn: str, decoder: Decoder | None = None) -> AsyncIterator[Decoder]:
    decoder = decoder or Decoder(dsn, check_interval=0.1)
    task = asyncio.create_task(decoder.run())
    try:
        await asyncio.wait_for(decoder.decoding.wait(), 15)
        yield decoder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def logged(conn: asyncpg.Connection, table: str, count: int) -> list[Any]:
    """The log entries of *table*, once there are *count* of them (10 s at most)."""
    for _ in range(200):
        rows = await conn.fetch(_LOG_SQL, [table])
        if len(rows) >= count:
            return [_entry(r) for r in rows]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{table}: {len(rows)} of {count} changes logged: {rows}")


def _entry(record: Any) -> tuple[Any, ...]:
    def load(text: str | None) -> Any:
        return None if text is None else orjson.loads(text)

    return (record["op"], load(record["pk"]), load(record["row"]), load(record["old"]))


_TYPES = """
    id int primary key,
    name text,
    amount numeric(12, 2),
    at timestamptz,
    day date,
    doc jsonb,
    raw json,
    tags text[],
    grid int[],
    flag boolean,
    data bytea,
    uid uuid,
    span int4range,
    big text,
    nothing text
"""

_WRITES = [
    # Multi-row insert with awkward values: quotes, NULL array items, unicode,
    # nested JSON, a row far above NOTIFY's 8000-byte limit (TOASTed), the
    # character the decoder separates values with (raw and JSON-escaped).
    """insert into {t} values
      (1, 'plain', 12.50, '2026-01-02 03:04:05.678+02', '2026-01-02',
       '{{"a": [1, {{"b": null}}]}}', '{{"z": 1,  "a": 2}}',
       array['a b', null, 'quo"te', 'ü'], array[[1,2],[3,4]], true, '\\x00ff',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)',
       (select string_agg(md5(g::text), '') from generate_series(1, 7000) g), null),
      (2, 'it''s' || chr(30), -0.01, 'infinity', '2026-12-31', 'null',
       '["\\u001e", []]', '{{}}', null, false,
       '', null, 'empty', 'small', null)""",
    # Update of a small column: the big TOASTed column is unchanged, not in the WAL.
    "update {t} set name = 'renamed', amount = amount + 1 where id = 1",
    # Key change: a DELETE and an INSERT, as the trigger pairs rows by key.
    "update {t} set id = 3 where id = 2",
    "delete from {t} where id = 1",
    "insert into {t} (id, name) values (4, 'four'), (5, 'five')",
    "truncate {t}",
    "insert into {t} (id, name) values (6, 'after truncate')",
]


async def _run_writes(conn: asyncpg.Connection, table: str) -> None:
    for sql in _WRITES:
        await conn.execute(sql.format(t=table))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"exclude": ["big", "doc"]},
        {"columns": ["name", "tags"]},
        {"publish": "keys"},
    ],
    ids=["all-columns", "exclude", "columns", "keys"],
)
async def test_wal_source_logs_what_the_trigger_source_logs(conn, database, options):
    await conn.execute(f"create table by_trigger ({_TYPES})")
    await conn.execute(f"create table by_wal ({_TYPES})")
    await capture.watch(conn, "by_trigger", **options)
    watched = await capture.watch(conn, "by_wal", source="wal", **options)
    assert watched.source == "wal"
    # No trigger on the wal table: writers pay nothing beyond the WAL.
    assert not await conn.fetchval(
        "select count(*) from pg_trigger where tgrelid = 'by_wal'::regclass"
    )
    async with decoding(database):
        await _run_writes(conn, "by_trigger")
        await _run_writes(conn, "by_wal")
        expected = await logged(conn, "public.by_trigger", 10)
        got = await logged(conn, "public.by_wal", len(expected))
    assert len(expected) == 10
    # Decoded changes carry their commit time.
    assert await conn.fetchval(
        "select bool_and(ts between now() - interval '1 minute' and clock_timestamp()) "
        "from pgpulse.changes where tbl = 'public.by_wal'"
    )
    # A key change is one DELETE and one INSERT; the trigger's full join may
    # list them either way round (plan-dependent), the decoder deletes first.
    if expected[3][0] == "INSERT":
        expected[3], expected[4] = expected[4], expected[3]
    assert got == expected
    ops = [e[0] for e in got]
    assert ops == ["INSERT"] * 2 + ["UPDATE", "DELETE", "INSERT", "DELETE"] + [
        "INSERT"
    ] * 2 + ["TRUNCATE", "INSERT"]
    if not options:
        first = got[0][2]
        assert len(first["big"]) == 7000 * 32
        assert first["doc"] == {"a": [1, {"b": None}]}
        assert first["tags"] == ["a b", None, 'quo"te', "ü"]
        assert got[1][2]["name"] == "it's\x1e"
        assert got[1][2]["raw"] == ["\x1e", []]
        # That value is stored out of line (TOAST), so the UPDATE's WAL record
        # does not repeat it; the event still carries it.
        await conn.execute(
            "create table probe (big text); insert into probe select string_agg("
            "md5(g::text), '') from generate_series(1, 7000) g"
        )
        toast = await conn.fetchval(
            "select reltoastrelid::regclass::text from pg_class where relname = 'probe'"
        )
        assert await conn.fetchval(f"select count(*) from {toast}") > 0
        assert got[2][2]["big"] == first["big"]
        assert got[2][2]["name"] == "renamed"


# Only types whose text form the decoder turns into JSON itself (typed_rows).
_TYPED = """
    id bigint primary key,
    small smallint,
    n int,
    amount numeric(12, 2),
    ratio numeric,
    flag boolean,
    name text,
    code varchar(10),
    fixed char(4),
    label name,
    uid uuid,
    doc jsonb,
    raw json
"""

_TYPED_WRITES = [
    """insert into {t} values
      (1, -32768, 2147483647, -12.50, 'NaN', true, 'quo"te \\ ü ' || chr(30) || chr(10),
       'v', 'ab', 'nm', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
       '{{"b": [1, null], "a": "\\u001e"}}', '{{"z": 1,  "a": 2}}'),
      (2, null, null, null, 'Infinity', false, '', null, null, null, null,
       'null', '[]'),
      (3, 0, -1, 0.00, '-Infinity', null, null, '', '', '', null, '1.50', '"s"'),
      (9223372036854775807, 1, 1, 1e-5, 123456789012345678901234567890.5, true,
       'big', 'x', 'xyzw', 'n', null, '{{}}', 'null')""",
    "update {t} set name = 'renamed', ratio = ratio + 1 where id = 3",
    "update {t} set id = 4 where id = 2",
    "delete from {t} where id = 1",
    "truncate {t}",
    "insert into {t} (id, name) values (5, 'after truncate')",
]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"exclude": ["doc", "small"]},
        {"columns": ["name", "amount", "flag"]},
        {"publish": "keys"},
    ],
    ids=["all-columns", "exclude", "columns", "keys"],
)
async def test_rows_the_decoder_builds_as_json_equal_the_triggers(
    conn, database, options
):
    await conn.execute(f"create table typed_trigger ({_TYPED})")
    await conn.execute(f"create table typed_wal ({_TYPED})")
    await capture.watch(conn, "typed_trigger", **options)
    await capture.watch(conn, "typed_wal", source="wal", **options)
    async with decoding(database) as decoder:
        for sql in _TYPED_WRITES:
            await conn.execute(sql.format(t="typed_trigger"))
            await conn.execute(sql.format(t="typed_wal"))
        expected = await logged(conn, "public.typed_trigger", 10)
        got = await logged(conn, "public.typed_wal", len(expected))
        relid = await conn.fetchval("select 'typed_wal'::regclass::oid")
        assert decoder._wal_log is not None
        # The decoder built these rows' JSON itself: no decode function.
        assert decoder._wal_log._typed.get(relid) is not None
    # The key change: the trigger's full join may list its two halves either
    # way round, the decoder deletes first.
    if expected[5][0] == "INSERT":
        expected[5], expected[6] = expected[6], expected[5]
    assert got == expected
    assert [e[0] for e in got] == ["INSERT"] * 4 + ["UPDATE", "DELETE", "INSERT"] + [
        "DELETE",
        "TRUNCATE",
        "INSERT",
    ]


@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_columns_named_like_the_capture_aliases(conn, database, source):
    # The capture SQL calls the new and old rows n and o: a column of that name
    # must neither replace the row in events nor break the writer's UPDATE.
    await conn.execute("create table nt (id int primary key, n int, o text, u int)")
    await capture.watch(conn, "nt", source=source)
    async with decoding(database) if source == "wal" else contextlib.nullcontext():
        await conn.execute("insert into nt values (1, 5, 'x', 7)")
        await conn.execute("update nt set n = 6, o = 'y'")
        await conn.execute("delete from nt")
        got = await logged(conn, "public.nt", 3)
    row1 = {"id": 1, "n": 5, "o": "x", "u": 7}
    row2 = {"id": 1, "n": 6, "o": "y", "u": 7}
    assert got == [
        ("INSERT", None, row1, None),
        ("UPDATE", None, row2, row1),
        ("DELETE", None, None, row2),
    ]


async def test_rolled_back_transactions_emit_nothing_and_commits_come_in_order(
    conn, database
):
    await conn.execute("create table counters (id int primary key, n int not null)")
    await conn.execute("insert into counters select g, 0 from generate_series(1, 5) g")
    await capture.watch(conn, "counters", source="wal")
    writers = [await asyncpg.connect(database) for _ in range(6)]
    try:
        async with decoding(database):

            async def write(w: asyncpg.Connection, seed: int) -> int:
                done = 0
                for i in range(40):
                    tr = w.transaction()
                    await tr.start()
                    await w.execute(
                        "update counters set n = n + 1 where id = $1",
                        (seed + i) % 5 + 1,
                    )
                    if i % 4 == 3:
                        await tr.rollback()
                    else:
                        await tr.commit()
                        done += 1
                return done

            committed = sum(
                await asyncio.gather(*(write(w, s) for s, w in enumerate(writers)))
            )
            got = await logged(conn, "public.counters", committed)
    finally:
        for w in writers:
            await w.close()
    assert len(got) == committed  # nothing rolled back, nothing twice
    last: dict[int, int] = {}
    for op, _pk, row, old in got:
        assert op == "UPDATE"
        assert row["n"] == old["n"] + 1
        # Per row, commit order: each update continues where the previous ended.
        assert last.get(row["id"], 0) == old["n"]
        last[row["id"]] = row["n"]
    totals = dict(await conn.fetch("select id, n from counters"))
    assert last == totals


class _ForgetfulDecoder(Decoder):
    """Logs changes but never confirms them: the slot replays them on restart,
    as after a crash between the log's commit and the confirmation."""

    def _confirm(self, cur: Any, lsn: int) -> None:
        pass


async def test_restarted_decoder_does_not_log_replayed_transactions_twice(
    conn, database
):
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs", source="wal")
    async with decoding(database, _ForgetfulDecoder(database, check_interval=0.1)):
        for i in range(30):
            await conn.execute("insert into docs values ($1, 'a')", i)
        await logged(conn, "public.docs", 30)
    # The slot still holds all 30; a new decoder receives them again.
    async with decoding(database) as decoder:
        await conn.execute("insert into docs values (100, 'after restart')")
        got = await logged(conn, "public.docs", 31)
        await asyncio.sleep(0.3)
        assert len(await conn.fetch(_LOG_SQL, ["public.docs"])) == 31
        assert [e[2]["id"] for e in got] == [*range(30), 100]
        assert decoder.decoded_lsn > 0
    confirmed = await conn.fetchval(
        "select confirmed_flush_lsn >= (select decoded_lsn from pgpulse.state) "
        "from pg_replication_slots where slot_name = $1",
        await slot_name(conn),
    )
    assert confirmed


async def test_one_decoder_at_a_time_and_another_takes_over(conn, database):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs", source="wal")
    second = Decoder(database, check_interval=0.1)
    async with decoding(database):
        standby = asyncio.create_task(second.run())
        await asyncio.sleep(0.5)
        assert not second.decoding.is_set()  # the slot serves one connection
        await conn.execute("insert into docs values (1)")
        await logged(conn, "public.docs", 1)
    try:
        await asyncio.wait_for(second.decoding.wait(), 10)
        await conn.execute("insert into docs values (2)")
        got = await logged(conn, "public.docs", 2)
        assert [e[2]["id"] for e in got] == [1, 2]
    finally:
        standby.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await standby


async def _slot_count(conn: asyncpg.Connection, slot: str) -> int:
    return int(
        await conn.fetchval(
            "select count(*) from pg_replication_slots where slot_name = $1", slot
        )
    )


async def _slot_gone(conn: asyncpg.Connection, slot: str) -> None:
    for _ in range(200):
        if not await _slot_count(conn, slot):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"slot {slot} still exists")


async def test_switching_sources_loses_nothing_and_the_slot_retires(conn, database):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs values (1)")
    await capture.watch(conn, "docs", source="wal")
    slot = await slot_name(conn)
    identity = await conn.fetchval(
        "select relreplident from pg_class where oid = 'docs'::regclass"
    )
    assert identity in (b"f", "f")
    async with decoding(database):
        await conn.execute("insert into docs values (2)")
        # Switched back to triggers right after a commit the decoder may not
        # have logged yet: that change still arrives, once.
        await capture.watch(conn, "docs")
        await conn.execute("insert into docs values (3)")
        got = await logged(conn, "public.docs", 3)
        # The decoder drops the slot once it has decoded everything up to the
        # switch (no table uses the WAL any more).
        await _slot_gone(conn, slot)
    assert sorted(e[2]["id"] for e in got) == [1, 2, 3]
    assert len(await conn.fetch(_LOG_SQL, ["public.docs"])) == 3
    identity = await conn.fetchval(
        "select relreplident from pg_class where oid = 'docs'::regclass"
    )
    assert identity in (b"d", "d")  # restored


async def test_unwatching_keeps_a_slot_that_holds_undecoded_changes(conn, database):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs", source="wal")
    slot = await slot_name(conn)
    # No gateway decodes: these changes wait in the slot.
    await conn.execute("insert into docs values (1), (2)")
    assert await capture.unwatch(conn, "docs")
    assert await _slot_count(conn, slot) == 1  # dropping it would lose them
    async with decoding(database):
        got = await logged(conn, "public.docs", 2)
        await _slot_gone(conn, slot)
    assert [e[2]["id"] for e in got] == [1, 2]
    # Nothing pending: unwatching the last wal table drops the idle slot at once.
    await capture.watch(conn, "docs", source="wal")
    slot = await slot_name(conn)
    assert await _slot_count(conn, slot) == 1
    await capture.unwatch(conn, "docs")
    assert await _slot_count(conn, slot) == 0


async def test_wal_source_needs_logical_wal_level(tmp_path):
    from pgpulse.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(tmp_path / "data", settings={"wal_level": "replica"})
    cluster.start()
    try:
        conn = await asyncpg.connect(cluster.dsn("postgres"))
        try:
            await conn.execute("create table docs (id int primary key)")
            with pytest.raises(ConfigurationError, match="wal_level = logical"):
                await capture.watch(conn, "docs", source="wal")
            # The SQL function says the same to someone calling it directly.
            with pytest.raises(asyncpg.PostgresError, match="wal_level = logical"):
                await conn.execute("select pgpulse.watch('docs', source => 'wal')")
            # Triggers still work there.
            await capture.watch(conn, "docs")
        finally:
            await conn.close()
    finally:
        cluster.destroy()


async def test_bad_source_and_sql_without_setup_get_clear_errors(conn):
    await conn.execute("create table docs (id int primary key)")
    with pytest.raises(Exception, match="source must be 'trigger' or 'wal'"):
        await capture.watch(conn, "docs", source="logical")
    # Calling the SQL function before pgpulse created the slot: a hint, not a gap.
    with pytest.raises(asyncpg.PostgresError, match="not set up") as info:
        await conn.execute("select pgpulse.watch('docs', source => 'wal')")
    assert "pgpulse watch --source wal" in (info.value.hint or "")


async def test_gateway_decodes_and_delivers_over_sse_and_resumes(conn, gateway_factory):
    from tests.gateway import SSEStream

    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs", source="wal")
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        assert (await stream.next_event()).event == "ready"
        await conn.execute("insert into docs values (1, 'a')")
        await conn.execute("update docs set title = 'b' where id = 1")
        first = await stream.changes(2, timeout=15)
    assert [(e.data["op"], e.data["row"]["title"]) for e in first] == [
        ("INSERT", "a"),
        ("UPDATE", "b"),
    ]
    assert first[1].data["old"] == {"id": 1, "title": "a"}
    assert first[1].data["pk"] == {"id": 1}
    # What `pgpulse watched` reports: the gateway's walsender decodes the slot,
    # and the position logged is past both changes.
    status = await slot_status(conn)
    assert status is not None and status.decoding_pid is not None
    assert status.decoded_lsn != "0/0"
    # Missed while disconnected: delivered on resume, nothing twice.
    await conn.execute("delete from docs where id = 1")
    await conn.execute("insert into docs values (2, 'c')")
    async with SSEStream(gw.url, ["docs"], last_event_id=first[-1].id) as stream:
        missed = await stream.changes(2, timeout=15)
    assert [(e.data["op"], e.data["pk"]["id"]) for e in missed] == [
        ("DELETE", 1),
        ("INSERT", 2),
    ]


async def test_big_and_mixed_transactions_are_logged_whole_and_in_order(conn, database):
    await conn.execute("create table a (id int primary key, v text)")
    await conn.execute("create table b (id int primary key, v text)")
    await capture.watch(conn, "a", source="wal")
    await capture.watch(conn, "b", source="wal")
    # chunk=100: a 1,000-row transaction is written in chunks inside one log
    # transaction; listeners never see half of it.
    async with decoding(database, Decoder(database, check_interval=0.1, chunk=100)):
        async with conn.transaction():
            await conn.execute(
                "insert into a select g, 'x' from generate_series(1, 1000) g"
            )
            await conn.execute("insert into b values (1, 'first b')")
            await conn.execute("update a set v = 'y' where id <= 3")
            await conn.execute("insert into b values (2, 'second b')")
        await conn.execute("insert into a values (1001, 'after')")
        got_a = await logged(conn, "public.a", 1004)
        got_b = await logged(conn, "public.b", 2)
        # One log transaction for the whole source transaction (later ones may
        # share it: a burst of decoded transactions is logged together).
        xids = await conn.fetch("select xid::text from pgpulse.changes order by id")
    assert len({x["xid"] for x in xids[:1005]}) == 1
    assert [e[2]["id"] for e in got_a[:1000]] == list(range(1, 1001))
    assert [(e[0], e[2]["id"], e[2]["v"]) for e in got_a[1000:]] == [
        ("UPDATE", 1, "y"),
        ("UPDATE", 2, "y"),
        ("UPDATE", 3, "y"),
        ("INSERT", 1001, "after"),
    ]
    assert [e[2]["v"] for e in got_b] == ["first b", "second b"]
    order = await conn.fetch(
        "select tbl, (row->>'id')::int as rid, op from pgpulse.changes c order by c.id"
    )
    # Commit order within the source transaction: a's inserts, b 1, a's updates, b 2.
    assert [(r["tbl"], r["rid"], r["op"]) for r in order[999:1006]] == [
        ("public.a", 1000, "INSERT"),
        ("public.b", 1, "INSERT"),
        ("public.a", 1, "UPDATE"),
        ("public.a", 2, "UPDATE"),
        ("public.a", 3, "UPDATE"),
        ("public.b", 2, "INSERT"),
        ("public.a", 1001, "INSERT"),
    ]
