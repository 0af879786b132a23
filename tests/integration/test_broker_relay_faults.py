"""The relay under a fault at each step of a large read.

One transaction of 1,200 changes is read in three chunks (500, 500, 200);
the relay's last change of each chunk is held back until the read ends, so a
fault can land before, on or after a held change.  At the n-th publish one
fault is injected at the relay's own boundary (the NATS server and the
database stay real):

* ``refused``: JetStream does not take the message (nothing stored);
* ``answer lost``: the message is stored but its acknowledgement never comes;
* ``database lost``: the relay's listener connection is terminated.

Writers keep committing while the relay recovers.  The stream must then hold
every change exactly once, each transaction's changes in log order, and reads
chained as gateways follow them: each read starts where the one before ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats
import orjson
import pytest

from pgpulse.broker.messages import END, MSG_ID, PREV, stream_name
from pgpulse.broker.relay import Relay
from pgpulse.log.cursor import Cursor
from tests.integration.test_broker_relay import _schema

BIG = 1_200
"""Changes in the first transaction: chunks of 500, 500 and 200."""
LATER = 5
"""Transactions committed as the fault lands (each of 3 changes)."""

Fault = Callable[["_FaultyJetStream", tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class _FaultyJetStream:
    """The relay's JetStream context, with one fault at the ``at``-th publish."""

    def __init__(self, js: Any, at: int, fault: Fault) -> None:
        self.js, self.at, self.fault = js, at, fault
        self.calls = 0
        self.struck = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.js, name)

    async def publish_async(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls != self.at:
            return await self.js.publish_async(*args, **kwargs)
        try:
            return await self.fault(self, args, kwargs)
        finally:
            self.struck.set()


async def _refused(js: _FaultyJetStream, args: Any, kwargs: Any) -> Any:
    raise nats.errors.TimeoutError


async def _answer_lost(js: _FaultyJetStream, args: Any, kwargs: Any) -> Any:
    ack = await js.js.publish_async(*args, **kwargs)
    await ack  # stored in the stream
    lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    lost.set_exception(nats.errors.TimeoutError())
    return lost


def _database_lost(dsn: str) -> Fault:
    async def fault(js: _FaultyJetStream, args: Any, kwargs: Any) -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            ended = await conn.fetchval(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where application_name = 'pgpulse-relay-listener'"
            )
            assert ended == 1
        finally:
            await conn.close()
        return await js.js.publish_async(*args, **kwargs)

    return fault


async def _stream(
    url: str, database: str
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        name = stream_name(database)
        info = await js.stream_info(name)
        out: list[tuple[dict[str, Any], dict[str, str]]] = []
        if not info.state.messages:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(name, seq)
            assert message.data is not None
            out.append((orjson.loads(message.data), dict(message.headers or {})))
        return out
    finally:
        await nc.close()


async def _write_later(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(LATER):
            async with conn.transaction():
                await conn.execute("update jobs set n = n + 1 where id = $1", n + 1)
                await conn.execute(
                    "insert into jobs (id, n) values ($1, 0)", BIG + 1 + n
                )
                await conn.execute("delete from jobs where id = $1", BIG + 1 + n)
    finally:
        await conn.close()


FAULTS = {
    "refused": lambda dsn: _refused,
    "answer lost": lambda dsn: _answer_lost,
    "database lost": _database_lost,
}


@pytest.mark.parametrize(
    ("fault", "at"),
    [
        ("refused", 1),
        ("refused", 250),
        ("refused", 500),
        ("refused", BIG),
        ("answer lost", 250),
        ("answer lost", BIG),
        ("database lost", 250),
        ("database lost", 750),
    ],
    ids=lambda v: str(v).replace(" ", "-"),
)
async def test_a_fault_at_any_publish_of_a_read_loses_reorders_and_doubles_nothing(
    conn, database, nats_server, fault, at
):
    await _schema(conn)
    relay = Relay(database, nats_server.url, lock_poll=0.1)
    running = asyncio.create_task(relay.run())
    try:
        deadline = time.monotonic() + 20
        while relay.stats.state != "active" or relay._listener is None:
            assert time.monotonic() < deadline, "the relay did not become active"
            await asyncio.sleep(0.05)
        faulty = _FaultyJetStream(relay._js, at, FAULTS[fault](database))
        relay._js = faulty  # type: ignore[assignment]
        await conn.execute(
            "insert into jobs (id, n) select g, 0 from generate_series(1, $1) g", BIG
        )
        relay._listener.wake()
        async with asyncio.timeout(20):
            await faulty.struck.wait()
        await _write_later(database)
        relay._listener.wake()
        logged = await conn.fetch(
            "select id, xid::text::bigint as xid from pgpulse.changes"
        )
        assert len(logged) == BIG + 3 * LATER
        name = await conn.fetchval("select current_database()")
        deadline = time.monotonic() + 30
        while True:
            published = await _stream(nats_server.url, name)
            if len(published) >= len(logged) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    ids = [doc["id"] for doc, _ in published]
    assert len(ids) == len(set(ids)), "a change was published twice"
    assert sorted(ids) == sorted(r["id"] for r in logged), "a change is missing"
    # One transaction's changes in log order (the held-back change of a chunk
    # must not overtake the rest of its read when that read is read again).
    xid_of = {r["id"]: r["xid"] for r in logged}
    last: dict[int, int] = {}
    for change_id in ids:
        assert last.get(xid_of[change_id], 0) < change_id, (
            f"change {change_id} published after a later change of its transaction"
        )
        last[xid_of[change_id]] = change_id
    # Reads chained as gateways follow them: a read's messages share its
    # start; the next read starts at the snapshot its last message ended.
    ended_at: str | None = None
    for doc, headers in published:
        assert headers[MSG_ID] == str(doc["id"])
        if ended_at is not None:
            assert headers[PREV] == ended_at, (
                "a read does not start where the last ended"
            )
            ended_at = None
        if headers.get(END):
            ended_at = str(Cursor.decode(doc["event_id"]).snap)
    assert ended_at is not None, "the stream's last read has no end"
