"""The capture schema: upgrades reach exactly the current schema; wake-ups adapt."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from pgpulse import capture
from pgpulse.capture.schema import SCHEMA_VERSION, install_schema, migrations
from pgpulse.log.listener import Listener

_SHAPE = """
select 'table' as kind, c.relname || '.' || a.attname || ':' ||
       format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull ||
       ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') as item
from pg_class c join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
where n.nspname = 'pgpulse' and c.relkind in ('r', 'i', 'S')
union all
select 'index', indexdef from pg_indexes where schemaname = 'pgpulse'
union all
select 'constraint', conrelid::regclass || ':' || pg_get_constraintdef(oid)
from pg_constraint where connamespace = 'pgpulse'::regnamespace
union all
select 'function', p.proname || ':' || md5(pg_get_functiondef(p.oid))
from pg_proc p where p.pronamespace = 'pgpulse'::regnamespace
order by 1, 2
"""


async def test_migrations_from_empty_equal_the_current_schema(pg_server):
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute("create database schema_fresh")
        await admin.execute("create database schema_upgraded")
    finally:
        await admin.close()
    fresh = await asyncpg.connect(pg_server.dsn("schema_fresh"))
    upgraded = await asyncpg.connect(pg_server.dsn("schema_upgraded"))
    try:
        assert await install_schema(fresh) == SCHEMA_VERSION
        # Install version 1 only, then let install_schema upgrade it.
        first = migrations()[0]
        await upgraded.execute(first[2])
        assert await install_schema(upgraded) == SCHEMA_VERSION
        a = [tuple(r) for r in await fresh.fetch(_SHAPE)]
        b = [tuple(r) for r in await upgraded.fetch(_SHAPE)]
        assert a == b
        assert len(a) > 10
        # No CHECK constraint on the log: PostgreSQL prepares CHECK expressions again
        # for every INSERT statement, and capture runs one per captured one.
        assert [i for k, i in a if i.startswith("pgpulse.changes:CHECK")] == []
        # Installing again is a no-op.
        assert await install_schema(fresh) == SCHEMA_VERSION
    finally:
        await fresh.close()
        await upgraded.close()
        admin = await asyncpg.connect(pg_server.dsn())
        await admin.execute("drop database schema_fresh with (force)")
        await admin.execute("drop database schema_upgraded with (force)")
        await admin.close()


async def test_busy_listener_polls_and_writers_stop_notifying(conn, database):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    got: list[int] = []
    listener = Listener(
        database,
        lambda batch, final: got.extend(c.id for c in batch.changes),
        lambda name: name,
        idle_after=0.3,
        # Wake-ups closer than 50 ms count as busy: back-to-back inserts from
        # one connection are that close on any machine (4 ms, the default,
        # is not on a loaded one).
        busy_gap=0.05,
    )
    task = asyncio.create_task(listener.run())
    try:
        await listener.connected.wait()
        notified: list[str] = []
        await conn.add_listener("pgpulse", lambda *a: notified.append("x"))
        await asyncio.sleep(0.3)
        assert not listener.polling
        # Idle: a write wakes the listener with NOTIFY.
        await conn.execute("insert into docs values (0)")
        await asyncio.sleep(0.2)
        assert notified
        # Busy: the listener switches to polling and writers skip NOTIFY.
        for i in range(1, 200):
            await conn.execute("insert into docs values ($1)", i)
        assert listener.polling
        notified.clear()
        for i in range(200, 300):
            await conn.execute("insert into docs values ($1)", i)
        await asyncio.sleep(0.05)
        assert notified == []
        # Quiet again: it asks for wake-ups and goes back to sleep.
        await asyncio.sleep(1.0)
        assert not listener.polling
        await conn.execute("insert into docs values (1000)")
        await asyncio.sleep(0.3)
        assert notified
        assert len(got) == 301 and len(set(got)) == 301
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_writers_at_any_isolation_level_read_the_current_wakeup_flag(
    conn, database
):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    notified: list[str] = []
    await conn.add_listener("pgpulse", lambda *a: notified.append("x"))
    other = await asyncpg.connect(database)
    try:
        await other.execute("insert into docs values (1)")
        await asyncio.sleep(0.2)
        assert notified == []  # nobody wants a wake-up
        # The writer's snapshot predates the listener asking: it still wakes it.
        async with other.transaction(isolation="repeatable_read"):
            await other.fetchval("select count(*) from docs")
            await conn.execute("select pgpulse.set_wakeups(true)")
            await other.execute("insert into docs values (2)")
        await asyncio.sleep(0.2)
        assert notified == ["x"]
        notified.clear()
        await conn.execute("select pgpulse.set_wakeups(false)")
        async with other.transaction(isolation="serializable"):
            await other.execute("insert into docs values (3)")
        await asyncio.sleep(0.2)
        assert notified == []
    finally:
        await other.close()


async def test_listeners_that_are_gone_do_not_keep_writers_notifying(conn, database):
    gone = await asyncpg.connect(database)
    pid = gone.get_server_pid()
    await gone.execute("select pgpulse.set_wakeups(true)")
    assert await conn.fetchval("select pg_sequence_last_value('pgpulse.wakeups')") == 1
    await gone.close()
    for _ in range(50):
        if not await conn.fetchval(
            "select count(*) from pg_stat_activity where pid = $1", pid
        ):
            break
        await asyncio.sleep(0.05)
    await conn.execute("select pgpulse.set_wakeups(false)")
    assert await conn.fetchval("select pg_sequence_last_value('pgpulse.wakeups')") == 0
    pids = await conn.fetch("select pid from pgpulse.listeners")
    assert [r["pid"] for r in pids] == [conn.get_server_pid()]


async def test_upgrade_moves_watched_tables_to_their_own_capture_function(pg_server):
    admin = await asyncpg.connect(pg_server.dsn())
    await admin.execute("create database schema_rewatch")
    await admin.close()
    conn = await asyncpg.connect(pg_server.dsn("schema_rewatch"))
    try:
        await conn.execute(migrations()[0][2])  # a version 1 database...
        await conn.execute("create table docs (id int primary key, secret text)")
        await conn.execute(
            "select pgpulse.watch('docs', 'rows', null, array['secret'])"
        )
        await conn.execute("insert into docs values (1, 'x')")
        await install_schema(conn)  # ...upgraded in place
        await conn.execute("insert into docs values (2, 'y')")
        funcs = await conn.fetch(
            "select distinct tgfoid::regproc::text as f from pg_trigger "
            "where tgrelid = 'docs'::regclass and not tgisinternal"
        )
        oid = await conn.fetchval("select 'docs'::regclass::oid")
        assert [r["f"] for r in funcs] == [f"pgpulse.capture_public_docs_{oid}"]
        rows = await conn.fetch(
            'select "row"::text as r from pgpulse.changes order by id'
        )
        assert [r["r"] for r in rows] == ['{"id": 1}', '{"id": 2}']
        assert await capture.unwatch(conn, "docs")
        assert (
            await conn.fetchval(
                "select count(*) from pg_proc where proname like 'capture_public_docs%'"
            )
            == 0
        )
    finally:
        await conn.close()
        admin = await asyncpg.connect(pg_server.dsn())
        await admin.execute("drop database schema_rewatch with (force)")
        await admin.close()


async def test_a_stopped_listener_stops_writers_notifying(conn, database):
    listener = Listener(database, lambda batch, final: None, lambda name: name)
    task = asyncio.create_task(listener.run())
    await listener.connected.wait()
    assert await conn.fetchval("select pg_sequence_last_value('pgpulse.wakeups')") == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await conn.fetchval("select pg_sequence_last_value('pgpulse.wakeups')") == 0
    assert await conn.fetchval("select count(*) from pgpulse.listeners") == 0


async def test_the_listener_outlives_an_unexpected_error_and_re_reads(conn, database):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    calls: list[list[int]] = []
    raised: list[bool] = []

    def on_batch(batch: Any, final: bool) -> None:
        ids = [orjson.loads(c.row)["id"] for c in batch.changes]
        if ids:
            calls.append(ids)
        if ids and not raised:
            raised.append(True)
            raise RuntimeError("a bug downstream")

    listener = Listener(database, on_batch, lambda name: name, backoff_max=0.2)
    task = asyncio.create_task(listener.run())
    try:
        await listener.connected.wait()
        calls.clear()
        await conn.execute("insert into docs values (1)")
        for _ in range(100):
            if len(calls) >= 2 and calls[-1] == [1]:
                break
            await asyncio.sleep(0.05)
        assert not task.done()
        assert calls[0] == [1] and calls[-1] == [1]  # the same batch, read again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
