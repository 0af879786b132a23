"""Several worker processes in one group, killed with SIGKILL mid-batch.

Checked by sums in the database: every change handled at least once
(acknowledge mode) or exactly once (transaction mode), the changes of one row
in commit order, the work spread over the workers, and a dead worker's
partitions moving to the others within a lease.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from pgpulse import capture

ROOT = Path(__file__).resolve().parents[2]
CHAOS_SECONDS = {"embedded": 60.0, "system": 20.0}
"""Seconds of writes and kills per test: a minute on the embedded build, a
third of that on the distribution's (the same code; its statements' plans
are pinned by test_jit.py).  PGPULSE_CHAOS_SECONDS overrides both."""
STALL_SECONDS = 30.0
"""The test fails if the group handles nothing new for this long."""


async def _schema(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "create table orders (id int primary key, version int not null, "
        "amount numeric not null)"
    )
    await conn.execute(
        "create table handled (id bigint generated always as identity, "
        "change_id bigint not null, order_id int not null, op text not null, "
        "version int, amount numeric, worker text not null)"
    )
    await capture.watch(conn, "orders")


class Workers:
    """Worker processes (python -m tests.consumer_worker)."""

    def __init__(self, dsn: str, group: str, mode: str, delay: float) -> None:
        self.args = [dsn, group, mode, str(delay)]
        self.procs: list[asyncio.subprocess.Process] = []
        self.logs = Path(tempfile.mkdtemp(prefix="pgpulse-workers-"))

    async def start(self) -> asyncio.subprocess.Process:
        with (self.logs / f"worker-{len(list(self.logs.iterdir()))}.log").open(
            "ab"
        ) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.consumer_worker",
                *self.args,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert line.strip() == b"ready", line
        self.procs.append(proc)
        return proc

    async def stacks(self) -> str:
        """Every live worker's stack and log (for a stalled group)."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)
        return "\n".join(
            f"--- {path.name}:\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.logs.iterdir())
        )

    def kill(self, proc: asyncio.subprocess.Process) -> None:
        proc.send_signal(signal.SIGKILL)
        self.procs.remove(proc)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        self.procs.clear()


async def _write(dsn: str, stop: asyncio.Event, rng: random.Random, ids: range) -> int:
    """One writer: inserts its orders, then updates random ones (versions go
    up by one each time); returns how many changes it committed."""
    conn = await asyncpg.connect(dsn)
    count = 0
    try:
        for i in ids:
            await conn.execute("insert into orders values ($1::int, 1, $1::int)", i)
            count += 1
        while not stop.is_set():
            i = rng.choice(ids)
            await conn.execute(
                "update orders set version = version + 1, amount = amount + 1 "
                "where id = $1",
                i,
            )
            count += 1
            # About 250 changes/s from the eight writers: below what four
            # workers spending 50 ms per batch of 20 handle, so the test
            # measures loss and order, not a backlog.
            await asyncio.sleep(rng.uniform(0.01, 0.05))
    finally:
        await conn.close()
    return count


def _chaos_seconds(build: str) -> float:
    override = os.environ.get("PGPULSE_CHAOS_SECONDS")
    return float(override) if override else CHAOS_SECONDS[build]


async def _chaos(database: str, mode: str, seconds: float) -> asyncpg.Connection:
    conn = await asyncpg.connect(database)
    await _schema(conn)
    workers = Workers(database, f"chaos-{mode}", mode, delay=0.05)
    rng = random.Random(11)
    for _ in range(4):
        await workers.start()
    stop = asyncio.Event()
    writers = [
        asyncio.create_task(
            _write(database, stop, random.Random(k), range(k * 100, k * 100 + 50))
        )
        for k in range(1, 9)
    ]
    kills = 0
    try:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            workers.kill(rng.choice(workers.procs))
            kills += 1
            await workers.start()
        stop.set()
        written = sum(await asyncio.gather(*writers))
        assert kills >= seconds / 4
        done, progressed = -1, time.monotonic()
        while True:
            now_done = await conn.fetchval(
                "select count(distinct change_id) from handled"
            )
            if now_done >= written:
                done = now_done
                break
            if now_done > done:
                done, progressed = now_done, time.monotonic()
            if time.monotonic() - progressed >= STALL_SECONDS:
                state = await conn.fetch(
                    "select partition, worker, lease_until > now() as leased, "
                    "position, hold_xid, delivered from pgpulse.consumer_partitions "
                    "order by partition"
                )
                workers_seen = await conn.fetch(
                    "select worker, now() - seen_at as ago "
                    "from pgpulse.consumer_workers"
                )
                activity = await conn.fetch(
                    "select pid, application_name, state, wait_event_type, "
                    "wait_event, left(query, 100) as query, "
                    "now() - state_change as since from pg_stat_activity "
                    "where datname = current_database()"
                )
                raise AssertionError(
                    f"the group stalled at {done} of {written} changes; "
                    f"partitions: {[dict(r) for r in state]}; "
                    f"workers: {[dict(r) for r in workers_seen]}; "
                    f"activity: {[dict(r) for r in activity]}\n"
                    + await workers.stacks()
                )
            await asyncio.sleep(0.5)
        assert done == written
    finally:
        stop.set()
        await asyncio.gather(*writers, return_exceptions=True)
        await workers.stop()
    return conn


async def _check_order(conn: asyncpg.Connection) -> None:
    """Per row, the versions handled go up by one (first handling of each)."""
    bad = await conn.fetchval(
        """
        select count(*) from (
            select order_id, version,
                   lag(version) over (partition by order_id order by first_id) as prev
            from (select order_id, version, min(id) as first_id
                  from handled group by order_id, version) h
        ) x where prev is not null and version <> prev + 1
        """
    )
    assert bad == 0, f"{bad} changes handled out of per-row order"


async def test_exactly_once_with_workers_killed_mid_batch(database, pg_server):
    conn = await _chaos(database, "transaction", _chaos_seconds(pg_server.build))
    try:
        row = await conn.fetchrow(
            "select count(*), count(distinct change_id) from handled"
        )
        assert row is not None
        total, distinct = row
        assert total == distinct, f"{total - distinct} changes handled twice"
        # Sums: the amount of each order's latest version equals the table's.
        mismatched = await conn.fetchval(
            """
            select count(*) from orders o join (
                select distinct on (order_id) order_id, amount from handled
                order by order_id, version desc
            ) h on h.order_id = o.id where h.amount <> o.amount
            """
        )
        assert mismatched == 0
        await _check_order(conn)
        # Spread (exactly four ways) is pinned by the test below; here: shared.
        workers = await conn.fetchval("select count(distinct worker) from handled")
        assert workers >= 2, "the work was not shared by the workers"
    finally:
        await conn.close()


async def test_at_least_once_with_workers_killed_mid_batch(database, pg_server):
    conn = await _chaos(database, "ack", _chaos_seconds(pg_server.build))
    try:
        missing = await conn.fetchval(
            "select count(*) from pgpulse.changes c where c.tbl = 'public.orders' "
            "and not exists (select from handled h where h.change_id = c.id)"
        )
        assert missing == 0
        await _check_order(conn)
    finally:
        await conn.close()


async def test_a_dead_workers_partitions_move_to_the_others(database):
    conn = await asyncpg.connect(database)
    await _schema(conn)
    workers = Workers(database, "move", "transaction", delay=0.0)
    try:
        first = await workers.start()
        for _ in range(3):
            await workers.start()
        await asyncio.sleep(2.5)  # the first worker hands partitions over
        await conn.execute(
            "insert into orders select g, 1, g from generate_series(1, 200) g"
        )
        async with asyncio.timeout(30):
            while await conn.fetchval("select count(*) from handled") < 200:
                await asyncio.sleep(0.2)
        spread = await conn.fetchval("select count(distinct worker) from handled")
        assert spread == 4
        victim = f"w{first.pid}"
        workers.kill(first)
        await conn.execute("update orders set version = 2, amount = amount + 1")
        async with asyncio.timeout(30):
            while await conn.fetchval("select count(*) from handled") < 400:
                await asyncio.sleep(0.2)
        after = await conn.fetch(
            "select distinct worker from handled where version = 2"
        )
        assert victim not in {r["worker"] for r in after}
        assert len(after) == 3
        assert await conn.fetchval("select count(*) from handled") == 400
    finally:
        await workers.stop()
        await conn.close()
