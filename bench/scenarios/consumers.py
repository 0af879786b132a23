"""Scenario 10: consumer groups, against the workers job tables start with.

Throughput: a backlog of jobs committed at once, drained by one worker and by
four (processes of one group, acknowledging each batch, no work), timed from
the commit to the last acknowledgement.  Wake-up latency: one job every
~200 ms (jittered, so as not to beat with the poller's second), commit
returned -> the handler saw it, for a pgpulse worker, a worker polling every
second, and a bare LISTEN/NOTIFY worker (a trigger ``pg_notify``s each id;
the fastest, and it loses every job committed while it is down).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from typing import Any

import asyncpg

from bench.env import DB_CONSUMERS
from bench.scenarios import Ctx
from bench.stats import summary
from pgpulse import capture

__all__ = ["run_consumers"]

DESIGNS = ("pgpulse", "poll", "listen")

_NOTIFY = """
create or replace function jobs_notify() returns trigger language plpgsql as $$
begin perform pg_notify('jobs', new.id::text); return new; end $$;
create trigger jobs_notify after insert on jobs
    for each row execute function jobs_notify();
"""


class Worker:
    """A ``bench.consumer_worker`` process; its handled jobs in ``seen``."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.consumer_worker", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.seen: dict[int, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ready"):
                self.ready.set()
                continue
            job, _, at = line.partition(" ")
            self.seen.setdefault(int(job), float(at))

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"worker {self.proc.args!r} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.thread.join(10)  # the pipe is at its end once the process is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _reset(dsn: str, notify: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("drop table if exists jobs cascade")
        await conn.execute(
            "create table jobs (id bigint generated always as identity primary key,"
            " kind text not null, payload jsonb not null)"
        )
        await capture.watch(conn, "jobs")
        await conn.execute("delete from pgpulse.consumer_groups")
        # Earlier runs' jobs (ids start again at 1) must not be read again.
        await conn.execute("delete from pgpulse.changes where tbl = 'public.jobs'")
        if notify:
            await conn.execute(_NOTIFY)
    finally:
        await conn.close()


async def _balanced(dsn: str, group: str, workers: int, timeout: float) -> None:
    """Wait until *workers* workers hold the group's partitions."""
    conn = await asyncpg.connect(dsn)
    try:
        stop_at = time.monotonic() + timeout
        while time.monotonic() < stop_at:
            holders = await conn.fetchval(
                "select count(distinct worker) from pgpulse.consumer_partitions "
                "where group_name = $1 and lease_until > now()",
                group,
            )
            if holders == workers:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{workers} workers did not share group {group}")
    finally:
        await conn.close()


async def _drain(dsn: str, group: str, backlog: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await conn.execute(
            "insert into jobs (kind, payload) select 'mail', "
            "jsonb_build_object('n', i, 'to', 'user' || i || '@example.com') "
            "from generate_series(1, $1) i",
            backlog,
        )
        committed = time.monotonic()
        while True:
            done = await conn.fetchval(
                "select coalesce(sum(delivered), 0) from pgpulse.consumer_partitions "
                "where group_name = $1",
                group,
            )
            if done >= backlog:
                break
            if time.monotonic() - committed > 600:
                raise RuntimeError(f"group {group}: {done} of {backlog} after 600 s")
            await asyncio.sleep(0.05)
        finished = time.monotonic()
    finally:
        await conn.close()
    seconds = finished - committed
    return {
        "changes": backlog,
        "insert_s": round(committed - started, 3),
        "drain_s": round(seconds, 3),
        "changes_per_s": round(backlog / seconds, 1),
    }


def _throughput(
    ctx: Ctx, dsn: str, workers: int, backlog: int, batch: int
) -> dict[str, Any]:
    asyncio.run(_reset(dsn, notify=False))
    group = f"drain{workers}"
    procs = [
        Worker(["pgpulse", dsn, group, str(batch), "--count-only"])
        for _ in range(workers)
    ]
    try:
        for w in procs:
            w.wait_ready()
        asyncio.run(_balanced(dsn, group, workers, timeout=60))
        ctx.log(f"  consumers: {workers} worker(s) draining {backlog:,} jobs")
        row = asyncio.run(_drain(dsn, group, backlog))
    finally:
        for w in procs:
            w.stop()
    return {"workers": workers, "batch": batch, **row}


async def _write(dsn: str, jobs: int, interval: float, seed: int) -> dict[int, float]:
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    commits: dict[int, float] = {}
    try:
        for _ in range(jobs):
            await asyncio.sleep(rng.uniform(0.5 * interval, 1.5 * interval))
            job = await conn.fetchval(
                "insert into jobs (kind, payload) values ('mail', '{}') returning id"
            )
            commits[int(job)] = time.time()
    finally:
        await conn.close()
    return commits


def _latency(
    ctx: Ctx, dsn: str, design: str, jobs: int, interval: float
) -> dict[str, Any]:
    asyncio.run(_reset(dsn, notify=design == "listen"))
    ctx.log(f"  consumers: wake-up latency, {design} worker, {jobs} jobs")
    worker = Worker([design, dsn, "wake", "100"])
    try:
        worker.wait_ready()
        if design == "pgpulse":
            asyncio.run(_balanced(dsn, "wake", 1, timeout=30))
        commits = asyncio.run(_write(dsn, jobs, interval, seed=7))
        stop_at = time.monotonic() + 5.0
        while len(worker.seen) < len(commits) and time.monotonic() < stop_at:
            time.sleep(0.05)
    finally:
        worker.stop()
    latencies = [
        (worker.seen[job] - at) * 1000.0
        for job, at in commits.items()
        if job in worker.seen
    ]
    return {
        "design": design,
        "jobs": len(commits),
        "handled": sum(1 for job in commits if job in worker.seen),
        "latency_ms": summary(latencies),
    }


def run_consumers(
    ctx: Ctx,
    backlog: int,
    workers: list[int],
    batch: int,
    jobs: int,
    interval: float,
) -> dict[str, Any]:
    dsn = ctx.cluster.dsn(DB_CONSUMERS)
    return {
        "backlog": backlog,
        "jobs": jobs,
        "interval_s": interval,
        "throughput": [_throughput(ctx, dsn, n, backlog, batch) for n in workers],
        "latency": [_latency(ctx, dsn, d, jobs, interval) for d in DESIGNS],
    }
