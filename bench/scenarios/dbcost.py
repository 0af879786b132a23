"""Scenario 4: what capture costs the database.

* TPS of single-row INSERT transactions from 16 concurrent pgbench clients
  (``-M prepared``) into five identical tables: no trigger, pgpulse capture
  (statement-level trigger into ``pgpulse.changes`` + one empty NOTIFY) with a
  gateway following the log, the tutorial per-row ``pg_notify`` trigger with
  one LISTEN connection consuming, and two reference floors (an empty
  transition-table trigger; the same trigger copying every row verbatim into an
  unindexed table: the least any trigger-based durable log can cost), and the
  wal capture source (no trigger; the gateway decodes the WAL into the log on
  the same cores while the writers run; and once more with no gateway
  decoding meanwhile, the writers' own price).  The
  configurations alternate over several rounds so drift (checkpoints, other
  load) hits all of them alike.
* A 50,000-row ``INSERT ... SELECT`` into each table, median of the
  repetitions (five in the full plan).  For the wal source also the time until
  the gateway has logged all its rows (the writer does not wait for that).

Also recorded: WAL bytes per transaction (``pg_current_wal_lsn()`` difference).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bench._proc import cpu_seconds, server_cpu_seconds, tree
from bench.env import DB_COST, DB_COST_SOLO, DB_COST_WAL, pgbench_path
from bench.scenarios import Ctx, start_server, value_of
from bench.servers import Server
from bench.writer import Listen

__all__ = ["DATABASES", "FLOORS", "MODES", "run_dbcost"]

MODES = {
    "plain": "cost_plain",
    "pgpulse": "cost_pgpulse",
    "pgpulse_solo": "cost_pgpulse",
    "notify": "cost_notify",
    "floor_trigger": "cost_floor_trigger",
    "floor_copy": "cost_floor_copy",
    "pgpulse_wal": "cost_pgpulse_wal",
    "pgpulse_wal_paused": "cost_pgpulse_wal",
}
"""Mode -> table (``bench/env.py`` creates them); measured in this order."""

#: Modes measured in another database than DB_COST (the gateway reads DB_COST):
#: capture alone, without a gateway reading the log on the same cores.
DATABASES = {
    "pgpulse_solo": DB_COST_SOLO,
    "pgpulse_wal": DB_COST_WAL,
    # The wal source with no gateway decoding meanwhile: what the writers
    # themselves pay (the backlog is decoded before the next pgpulse_wal run).
    "pgpulse_wal_paused": DB_COST_WAL,
}

#: The reference floors among :data:`MODES` (not systems: what physics allows).
FLOORS = ("floor_trigger", "floor_copy")

SCRIPT = """\\set ship random(1, 1000)
insert into {table} (seq, shipment_id, t_ns, body)
values (:client_id, :ship, 0, repeat('x', 100));
"""

BULK_SQL = (
    "insert into {table} (seq, shipment_id, t_ns, body) "
    "select g, g % 1000, 0, repeat('x', 100) from generate_series(1, $1) g"
)


def _wal_lsn(dsn: str) -> int:
    return int(value_of(dsn, "select pg_current_wal_lsn() - '0/0'::pg_lsn"))


def _postmaster(ctx: Ctx) -> int:
    data_dir = ctx.cluster.cluster.data_dir
    return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])


def _pgbench(
    dsn: str, table: str, clients: int, seconds: float, postmaster: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(SCRIPT.format(table=table))
        script = f.name
    try:
        wal0 = _wal_lsn(dsn)
        cpu0 = server_cpu_seconds(postmaster)
        done = subprocess.run(
            [
                str(pgbench_path()),
                "-n",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(max(1, round(seconds))),
                "-M",
                "prepared",
                "-f",
                script,
                dsn,
            ],
            capture_output=True,
            text=True,
            timeout=seconds * 4 + 60,
        )
        cpu1 = server_cpu_seconds(postmaster)
        wal1 = _wal_lsn(dsn)
    finally:
        Path(script).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    txns = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    n = int(txns.group(1)) if txns else 0
    return {
        "tps": float(tps.group(1)) if tps else 0.0,
        "transactions": n,
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "wal_bytes_per_tx": round((wal1 - wal0) / n) if n else None,
        # Every PostgreSQL process (backends, walsender, background writers):
        # what the database server spent per transaction, capture included.
        "db_cpu_us_per_tx": round((cpu1 - cpu0) / n * 1e6, 1) if n else None,
    }


async def _bulk(dsn: str, table: str, rows: int, decoded: bool) -> tuple[float, float]:
    """Seconds the writer took, and until the rows were in the log.

    With triggers the rows are logged when the writer commits; with the wal
    source the gateway logs them afterwards (waited for, up to 60 s)."""
    conn = await asyncpg.connect(dsn)
    try:
        xid = await conn.fetchval(
            "select pg_snapshot_xmax(pg_current_snapshot())::text"
        )
        started = time.perf_counter()
        await conn.execute(BULK_SQL.format(table=table), rows)
        took = time.perf_counter() - started
        if not decoded:
            return took, took
        deadline = started + 60
        while time.perf_counter() < deadline:
            logged = await conn.fetchval(
                "select count(*) from pgpulse.changes "
                "where xid >= $1::text::xid8 and tbl = $2",
                xid,
                f"public.{table}",
            )
            if logged >= rows:
                break
            await asyncio.sleep(0.01)
        return took, time.perf_counter() - started
    finally:
        await conn.close()


@contextlib.contextmanager
def _decoding(ctx: Ctx, mode: str) -> Iterator[Server | None]:
    """For the wal source: its gateway (the decoder) runs only while measured;
    yields it."""
    if mode != "pgpulse_wal":
        yield None
        return
    gateway = start_server(ctx, "pgpulse", database=DB_COST_WAL)  # caught up
    try:
        yield gateway
    finally:
        gateway.stop()


def _gateway_cpu(server: Server | None) -> float:
    """CPU seconds of a gateway's processes so far (0 without one)."""
    if server is None or server.proc is None:
        return 0.0
    return cpu_seconds(tree(server.proc.pid))


def run_dbcost(
    ctx: Ctx,
    clients: int,
    seconds: float,
    rounds: int,
    bulk_rows: int,
    bulk_reps: int,
) -> dict[str, Any]:
    dsn = ctx.cluster.dsn(DB_COST)
    dsns = {m: ctx.cluster.dsn(DATABASES.get(m, DB_COST)) for m in MODES}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    postmaster = _postmaster(ctx)
    bulk: dict[str, list[float]] = {m: [] for m in MODES}
    logged: list[float] = []
    gateway = start_server(ctx, "pgpulse", database=DB_COST)
    try:
        with Listen(dsn, channel="cost_notify"):
            for r in range(rounds):
                for mode, table in MODES.items():
                    ctx.log(f"  pgbench round {r + 1}: {mode}")
                    with _decoding(ctx, mode) as decoding:
                        following = gateway if mode == "pgpulse" else decoding
                        cpu0 = _gateway_cpu(following)
                        run = _pgbench(dsns[mode], table, clients, seconds, postmaster)
                        if following is not None:
                            # The gateway's own CPU (its Python) per transaction,
                            # on the same cores: the listener, and the decoder.
                            used = _gateway_cpu(following) - cpu0
                            n = run["transactions"] or 1
                            run["gateway_cpu_us_per_tx"] = round(used / n * 1e6, 1)
                    runs[mode].append(run)
                    ctx.log(f"    {run['tps']:.0f} TPS")
                    time.sleep(1.0)
            for _ in range(bulk_reps):
                for mode, table in MODES.items():
                    with _decoding(ctx, mode):
                        took, done = asyncio.run(
                            _bulk(dsns[mode], table, bulk_rows, mode == "pgpulse_wal")
                        )
                    bulk[mode].append(took)
                    if mode == "pgpulse_wal":
                        logged.append(done)
                    ctx.log(
                        f"  bulk {bulk_rows} rows: {mode} {took * 1000:.0f} ms"
                        f" (logged after {done * 1000:.0f} ms)"
                    )
                    # Let the gateway read the batch before the next insert.
                    time.sleep(2.0 if mode.startswith("pgpulse") else 0.5)
    finally:
        gateway.stop()
    tps = {m: statistics.mean(r["tps"] for r in runs[m]) for m in MODES}
    bulk_s = {m: statistics.median(bulk[m]) for m in MODES}
    return {
        "clients": clients,
        "seconds": seconds,
        "rounds": rounds,
        "bulk_rows": bulk_rows,
        "bulk_reps": bulk_reps,
        "settings": ctx.cluster.settings,
        "pgbench": runs,
        "tps": {m: round(v, 1) for m, v in tps.items()},
        "tps_ratio": {m: round(tps[m] / tps["plain"], 3) for m in MODES},
        "wal_bytes_per_tx": {
            m: round(statistics.mean(r["wal_bytes_per_tx"] or 0 for r in runs[m]))
            for m in MODES
        },
        "db_cpu_us_per_tx": {
            m: round(statistics.mean(r["db_cpu_us_per_tx"] or 0 for r in runs[m]), 1)
            for m in MODES
        },
        "gateway_cpu_us_per_tx": {
            m: round(statistics.mean(r["gateway_cpu_us_per_tx"] for r in runs[m]), 1)
            for m in MODES
            if runs[m] and "gateway_cpu_us_per_tx" in runs[m][0]
        },
        "bulk_s": {m: round(v, 4) for m, v in bulk_s.items()},
        "bulk_all_s": bulk,
        "bulk_ratio": {m: round(bulk_s[m] / bulk_s["plain"], 3) for m in MODES},
        # wal source: writer start -> every row in the log (median).
        "bulk_logged_s": round(statistics.median(logged), 4) if logged else None,
    }
