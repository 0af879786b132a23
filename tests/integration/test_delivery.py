"""Committed changes reach SSE clients of a real gateway process: once, in order."""

from __future__ import annotations

import asyncio
import random
import socket

import asyncpg
import pytest

from pgpulse import capture
from tests.gateway import SSEStream


async def _docs(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "create table docs (id int primary key, shipment_id int, title text, "
        "version int not null default 0)"
    )
    await capture.watch(conn, "docs")


async def test_first_event_is_ready_and_every_later_commit_arrives(
    conn, gateway_factory
):
    await _docs(conn)
    gw = gateway_factory()
    for i in range(20):
        async with SSEStream(gw.url, ["docs"]) as stream:
            ready = await stream.next_event()
            assert ready.event == "ready"
            assert ready.data["resumed"] is False
            assert ready.id == ready.data["cursor"]
            # Write immediately after ready: no window where it can be lost.
            await conn.execute("insert into docs (id) values ($1)", i)
            (change,) = await stream.changes(1, timeout=5)
            assert change.data["pk"] == {"id": i}
            assert change.data["op"] == "INSERT"


async def test_rolled_back_transaction_emits_nothing(conn, gateway_factory):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        await stream.next_event()
        async with conn.transaction():
            await conn.execute("insert into docs (id) values (1)")
            await conn.execute("update docs set title = 'x' where id = 1")
        tr = conn.transaction()
        await tr.start()
        await conn.execute("insert into docs (id) values (2)")
        await tr.rollback()
        await conn.execute("insert into docs (id) values (3)")
        events = await stream.changes(3)
        assert [(e.data["op"], e.data["pk"]["id"]) for e in events] == [
            ("INSERT", 1),
            ("UPDATE", 1),
            ("INSERT", 3),
        ]
        await stream.expect_nothing(0.5)


async def test_ten_thousand_row_insert_select_arrives_whole_and_in_order(
    conn, gateway_factory
):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        await stream.next_event()
        await conn.execute(
            "insert into docs (id, title) select g, 'row ' || g "
            "from generate_series(1, 10000) g"
        )
        events = await stream.changes(10_000, timeout=60)
        assert [e.data["pk"]["id"] for e in events] == list(range(1, 10_001))
        assert events[-1].data["row"]["title"] == "row 10000"
        await stream.expect_nothing(0.5)


async def test_one_megabyte_row_arrives_intact(conn, gateway_factory):
    await conn.execute("create table blobs (id int primary key, body text)")
    await capture.watch(conn, "blobs")
    gw = gateway_factory()
    body = "".join(
        random.choice('abcdefghij"\\\n\u00e9\u4e2d') for _ in range(1_000_000)
    )
    async with SSEStream(gw.url, ["blobs"]) as stream:
        await stream.next_event()
        await conn.execute("insert into blobs values (1, $1)", body)
        (event,) = await stream.changes(1)
        assert event.data["row"]["body"] == body


async def test_concurrent_writers_every_change_exactly_once_in_row_order(
    conn, database, gateway_factory
):
    """8 writers, random transaction lengths, commits interleaved, hot rows."""
    await _docs(conn)
    await conn.execute(
        "insert into docs (id, shipment_id) "
        "select g, g % 3 from generate_series(1, 20) g"
    )
    gw = gateway_factory()
    streams = [SSEStream(gw.url, ["docs"]) for _ in range(3)]
    for s in streams:
        await s.__aenter__()
        assert (await s.next_event()).event == "ready"
    rng = random.Random(42)
    committed_ops = 0

    async def writer(n: int) -> int:
        done = 0
        next_id = 1000 + n * 1000
        c = await asyncpg.connect(database)
        try:
            for _ in range(25):
                ops = 0
                try:
                    async with c.transaction():
                        for _ in range(rng.randint(1, 4)):
                            if rng.random() < 0.7:
                                await c.execute(
                                    "update docs set version = version + 1 "
                                    "where id = $1",
                                    rng.randint(1, 20),
                                )
                            else:
                                next_id += 1
                                await c.execute(
                                    "insert into docs (id, shipment_id) values ($1, 1)",
                                    next_id,
                                )
                            ops += 1
                            await asyncio.sleep(rng.random() * 0.01)
                except asyncpg.DeadlockDetectedError:
                    continue  # rolled back: none of its changes may appear
                done += ops
        finally:
            await c.close()
        return done

    counts = await asyncio.gather(*(writer(n) for n in range(8)))
    committed_ops = sum(counts)
    table = {
        r["id"]: r["version"] for r in await conn.fetch("select id, version from docs")
    }
    for stream in streams:
        events = await stream.changes(committed_ops, timeout=60)
        await stream.expect_nothing(0.5)
        ids = [int(str(e.id).rsplit("~", 1)[1]) for e in events]
        assert len(set(ids)) == len(ids), "duplicate change delivered"
        state: dict[int, int] = {}
        for e in events:
            pk = e.data["pk"]["id"]
            version = e.data["row"]["version"]
            if e.data["op"] == "UPDATE":
                # Per-row commit order: each update bumps the version by one.
                assert version == e.data["old"]["version"] + 1
                assert state.get(pk, e.data["old"]["version"]) == version - 1
            state[pk] = version
        rebuilt = {pk: 0 for pk in range(1, 21)} | state
        assert rebuilt == table
        await stream.close()


async def test_long_open_transaction_does_not_delay_other_commits(
    conn, database, gateway_factory
):
    await _docs(conn)
    gw = gateway_factory()
    blocker = await asyncpg.connect(database)
    tr = blocker.transaction()
    await tr.start()
    await blocker.execute("insert into docs (id) values (999)")
    loop = asyncio.get_running_loop()
    try:
        async with SSEStream(gw.url, ["docs"]) as stream:
            await stream.next_event()
            started = loop.time()
            i = 0
            while loop.time() - started < 30:
                i += 1
                sent = loop.time()
                await conn.execute("insert into docs (id) values ($1)", i)
                (event,) = await stream.changes(1, timeout=2)
                assert event.data["pk"] == {"id": i}
                assert loop.time() - sent < 2
                await asyncio.sleep(1)
            await tr.commit()
            (late,) = await stream.changes(1, timeout=5)
            assert late.data["pk"] == {"id": 999}
    finally:
        if not blocker.is_closed():
            await blocker.close()


async def test_filtered_client_never_sees_other_shipments(conn, gateway_factory):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs:shipment_id=eq.42"]) as stream:
        await stream.next_event()
        await conn.execute(
            "insert into docs (id, shipment_id, title) values (1, 42, 'a')"
        )
        await conn.execute(
            "insert into docs (id, shipment_id, title) values (2, 7, 's')"
        )
        await conn.execute("update docs set title = 'b' where id = 1")
        await conn.execute("update docs set title = 't' where id = 2")
        # Moves out of 42: announced as a DELETE of the old row, new row hidden.
        await conn.execute(
            "update docs set shipment_id = 7, title = 'gone' where id = 1"
        )
        # Moves into 42: announced as an INSERT of the new row.
        await conn.execute("update docs set shipment_id = 42 where id = 2")
        await conn.execute("delete from docs where shipment_id = 7")
        await conn.execute("delete from docs where shipment_id = 42")
        events = await stream.changes(5)
        await stream.expect_nothing(0.5)
    got = [
        (e.data["op"], e.data["pk"]["id"], e.data.get("moved", False)) for e in events
    ]
    assert got == [
        ("INSERT", 1, False),
        ("UPDATE", 1, False),
        ("DELETE", 1, True),
        ("INSERT", 2, True),
        ("DELETE", 2, False),
    ]
    for e in events:
        for row in (e.data["row"], e.data["old"]):
            assert row is None or row["shipment_id"] == 42
    assert events[2].data["row"] is None


async def test_idle_gateway_only_sends_listener_keepalives(
    conn, database, pg_server, gateway_factory
):
    await _docs(conn)
    await conn.execute("create role idle_gw login superuser")
    dsn = database.replace("postgres@", "idle_gw@")
    gw = gateway_factory("--keepalive", "3", "--prune-every", "1", dsn=dsn)
    async with SSEStream(gw.url, ["docs"]) as stream:
        await stream.next_event()
        await asyncio.sleep(1)
        await conn.execute("select pg_stat_statements_reset()")
        await asyncio.sleep(10)
        calls = await conn.fetchval(
            "select coalesce(sum(calls), 0) from pg_stat_statements s "
            "join pg_roles r on r.oid = s.userid where r.rolname = 'idle_gw'"
        )
    # 10 s at one keepalive read per 3 s: 3 or 4 statements, nothing per client.
    assert 1 <= calls <= 4, calls


async def test_stalled_client_is_cut_off_while_others_keep_receiving(
    conn, gateway_factory
):
    await _docs(conn)
    await conn.execute("create table blobs (id int primary key, body text)")
    await capture.watch(conn, "blobs")
    gw = gateway_factory("--outbox-limit", "262144")
    # A client that sends its request and never reads a byte (with a tiny
    # receive buffer, so the kernel does not absorb the backlog for it).
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", gw.port))
    raw.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=raw)
    writer.write(
        b"GET /v1/events?sub=docs&sub=blobs HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    await writer.drain()
    streams = [SSEStream(gw.url, ["docs"]) for _ in range(100)]
    await asyncio.gather(*(s.__aenter__() for s in streams))
    await asyncio.gather(*(s.next_event() for s in streams))
    rss_before = gw.rss_bytes()
    # 40 rounds: 1 MB for the stalled client only, and 10 rows for everyone.
    for batch in range(40):
        await conn.execute(
            "insert into blobs select g, repeat('x', 100000) "
            "from generate_series($1, $1 + 9) g",
            batch * 10,
        )
        await conn.execute(
            "insert into docs (id, title) select g, 'ok' "
            "from generate_series($1, $1 + 9) g",
            batch * 10,
        )
        results = await asyncio.gather(*(s.changes(10, timeout=60) for s in streams))
        assert all(len(r) == 10 for r in results)
    assert "disconnecting" in gw.log() and "fell" in gw.log()
    # The stalled client's socket was closed by the gateway.
    got = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                got += chunk
    except (TimeoutError, ConnectionResetError):
        pytest.fail("stalled client was not disconnected")
    writer.close()
    growth = gw.rss_bytes() - rss_before
    # 40 MB went to a client that never read: memory must not hold it.
    assert growth < 60 * 1024 * 1024, growth
    await asyncio.gather(*(s.close() for s in streams))
