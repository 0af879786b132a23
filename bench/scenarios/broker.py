"""Scenario 12: gateways behind NATS JetStream, against gateways on the database.

Setups, each with the same clients (split evenly over its gateways) and the
same writes to ``docs``:

* ``direct``: one gateway following the database (what one node runs);
* ``direct-N``: N gateways each following the database themselves (what N
  nodes would cost without a broker);
* ``broker-N``: ``pgpulse relay`` publishing the log to a NATS server
  (JetStream, file storage) and N gateways (``serve --broker``) following
  the stream.

Per window: deliveries/s and commit -> client latency (as in scenario 1), the
database connections pgpulse holds (``pg_stat_activity``, by
application_name), log reads per second (scans of ``pgpulse.changes`` from
``pg_stat_user_tables``: every reader's, whoever makes them), and the CPU of
every process of the setup (gateways, relay, NATS).

Then, for the one-gateway setups, a mass reconnect (what a gateway lost with
its clients costs the one they move to): every client resumes at once with
the same Last-Event-ID, some hundreds of changes back; measured until each
has them all: seconds, the database's log reads and transactions meanwhile,
and where the gateway read them (``pgpulse_resumes_total``: the log, or the
broker's stream).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import httpx
from tests.nats_server import NatsServer

from bench._proc import cpu_seconds, tree
from bench.env import DB_PGPULSE
from bench.scenarios import Ctx, connect, measure, start_server, value_of
from bench.servers import LOG_DIR, Server
from bench.writer import WriteJob, Writer

__all__ = ["run_broker"]

_SCANS = (
    "select coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
    "from pg_stat_user_tables where relid = 'pgpulse.changes'::regclass"
)
_TRANSACTIONS = (
    "select xact_commit + xact_rollback from pg_stat_database "
    "where datname = current_database()"
)
_CONNECTIONS = (
    "select count(*) from pg_stat_activity where datname = current_database() "
    "and application_name like 'pgpulse%'"
)


def run_broker(
    ctx: Ctx,
    setups: list[str],
    clients: int,
    rates: list[int],
    duration: float,
    reconnect: dict[str, int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clients": clients,
        "rates": rates,
        "duration_s": duration,
        "setups": {},
        "reconnect": {},
    }
    nats = NatsServer().start() if any(s.startswith("broker") for s in setups) else None
    relay: subprocess.Popen[bytes] | None = None
    try:
        for setup in setups:
            kind, _, count = setup.partition("-")
            gateways = int(count or 1)
            extra: list[str] = []
            if kind == "broker":
                assert nats is not None
                if relay is None:
                    relay = _start_relay(ctx, nats.url)
                extra = ["--broker", nats.url]
            ctx.log(f"  broker: {setup}")
            servers = [
                start_server(ctx, "pgpulse", extra=extra) for _ in range(gateways)
            ]
            pids = [
                *(p for s in servers for p in s.pids()),
                *([] if kind != "broker" or relay is None else tree(relay.pid)),
                *([] if kind != "broker" or nats is None or nats.proc is None
                  else [nats.proc.pid]),
            ]  # fmt: skip
            try:
                out["setups"][setup] = _windows(
                    ctx, servers, pids, clients, rates, duration
                )
                if reconnect and gateways == 1:
                    out["reconnect"][setup] = _reconnect(
                        ctx, servers[0], pids, reconnect["clients"], reconnect["missed"]
                    )
            finally:
                ctx.loadgen.close()
                for server in servers:
                    server.stop()
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(15)
        if nats is not None:
            nats.remove()
    return out


def _start_relay(ctx: Ctx, broker: str) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "relay.log", "ab") as log:
        relay = subprocess.Popen(
            [sys.executable, "-m", "pgpulse", "relay", "--database-url",
             ctx.cluster.dsn(DB_PGPULSE), "--broker", broker, "--max-age", "1h"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    time.sleep(2.0)  # it takes the lock and creates the stream
    return relay


def _windows(
    ctx: Ctx,
    servers: list[Server],
    pids: list[int],
    clients: int,
    rates: list[int],
    duration: float,
) -> list[dict[str, Any]]:
    dsn = ctx.cluster.dsn(DB_PGPULSE)
    per = [clients // len(servers)] * len(servers)
    for i in range(clients % len(servers)):
        per[i] += 1
    ok = 0
    for server, n in zip(servers, per, strict=True):
        ok += connect(ctx, server.target, n)["ok"]
    rows = []
    for rate in rates:
        ctx.log(f"    {ok} clients over {len(servers)} gateway(s), {rate} changes/s")
        scans0 = int(value_of(dsn, _SCANS))
        cpu0 = cpu_seconds(pids)
        started = time.monotonic()
        row = measure(ctx, None, ok, rate, duration, DB_PGPULSE)
        time.sleep(1.5)  # backends publish their table statistics about once a second
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pids) - cpu0
        scans = int(value_of(dsn, _SCANS)) - scans0
        row.update(
            {
                "status": "ok",
                "gateways": len(servers),
                "database_connections": int(value_of(dsn, _CONNECTIONS)),
                "log_reads_per_s": round(scans / elapsed, 1),
                "setup_cpu_pct": round(100 * cpu / elapsed, 1),
            }
        )
        ctx.log(
            f"      p50 {row['latency_ms']['p50']} ms, p99 {row['latency_ms']['p99']}"
            f" ms, {row['deliveries_per_s']:,.0f} deliveries/s, "
            f"{row['database_connections']} connections, "
            f"{row['log_reads_per_s']} log reads/s"
        )
        rows.append(row)
    return rows


def _reconnect(
    ctx: Ctx, server: Server, pids: list[int], clients: int, missed: int
) -> dict[str, Any]:
    """*clients* resume at once from one event id, *missed* changes back."""
    dsn = ctx.cluster.dsn(DB_PGPULSE)
    ctx.loadgen.close()
    cursor = _cursor(server)
    job = WriteJob(dsn, missed / 2.0, 2.0, ctx.next_seq())
    writer = Writer(job)
    writer.start()
    written = writer.wait().written
    time.sleep(2.0)  # dispatched by the gateway (and published by the relay)
    ctx.loadgen.reset()
    scans0, xacts0 = int(value_of(dsn, _SCANS)), int(value_of(dsn, _TRANSACTIONS))
    cpu0 = cpu_seconds(pids)
    before = _resumes(server)
    started = time.monotonic()
    target = dataclasses.replace(server.target, last_event_id=cursor)
    ok = connect(ctx, target, clients)["ok"]
    expected, received = ok * written, 0
    while time.monotonic() - started < 120:
        received = ctx.loadgen.collect().received
        if received >= expected:
            break
        time.sleep(0.1)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu0
    time.sleep(1.5)  # backends publish their table statistics about once a second
    after = _resumes(server)
    row = {
        "clients": ok,
        "missed": written,
        "seconds": round(seconds, 2),
        "delivered_ratio": round(received / expected, 4) if expected else None,
        "log_reads": int(value_of(dsn, _SCANS)) - scans0,
        # The two statements counting, and the one reading, count too.
        "database_transactions": int(value_of(dsn, _TRANSACTIONS)) - xacts0 - 3,
        "from_stream": after.get("stream", 0) - before.get("stream", 0),
        "from_log": after.get("log", 0) - before.get("log", 0),
        "setup_cpu_s": round(cpu, 2),
    }
    ctx.log(
        f"    reconnect: {ok} clients, {written} changes each, "
        f"{row['seconds']} s, {row['log_reads']} log reads, "
        f"{row['database_transactions']} DB transactions, "
        f"{row['from_stream']} from the stream, {row['from_log']} from the log"
    )
    ctx.loadgen.close()
    return row


def _cursor(server: Server) -> str:
    """The position a client connecting now starts at (its ``ready``)."""
    url = f"http://127.0.0.1:{server.port}/v1/events?sub=docs"
    with httpx.stream("GET", url, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"cursor"' in line:
                return str(json.loads(line[5:])["cursor"])
    raise RuntimeError("the gateway sent no ready event")


def _resumes(server: Server) -> dict[str, int]:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    found = re.findall(r'^pgpulse_resumes_total\{source="(\w+)"\} (\S+)$', text, re.M)
    return {source: int(float(value)) for source, value in found}
