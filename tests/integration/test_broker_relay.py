"""``pgpulse relay``: the log published to NATS JetStream once, whatever fails.

Two relay processes on one database and one NATS: writers run while the
active relay is killed with SIGKILL (the standby takes over) or NATS is
restarted; afterwards the stream holds every change of the log exactly once,
and each row's changes in the order they were committed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import asyncpg
import nats

from pgpulse import capture
from pgpulse.broker.messages import Published, stream_name


class RelayProcess:
    def __init__(
        self,
        dsn: str,
        broker: str,
        name: str,
        log_dir: str,
        args: list[str] | None = None,
    ) -> None:
        """*args*: instead of ``--broker BROKER`` (a cluster's servers)."""
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgpulse", "relay", "--database-url", dsn,
                 *(args or ["--broker", broker]), "--name", name],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]


async def _active(
    conn: asyncpg.Connection, timeout: float = 20.0, other_than: str = ""
) -> str:
    """The name of the relay holding the lock (other than ``other_than``: a
    killed relay's session can show for a moment before PostgreSQL ends it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = await conn.fetchval(
            "select a.application_name from pg_locks l join pg_stat_activity a "
            "using (pid) where l.locktype = 'advisory' and l.granted "
            "and a.application_name like 'relay-%-lock'"
        )
        if name and str(name).removesuffix("-lock") != other_than:
            return str(name).removesuffix("-lock")
        await asyncio.sleep(0.1)
    raise AssertionError("no relay took the lock")


async def _writers(dsn: str, seconds: float, workers: int = 4) -> None:
    async def write(worker: int) -> None:
        conn = await asyncpg.connect(dsn)
        rng = random.Random(worker)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                key = rng.randrange(1, 60)
                await conn.execute(
                    "insert into jobs (id, n) values ($1, 1) on conflict (id) "
                    "do update set n = jobs.n + 1",
                    key,
                )
                if rng.random() < 0.1:
                    await conn.execute("delete from jobs where id = $1", key)
                await asyncio.sleep(rng.random() * 0.004)
        finally:
            await conn.close()

    await asyncio.gather(*(write(w) for w in range(workers)))


async def _stream(broker: str, database: str) -> list[Published]:
    nc = await nats.connect(broker)
    try:
        js = nc.jetstream()
        name = stream_name(database)
        info = await js.stream_info(name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(name, seq)
            assert message.data is not None
            out.append(Published.parse(message.data, seq))
        return out
    finally:
        await nc.close()


async def _wait_caught_up(conn: Any, broker: str, database: str) -> list[Published]:
    expected = await conn.fetchval("select count(*) from pgpulse.changes")
    deadline = time.monotonic() + 60
    published: list[Published] = []
    while time.monotonic() < deadline:
        try:
            published = await _stream(broker, database)
        except Exception:  # the stream may not exist yet, or NATS restarts
            published = []
        if len(published) >= expected:
            break
        await asyncio.sleep(0.25)
    return published


async def _check_exactly_once(conn: Any, published: list[Published]) -> None:
    logged = await conn.fetch("select id, pk from pgpulse.changes order by id")
    ids = [p.id for p in published]
    assert len(ids) == len(set(ids)), "a change was published twice"
    assert set(ids) == {r["id"] for r in logged}, "a change is missing"
    last: dict[str, int] = {}
    for message in published:  # each row's changes in commit (log id) order
        key = str(message.pk)
        assert last.get(key, 0) < message.id, f"row {key} out of order"
        last[key] = message.id


async def _schema(conn: Any) -> None:
    await conn.execute("create table jobs (id int primary key, n int)")
    await capture.watch(conn, "jobs")


async def test_a_killed_relay_is_replaced_and_nothing_is_lost_or_doubled(
    conn, database, nats_server, tmp_path
):
    await _schema(conn)
    relays = [
        RelayProcess(database, nats_server.url, f"relay-{n}", str(tmp_path))
        for n in (1, 2)
    ]
    try:
        first = await _active(conn)
        writing = asyncio.create_task(_writers(database, 6.0))
        await asyncio.sleep(2.0)
        victim = next(r for r in relays if r.name == first)
        victim.kill()
        second = await _active(conn, other_than=first)
        await writing
        database_name = await conn.fetchval("select current_database()")
        published = await _wait_caught_up(conn, nats_server.url, database_name)
        await _check_exactly_once(conn, published)
        assert len(published) > 200
        survivor = next(r for r in relays if r.name == second)
        assert "relay active" in survivor.log()
    finally:
        for relay in relays:
            relay.kill()


async def test_nats_restarting_mid_stream_loses_and_doubles_nothing(
    conn, database, nats_server, tmp_path
):
    await _schema(conn)
    relay = RelayProcess(database, nats_server.url, "relay-1", str(tmp_path))
    try:
        await _active(conn)
        writing = asyncio.create_task(_writers(database, 6.0))
        await asyncio.sleep(1.5)
        nats_server.stop()
        await asyncio.sleep(1.5)
        nats_server.start()
        await writing
        database_name = await conn.fetchval("select current_database()")
        published = await _wait_caught_up(conn, nats_server.url, database_name)
        await _check_exactly_once(conn, published)
    finally:
        relay.kill()
