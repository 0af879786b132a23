"""Python consumers: the SSE client resumes across a gateway restart."""

from __future__ import annotations

import asyncio

import pytest

import pgpulse
from pgpulse import Client, capture


async def test_client_survives_a_gateway_restart_without_loss(conn, gateway_factory):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    gw = gateway_factory()
    seen: list[int] = []
    async with Client(gw.url, backoff_max=0.5) as client:
        stream = client.subscribe("docs")

        async def take(n: int) -> None:
            while len(seen) < n:
                event = await anext(stream)
                assert event.kind == "change"
                assert event.pk is not None
                seen.append(event.pk["id"])

        reader = asyncio.create_task(take(1))
        await asyncio.sleep(1)
        await conn.execute("insert into docs values (1)")
        await asyncio.wait_for(reader, 10)
        gw.kill()
        await conn.execute("insert into docs select generate_series(2, 50)")
        gw.start()
        await asyncio.wait_for(take(50), 20)
        await stream.aclose()
    assert seen == list(range(1, 51))


async def test_client_reports_a_rejected_subscription(conn, gateway_factory):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    gw = gateway_factory()
    async with Client(gw.url) as client:
        with pytest.raises(pgpulse.ValidationError, match="column 'nope'"):
            await anext(client.subscribe("docs:nope=eq.1"))


async def test_in_process_consumer_yields_changes_from_the_database(conn, database):
    await conn.execute("create table docs (id int primary key, k int)")
    await capture.watch(conn, "docs")
    stream = pgpulse.changes(database, "docs:k=eq.1")

    async def first_event() -> pgpulse.Event:
        return await anext(stream)

    # Without a last event id the stream starts "now", once its gateway has
    # started (no fixed time on a loaded machine): write pairs until one arrives.
    first = asyncio.create_task(first_event())
    deadline = asyncio.get_running_loop().time() + 30
    key = 0
    while not first.done() and asyncio.get_running_loop().time() < deadline:
        key += 2
        await conn.execute("insert into docs values ($1, 2), ($2, 1)", key, key + 1)
        await asyncio.wait([first], timeout=0.5)
    event = await asyncio.wait_for(first, 10)
    assert event.kind == "change" and event.row is not None
    assert event.row["k"] == 1 and event.pk == {"id": event.row["id"]}
    await stream.aclose()
