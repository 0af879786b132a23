"""Resumes behind the broker: read from the stream while it holds them.

A client that comes back with its Last-Event-ID to a gateway behind the
broker gets what it missed from the relay's JetStream stream, not from the
database's log (a mass reconnect after a gateway dies stays off the
database); a position the stream no longer holds is read from the log.
Either way: every change exactly once, each row's in commit order, only the
client's table and rows.  Counted by the gateway's ``pgpulse_resumes``.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import asyncpg
import httpx
import nats

from pgpulse import capture
from pgpulse.broker.messages import stream_name
from tests.gateway import GatewayProcess, SSEStream
from tests.integration.test_broker_relay import RelayProcess, _active


async def _schema(conn: Any) -> None:
    await conn.execute("create table jobs (id int primary key, n int)")
    await conn.execute("create table notes (id int primary key, body text)")
    await capture.watch(conn, "jobs")
    await capture.watch(conn, "notes")


async def _write(dsn: str, transactions: int, seed: int) -> None:
    """Small transactions on both tables, and one of 700 changes (more than
    one pull of the stream)."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(transactions):
            async with conn.transaction():
                key = rng.randrange(1, 40)
                await conn.execute(
                    "insert into jobs values ($1, 1) on conflict (id) "
                    "do update set n = jobs.n + 1",
                    key,
                )
                await conn.execute(
                    "insert into notes values ($1, 'x') on conflict (id) "
                    "do update set body = notes.body || 'x'",
                    key,
                )
            if n == transactions // 2:
                await conn.execute(
                    "update jobs set n = n + 1 where id = any($1::int[])",
                    list(range(1, 40)),
                )
                await conn.execute(
                    "insert into jobs select g, 0 from generate_series(1000, 1699) g "
                    "on conflict (id) do update set n = jobs.n + 1"
                )
            await asyncio.sleep(0.002)
    finally:
        await conn.close()


async def _resumes(gateway: GatewayProcess) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(gateway.url + "/metrics")).text
    found = re.findall(r'^pgpulse_resumes_total\{source="(\w+)"\} (\S+)$', text, re.M)
    return {source: int(float(value)) for source, value in found}


class _Client:
    def __init__(self, subs: list[str]) -> None:
        self.subs = subs
        self.events: list[Any] = []
        self.last_id: str | None = None

    async def read(self, gateway: GatewayProcess, count: int) -> None:
        """Connect (resuming from the last event id), read until *count*
        changes in all, disconnect."""
        async with SSEStream(gateway.url, self.subs, self.last_id) as stream:
            ready = await stream.next_event()
            assert ready.event == "ready", ready
            if self.last_id is None:
                self.last_id = ready.data["cursor"]
            while len(self.events) < count:
                event = await stream.next_event(timeout=30)
                assert event.event == "change", event
                self.events.append(event)
                self.last_id = event.id


async def _expected(conn: Any, table: str, below: int | None = None) -> list[Any]:
    rows = await conn.fetch(
        "select id, (coalesce(row, old)->>'id')::int as pk from pgpulse.changes "
        "where tbl = $1 order by id",
        table,
    )
    return [r for r in rows if below is None or r["pk"] < below]


def _check(client: _Client, expected: list[Any]) -> None:
    ids = [int(str(e.id).rsplit("~", 1)[1]) for e in client.events]
    assert len(ids) == len(set(ids)), "a change arrived twice"
    assert sorted(ids) == [r["id"] for r in expected], "a change is missing or extra"
    last: dict[int, int] = {}
    for event, change_id in zip(client.events, ids, strict=True):
        key = event.data["pk"]["id"]
        assert last.get(key, 0) < change_id, f"row {key} out of order"
        last[key] = change_id


async def test_a_resume_the_stream_holds_is_read_from_it_not_the_log(
    conn, database, nats_server, tmp_path
):
    await _schema(conn)
    relay = RelayProcess(database, nats_server.url, "relay-1", str(tmp_path))
    gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
    everything, filtered = _Client(["jobs"]), _Client(["jobs:id=lt.20"])
    try:
        await _active(conn)
        first = asyncio.create_task(everything.read(gateway, 40))
        second = asyncio.create_task(filtered.read(gateway, 10))
        await asyncio.sleep(0.5)
        await _write(database, 40, seed=1)
        await asyncio.gather(first, second)
        # Away while more is written; back half-way through (part of what
        # they missed is in the stream, the rest arrives live).
        writing = asyncio.create_task(_write(database, 150, seed=2))
        await asyncio.sleep(0.6)
        total = len(await _expected(conn, "public.jobs"))
        assert total > len(everything.events), "the clients missed nothing"
        await writing
        jobs = await _expected(conn, "public.jobs")
        few = await _expected(conn, "public.jobs", below=20)
        await asyncio.gather(
            everything.read(gateway, len(jobs)), filtered.read(gateway, len(few))
        )
        _check(everything, jobs)
        _check(filtered, few)
        assert await _resumes(gateway) == {"stream": 2, "log": 0}
    finally:
        gateway.kill()
        relay.kill()


async def test_a_resume_older_than_the_stream_is_read_from_the_log(
    conn, database, nats_server, tmp_path
):
    """The stream keeps 2 s: a client away for longer comes back to a gateway
    started meanwhile (its own died), which holds none of it in memory
    either: it resumes from the log."""
    await _schema(conn)
    relay = RelayProcess(
        database,
        nats_server.url,
        "relay-1",
        str(tmp_path),
        ["--broker", nats_server.url, "--max-age", "2s"],
    )
    gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
    client = _Client(["jobs"])
    try:
        await _active(conn)
        first = asyncio.create_task(client.read(gateway, 20))
        await asyncio.sleep(0.5)
        await _write(database, 20, seed=3)
        await first
        gateway.kill()
        await _write(database, 30, seed=4)
        await asyncio.sleep(3.0)  # the stream drops what the client missed
        gateway = GatewayProcess(database, args=["--broker", nats_server.url]).start()
        await _write(database, 30, seed=5)
        jobs = await _expected(conn, "public.jobs")
        await client.read(gateway, len(jobs))
        _check(client, jobs)
        assert await _resumes(gateway) == {"stream": 0, "log": 1}
    finally:
        gateway.kill()
        relay.kill()


async def _replay_consumers(url: str, database: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        consumers = await nc.jetstream().consumers_info(stream_name(database))
        return [c.name for c in consumers if c.name.startswith("pgpulse-replay-")]
    finally:
        await nc.close()


async def test_a_resume_whose_stream_read_fails_half_way_loses_nothing(
    conn, database, nats_server, tmp_path
):
    """The stream read of a large backlog fails half-way (its consumer is
    deleted while the slow client holds the replay back): the gateway ends
    that client's stream with the reason; the client comes back with its
    last event id and gets the rest, every change once."""
    await _schema(conn)
    relay = RelayProcess(database, nats_server.url, "relay-1", str(tmp_path))
    gateway = GatewayProcess(
        database, args=["--broker", nats_server.url, "--outbox-limit", "65536"]
    ).start()
    client = _Client(["jobs"])
    name = await conn.fetchval("select current_database()")
    try:
        await _active(conn)
        first = asyncio.create_task(client.read(gateway, 5))
        await asyncio.sleep(0.5)
        await _write(database, 5, seed=6)
        await first
        # Connected before the writes, this client hears of the last one only
        # once the gateway has dispatched everything before it.
        async with SSEStream(gateway.url, ["notes"]) as live:
            await live.next_event()
            for n in range(6):  # 60,000 changes: megabytes, more than sockets hold
                await conn.execute(
                    "insert into jobs select g, 0 "
                    "from generate_series($1::int, $2::int) g",
                    10_000 + n * 10_000,
                    19_999 + n * 10_000,
                )
            await conn.execute("insert into notes values (0, 'done')")
            while (await live.next_event(timeout=60)).data["pk"] != {"id": 0}:
                pass
        jobs = await _expected(conn, "public.jobs")
        why = []
        async with SSEStream(gateway.url, client.subs, client.last_id) as stream:
            assert (await stream.next_event()).event == "ready"
            for _ in range(100):
                event = await stream.next_event()
                client.events.append(event)
                client.last_id = event.id
            stream.reading.clear()
            deadline = asyncio.get_running_loop().time() + 20
            while not (consumers := await _replay_consumers(nats_server.url, name)):
                assert asyncio.get_running_loop().time() < deadline, (
                    await _resumes(gateway),
                    gateway.log()[-1500:],
                )
                await asyncio.sleep(0.1)
            nc = await nats.connect(nats_server.url)
            try:
                for consumer in consumers:
                    await nc.jetstream().delete_consumer(stream_name(name), consumer)
            finally:
                await nc.close()
            stream.reading.set()
            while True:
                try:
                    event = await stream.next_event(timeout=30)
                except EOFError:
                    break
                if event.event != "change":
                    why.append(event.data)
                    continue
                client.events.append(event)
                client.last_id = event.id
        assert len(client.events) < len(jobs), "the stream read did not fail"
        assert any("from the stream failed" in str(w) for w in why), why
        await client.read(gateway, len(jobs))
        _check(client, jobs)
        assert await _resumes(gateway) == {"stream": 2, "log": 0}
    finally:
        gateway.kill()
        relay.kill()
