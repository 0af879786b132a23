"""A resume whose catch-up read fails must never lose a change.

Before: the client stayed on the bus, newer live events (ids past the gap)
reached its socket, its Last-Event-ID moved past the gap and resuming again
returned nothing; 0 of 100 missed changes arrived, 10 of 10 later ones did.
Now catch-up and live delivery are one ordered sequence: a failed catch-up
ends the stream with an ``error`` event and no later id, and the client
resumes from its own last id.  Faults: the catch-up backend killed while it
waits on a lock, a lock held past the catch-up's timeout, the database
stopped during a resume.  Clients: raw SSE, the Python client, the in-process
``changes``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

import pgpulse
from pgpulse import capture
from tests.gateway import SSEStream


async def _docs(conn: asyncpg.Connection) -> None:
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs")


async def _kill_catch_up_when_blocked(
    database: str, application: str = "pgpulse"
) -> None:
    """Wait for a pgpulse backend blocked on a lock reading the log; kill it."""
    admin = await asyncpg.connect(database)
    try:
        async with asyncio.timeout(20):
            while True:
                pid = await admin.fetchval(
                    "select pid from pg_stat_activity "
                    "where wait_event_type = 'Lock' and application_name = $1 "
                    "and query like '%pgpulse.changes%'",
                    application,
                )
                if pid is not None:
                    await admin.execute("select pg_terminate_backend($1)", pid)
                    return
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def test_sse_catch_up_killed_mid_read_ends_with_an_error_and_no_later_id(
    conn, database, gateway_factory
):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        cursor = (await stream.next_event()).id
    await conn.execute(
        "insert into docs select g, 'missed' from generate_series(1, 100) g"
    )
    locker = await asyncpg.connect(database)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("lock table pgpulse.changes in access exclusive mode")
    async with SSEStream(gw.url, ["docs"], last_event_id=cursor) as stream:
        assert (await stream.next_event()).event == "ready"
        await _kill_catch_up_when_blocked(database)
        await tx.rollback()
        await locker.close()
        await conn.execute(
            "insert into docs select g, 'later' from generate_series(101, 110) g"
        )
        event = await stream.next_event(timeout=15)
        # The stream ends with the reason; no change (and no id) after the gap.
        assert event.event == "error", event
        assert "reading the missed changes from the log failed" in event.data["reason"]
        assert stream.last_id == cursor
        with contextlib.suppress(EOFError):
            extra = await stream.next_event(timeout=2)
            raise AssertionError(f"event after the error: {extra}")
    # Resuming from the client's own last id gets everything, once.
    async with SSEStream(gw.url, ["docs"], last_event_id=stream.last_id) as again:
        await again.next_event()
        got = [e.data["pk"]["id"] for e in await again.changes(110)]
        assert got == list(range(1, 111))
        await again.expect_nothing(0.5)


async def test_python_client_resumes_after_a_catch_up_lock_timeout(
    conn, database, gateway_factory
):
    """A lock held past the catch-up's timeout: the Python client gets the
    error, waits and resumes; every committed change arrives exactly once."""
    await _docs(conn)
    gw = gateway_factory("--query-timeout", "1")
    async with SSEStream(gw.url, ["docs"]) as stream:
        cursor = (await stream.next_event()).id
    await conn.execute(
        "insert into docs select g, 'missed' from generate_series(1, 100) g"
    )
    locker = await asyncpg.connect(database)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("lock table pgpulse.changes in access share mode")
    await locker.execute("lock table pgpulse.changes in access exclusive mode")

    async def release_later() -> None:
        await asyncio.sleep(3)  # past the 1 s lock timeout, at least once
        await tx.rollback()
        await locker.close()
        await conn.execute(
            "insert into docs select g, 'later' from generate_series(101, 110) g"
        )

    seen: list[int] = []
    releaser = asyncio.create_task(release_later())
    async with pgpulse.Client(gw.url) as client:
        async with asyncio.timeout(60):
            async for event in client.subscribe("docs", last_event_id=cursor):
                if event.kind == "change":
                    seen.append(event.pk["id"])  # type: ignore[index]
                if len(seen) >= 110:
                    break
    await releaser
    assert seen == list(range(1, 111))
    assert "reading the missed changes from the log failed" in gw.log()


async def test_database_stopped_during_a_resume_loses_and_duplicates_nothing(
    conn, database, pg_server, gateway_factory
):
    """PostgreSQL stops while a client is reading a 20,000-change backlog (a
    1 MB outbox keeps the gateway's catch-up read open, waiting for the slow
    reader)."""
    await _docs(conn)
    gw = gateway_factory("--query-timeout", "2", "--outbox-limit", "1048576")
    async with SSEStream(gw.url, ["docs"]) as stream:
        cursor = (await stream.next_event()).id
    await conn.execute(
        "insert into docs select g, repeat('x', 200) from generate_series(1, 20000) g"
    )
    await conn.close()
    seen: list[int] = []
    started = asyncio.Event()

    async def consume() -> None:
        async with pgpulse.Client(gw.url) as client:
            async for event in client.subscribe("docs", last_event_id=cursor):
                if event.kind == "change":
                    seen.append(event.pk["id"])  # type: ignore[index]
                    if len(seen) == 100:
                        started.set()
                        await asyncio.sleep(0.5)  # a slow reader, mid-backlog
                if len(seen) >= 20100:
                    return

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(30):
        await started.wait()
    await asyncio.to_thread(pg_server.cluster.stop, "fast")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg_server.cluster.start)
    writer = await asyncpg.connect(database)
    try:
        await writer.execute(
            "insert into docs select g, 'later' from generate_series(20001, 20100) g"
        )
    finally:
        await writer.close()
    async with asyncio.timeout(120):
        await consumer
    assert seen == list(range(1, 20101))


async def test_in_process_changes_resume_after_the_catch_up_is_killed(conn, database):
    """The catch-up's backend is terminated half-way through a 60,000-change
    backlog: the in-process consumer resumes from its last change and ends
    with every change exactly once."""
    await _docs(conn)
    cursor = await conn.fetchval("select pg_current_snapshot()::text")
    total = 60_000
    await conn.execute(
        "insert into docs select g, repeat('x', 300) from generate_series(1, $1) g",
        total,
    )
    stream: Any = pgpulse.changes(database, "docs", last_event_id=cursor)
    seen: list[int] = []
    killed = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            seen.append(event.pk["id"])
            if len(seen) >= total + 10:
                return

    async def kill_catch_up() -> None:
        admin = await asyncpg.connect(database)
        try:
            async with asyncio.timeout(30):
                while True:
                    pid = await admin.fetchval(
                        "select pid from pg_stat_activity "
                        "where application_name = 'pgpulse-consumer' "
                        "and backend_xid is null and xact_start is not null "
                        "and query like '%c.id > $5%'"
                    )
                    if pid is not None:
                        await admin.execute("select pg_terminate_backend($1)", pid)
                        killed.set()
                        return
                    await asyncio.sleep(0.005)
        finally:
            await admin.close()

    consumer = asyncio.create_task(consume())
    try:
        await kill_catch_up()
        await conn.execute(
            "insert into docs select g, 'later' from generate_series($1::int, $2) g",
            total + 1,
            total + 10,
        )
        async with asyncio.timeout(120):
            await consumer
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()
    assert killed.is_set()
    assert seen == list(range(1, total + 11))
