"""Shared machinery of the scenarios: the run context and one measured window.

A *window* is: reset the load generator's counters, start the writer (its
connections open first), sample the server's CPU time when the writer's clock
starts and when it stops, let deliveries drain for a moment, and collect what
the clients received.  Everything a table in docs/benchmarks.md shows comes
from the dict :func:`measure` returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench._proc import MachineCpu
from bench.env import BenchCluster
from bench.loadgen import LoadGen, Target
from bench.servers import Server, make_server
from bench.stats import latencies_ms, summary
from bench.writer import WriteJob, Writer
from pgpulse.log.cursor import Snapshot

__all__ = ["Ctx", "connect", "measure", "quiesce", "start_server", "value_of"]


@dataclass
class Ctx:
    cluster: BenchCluster
    loadgen: LoadGen
    quick: bool = False
    log: Callable[[str], None] = print
    unavailable: dict[str, str] = field(default_factory=dict)
    """System name -> why it cannot run here (missing node, pip failure)."""
    _seq: int = 0

    def next_seq(self) -> int:
        """A fresh range of ``seq`` values so late events never join a later run."""
        self._seq += 10_000_000
        return self._seq


def start_server(
    ctx: Ctx,
    system: str,
    path: str = "",
    extra: list[str] | None = None,
    database: str | None = None,
) -> Server:
    server = make_server(system, ctx.cluster.dsn, path, extra, database)
    server.start()
    if system.startswith("pgpulse"):
        dsn = ctx.cluster.dsn(server.database)
        took = asyncio.run(caught_up(dsn))
        if took is not None:
            read = listener_caught_up(server, dsn)
            ctx.log(
                f"    {system}: decoder caught up with the WAL in {took:.1f} s, "
                f"the listener with the log {read:.1f} s later"
            )
    return server


def listener_caught_up(server: Server, dsn: str, limit: float = 60.0) -> float:
    """Wait until the gateway's listener has read everything logged so far (a
    decoder that caught up has logged its backlog; the listener reads it
    after), so that reading never counts in a measurement either.  Returns
    the seconds waited."""
    target = Snapshot.parse(str(value_of(dsn, "select pg_current_snapshot()::text")))
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        position = server.health().get("position")
        if position and Snapshot.parse(position).xmax >= target.xmax:
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def value_of(dsn: str, sql: str) -> Any:
    """One value from a short connection of its own (between measurements)."""

    async def fetch() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(fetch())


async def caught_up(dsn: str, limit: float = 120.0) -> float | None:
    """With the wal source: wait until the gateway's decoder has read the WAL up
    to now (it first reads through what other scenarios wrote since the slot
    was last read), so its catch-up never counts in a measurement.  Returns
    the seconds waited, or ``None`` when the database has no slot."""
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        has_slot = await conn.fetchval(
            "select count(*) from pg_replication_slots "
            "where to_regproc('pgpulse.slot_name') is not null "
            "and slot_name = pgpulse.slot_name()"
        )
        if not has_slot:
            return None
        target = await conn.fetchval("select pg_current_wal_lsn()::text")
        while time.perf_counter() - started < limit:
            done = await conn.fetchval(
                "select confirmed_flush_lsn >= $1::text::pg_lsn "
                "from pg_replication_slots where slot_name = pgpulse.slot_name()",
                target,
            )
            if done:
                break
            await asyncio.sleep(0.1)
        return time.perf_counter() - started
    finally:
        await conn.close()


def connect(
    ctx: Ctx,
    target: Target,
    count: int,
    samples: int = 50,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Open *count* clients; logs and returns the connect result."""
    result = ctx.loadgen.connect(target, count, samples=samples, timeout=timeout)
    ctx.log(
        f"    connected {result['ok']}/{count} clients in {result['seconds']:.1f}s"
        + (f"; errors: {result['errors']}" if result["errors"] else "")
    )
    return result


def quiesce(ctx: Ctx, limit: float = 60.0, silence: float = 1.0) -> None:
    """Wait until nothing has arrived for *silence* seconds (a previous
    window's backlog must not count in the next one)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ctx.loadgen.reset()
        time.sleep(silence)
        if ctx.loadgen.collect().received == 0:
            return
    ctx.log("    warning: deliveries still arriving after the quiet period")


def measure(
    ctx: Ctx,
    server: Server | None,
    clients: int,
    rate: float,
    duration: float,
    database: str,
    *,
    shipments: int = 1000,
    expected_per_change: int | None = None,
    drain: float = 1.0,
    baseline_cpu: bool = False,
) -> dict[str, Any]:
    """One window of writes at *rate* for *duration* seconds with *clients*
    connected; see the module docstring."""
    quiesce(ctx)
    ctx.loadgen.reset()
    job = WriteJob(
        ctx.cluster.dsn(database),
        rate,
        duration,
        ctx.next_seq(),
        shipments=shipments,
    )
    idle_cpu = None
    if baseline_cpu and server is not None:
        c0 = server.cpu()
        time.sleep(duration)
        idle_cpu = server.cpu() - c0
    writer = Writer(job)
    writer.start()
    m0 = MachineCpu.now()
    cpu0 = server.cpu() if server is not None else 0.0
    result = writer.wait()
    cpu1 = server.cpu() if server is not None else 0.0
    m1 = MachineCpu.now()
    time.sleep(drain)
    got = ctx.loadgen.collect()
    seconds = result.seconds
    written = result.written
    per_change = clients if expected_per_change is None else expected_per_change
    expected = written * per_change
    commits = result.commit_map()
    lat = latencies_ms(got.seqs, got.times, commits)
    out: dict[str, Any] = {
        "clients": clients,
        "rate": rate,
        "seconds": round(seconds, 3),
        "written": written,
        "write_errors": result.errors,
        "writer_connections": result.connections,
        "achieved_rate": round(written / seconds, 1) if seconds else 0.0,
        "delivered": got.received,
        "expected": expected,
        "delivered_ratio": round(got.received / expected, 4) if expected else None,
        "deliveries_per_s": round(got.received / seconds, 1) if seconds else 0.0,
        "sampled_clients": got.sampled,
        "latency_ms": summary(lat),
        "lost_clients": got.lost,
        "loadgen_cpu_pct": [round(100 * c / (seconds + drain), 1) for c in got.cpu],
        "machine_busy_pct": round(m1.busy_percent_since(m0), 1),
    }
    if server is not None:
        cpu = cpu1 - cpu0
        out["server_cpu_s"] = round(cpu, 3)
        out["server_cpu_pct"] = round(100 * cpu / seconds, 1) if seconds else 0.0
        out["server_cpu_ms_per_change"] = (
            round(1000 * cpu / written, 4) if written else None
        )
        if idle_cpu is not None:
            net = max(0.0, cpu - idle_cpu)
            out["server_idle_cpu_s"] = round(idle_cpu, 3)
            out["server_net_cpu_ms_per_change"] = (
                round(1000 * net / written, 4) if written else None
            )
    # Lag growth: latency of changes committed in the first vs last quarter.
    if lat:
        q = (result.ended_ns - result.started_ns) / 4
        first, last = [], []
        for seq, t in zip(got.seqs, got.times, strict=True):
            c = commits.get(seq)
            if c is None:
                continue
            if c < result.started_ns + q:
                first.append((t - c) / 1e6)
            elif c > result.ended_ns - q:
                last.append((t - c) / 1e6)
        out["latency_first_quarter_ms"] = summary(first)
        out["latency_last_quarter_ms"] = summary(last)
    return out


def sustained(window: dict[str, Any]) -> tuple[bool, str]:
    """Whether a fan-out window kept up: (nearly) everything delivered by the
    end of the drain and latency not growing across the window."""
    ratio = window.get("delivered_ratio") or 0.0
    if window["achieved_rate"] < 0.9 * window["rate"]:
        return False, "writer could not reach the rate"
    if ratio < 0.98:
        return False, f"only {ratio:.1%} delivered by the end of the drain"
    if ratio > 1.02:
        return False, f"{ratio:.1%} delivered: an earlier backlog was still arriving"
    first = window.get("latency_first_quarter_ms", {}).get("p50")
    last = window.get("latency_last_quarter_ms", {}).get("p50")
    p99 = window.get("latency_last_quarter_ms", {}).get("p99")
    if first is None or last is None:
        return True, "no latency samples"
    if p99 is not None and p99 > 5000:
        return False, f"p99 latency {p99:.0f} ms at the end of the window"
    if last > 2 * first + 50:
        return False, f"lag growing: p50 {first:.1f} -> {last:.1f} ms"
    return True, "kept up"
