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
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from tests.nats_server import NatsServer

from bench._proc import cpu_seconds, tree
from bench.env import DB_PGPULSE
from bench.scenarios import Ctx, connect, measure, start_server, value_of
from bench.servers import LOG_DIR, Server

__all__ = ["run_broker"]

_SCANS = (
    "select coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
    "from pg_stat_user_tables where relid = 'pgpulse.changes'::regclass"
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
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clients": clients,
        "rates": rates,
        "duration_s": duration,
        "setups": {},
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
