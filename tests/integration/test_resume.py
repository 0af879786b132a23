"""Resume by Last-Event-ID on any gateway process; reset when the log was pruned;
no loss when PostgreSQL restarts under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import asyncpg
import httpx
import pytest

from pgpulse import capture
from pgpulse.log import prune
from tests.gateway import SSEStream


async def _docs(conn: asyncpg.Connection, source: str = "trigger") -> None:
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs", source=source)


async def test_client_resumes_exactly_the_missed_changes_on_another_gateway(
    conn, gateway_factory
):
    await _docs(conn)
    gw1 = gateway_factory()
    gw2 = gateway_factory()
    async with SSEStream(gw1.url, ["docs"]) as stream:
        await stream.next_event()
        await conn.execute("insert into docs select g from generate_series(1, 10) g")
        await stream.changes(10)
        last_id = stream.last_id
    for i in range(11, 1011):
        await conn.execute("insert into docs values ($1)", i)
    async with SSEStream(gw2.url, ["docs"], last_event_id=last_id) as stream:
        ready = await stream.next_event()
        assert ready.event == "ready"
        assert ready.data["resumed"] is True
        events = await stream.changes(1000, timeout=30)
        assert [e.data["pk"]["id"] for e in events] == list(range(11, 1011))
        await stream.expect_nothing(0.5)
        # And it is live afterwards.
        await conn.execute("insert into docs values (5000)")
        (live,) = await stream.changes(1)
        assert live.data["pk"]["id"] == 5000


async def test_resume_from_the_middle_of_a_statement_with_query_parameter(
    conn, gateway_factory
):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        await stream.next_event()
        await conn.execute("insert into docs select g from generate_series(1, 10) g")
        first = await stream.changes(4)
    cursor = first[-1].id
    await conn.execute("insert into docs values (11)")
    async with SSEStream(gw.url, ["docs"], last_event_id=cursor, header=False) as s:
        await s.next_event()
        rest = await s.changes(7)
        assert [e.data["pk"]["id"] for e in rest] == list(range(5, 12))
        await s.expect_nothing(0.5)


async def test_resume_past_a_pruned_log_gets_an_explicit_reset(conn, gateway_factory):
    await _docs(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["docs"]) as stream:
        await stream.next_event()
        await conn.execute("insert into docs values (1)")
        await stream.changes(1)
        cursor = stream.last_id
    await conn.execute("insert into docs values (2)")
    result = await prune.prune(conn, keep_rows=0)
    assert result.deleted == 2
    async with SSEStream(gw.url, ["docs"], last_event_id=cursor) as stream:
        assert (await stream.next_event()).event == "ready"
        reset = await stream.next_event()
        assert reset.event == "reset"
        assert "pruned" in reset.data["reason"]
        await conn.execute("insert into docs values (3)")
        (live,) = await stream.changes(1)
        assert live.data["pk"]["id"] == 3


async def test_malformed_last_event_id_is_a_clear_400(conn, gateway_factory):
    await _docs(conn)
    gw = gateway_factory()
    async with httpx.AsyncClient() as client:
        for bad in ["garbage", "1:2:3~", "5:3:", "1:9:4~1:9:4~x", "'; drop table docs"]:
            r = await client.get(
                gw.url + "/v1/events",
                params={"sub": "docs"},
                headers={"last-event-id": bad},
            )
            assert r.status_code == 400, bad
            assert "not a pgpulse cursor" in r.json()["error"]
    assert await conn.fetchval("select count(*) from docs") == 0


@pytest.mark.parametrize("source", ["trigger", "wal"])
async def test_postgres_restart_under_load_loses_and_duplicates_nothing(
    database, pg_server, gateway_factory, source
):
    # With the wal source the restart also cuts the replication stream and the
    # decoder's log writes mid-batch: the slot replays, decoded_lsn dedups.
    setup = await asyncpg.connect(database)
    await _docs(setup, source)
    await setup.close()
    gw = gateway_factory("--keepalive", "1")
    streams = [SSEStream(gw.url, ["docs"]) for _ in range(3)]
    for s in streams:
        await s.__aenter__()
        await s.next_event()
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        next_id = n * 100_000
        conn = None
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(database, timeout=2)
                next_id += 1
                await conn.execute("insert into docs values ($1)", next_id)
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
            ):
                # The server went away mid-statement; whether that insert
                # committed is for the table to say (checked at the end).
                conn = None
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)
        if conn is not None:
            await conn.close()

    received: list[list[int]] = [[] for _ in streams]

    async def reader(i: int) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                ev = await streams[i].next_event(timeout=8)
                if ev.event == "change":
                    received[i].append(ev.data["pk"]["id"])

    readers = [asyncio.create_task(reader(i)) for i in range(len(streams))]
    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    await asyncio.sleep(1.5)
    await asyncio.to_thread(pg_server.cluster.restart, 0.5)
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*writers)
    await asyncio.gather(*readers)
    check = await asyncpg.connect(database)
    try:
        in_table = sorted(r["id"] for r in await check.fetch("select id from docs"))
    finally:
        await check.close()
    assert len(in_table) > 100
    for got in received:
        assert len(got) == len(set(got)), "duplicates after restart"
        assert sorted(got) == in_table
    for s in streams:
        await s.close()


async def test_frozen_database_connection_is_detected_and_replaced(
    conn, gateway_factory
):
    """A backend that stops answering (socket still open) is found by keepalive."""
    await _docs(conn)
    gw = gateway_factory("--keepalive", "0.5", "--query-timeout", "1")
    pid = await conn.fetchval(
        "select pid from pg_stat_activity where application_name = 'pgpulse-listener'"
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        async with SSEStream(gw.url, ["docs"]) as stream:
            await stream.next_event()
            await conn.execute("insert into docs values (1)")
            (event,) = await stream.changes(1, timeout=15)
            assert event.data["pk"] == {"id": 1}
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "listener lost the database" in gw.log()


async def test_serve_prunes_the_log_by_itself(conn, gateway_factory):
    await _docs(conn)
    gateway_factory("--keep-rows", "5", "--prune-every", "0.5")
    await conn.execute("insert into docs select generate_series(1, 40)")
    for _ in range(50):
        if await conn.fetchval("select count(*) from pgpulse.changes") == 5:
            break
        await asyncio.sleep(0.2)
    assert await conn.fetchval("select count(*) from pgpulse.changes") == 5
    assert await conn.fetchval("select pruned_xid::text::bigint > 0 from pgpulse.state")
