"""Scenario 6: where a transaction's work goes, counted in instructions.

Why instructions: on a shared 2-core machine the CPU seconds of the same work
vary by a third from run to run (steal time, frequency); the instructions a
process retires for it repeat to a few percent.  Counted with Linux ``perf stat
-e instructions -p PID``; where perf cannot count, the result says why.

* Writer: one connection, the cost scenario's single-row INSERT (prepared), into
  a table without capture, one with the capture trigger and one watched
  through the WAL: instructions of the writer's backend per transaction.
* Following: the cost scenario's pgbench writers for a few seconds into the
  trigger table with a gateway following the log, and into the wal table with
  a gateway decoding it: instructions per change of the listener's backend,
  the decoder's log-writing backend, the walsender and the gateway's process
  tree (its Python).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from bench._proc import tree
from bench.env import DB_COST, DB_COST_WAL
from bench.scenarios import Ctx, caught_up, start_server
from bench.scenarios.dbcost import _pgbench, _postmaster

__all__ = ["run_instructions"]

#: Writer modes: (database, table).
WRITERS = {
    "plain": (DB_COST, "cost_plain"),
    "trigger": (DB_COST, "cost_pgpulse"),
    "wal": (DB_COST_WAL, "cost_pgpulse_wal"),
}

#: Following modes: (database, table).
FOLLOWING = {
    "trigger": (DB_COST, "cost_pgpulse"),
    "wal": (DB_COST_WAL, "cost_pgpulse_wal"),
}

INSERT = (
    "insert into {table} (seq, shipment_id, t_ns, body) "
    "values ($1, $2, 0, repeat('x', 100))"
)


def perf_problem() -> str | None:
    """Why instructions cannot be counted here, or ``None`` when they can."""
    if shutil.which("perf") is None:
        return "Linux perf is not installed (Debian: linux-perf)"
    done = subprocess.run(
        ["perf", "stat", "-x", ",", "-e", "instructions", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    if done.returncode != 0 or not first.split(",")[0].isdigit():
        return f"perf cannot count instructions here: {first or done.returncode}"
    return None


@contextmanager
def counting(pids: list[int]) -> Iterator[list[int]]:
    """Instructions retired by *pids* inside the block: the list yielded gets
    their total when the block ends (0 for no pids)."""
    total: list[int] = []
    if not pids:
        yield total
        total.append(0)
        return
    group = ",".join(map(str, pids))
    proc = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", "instructions", "-p", group],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # perf attaches
    try:
        yield total
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        count = 0
        for line in err.splitlines():
            field = line.split(",")[0]
            if field.isdigit():  # "<not counted>" when the process did nothing
                count += int(field)
        total.append(count)


async def _writer(dsn: str, table: str, transactions: int) -> float:
    """Thousands of instructions the writer's backend retires per transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        pid = await conn.fetchval("select pg_backend_pid()")
        insert = await conn.prepare(INSERT.format(table=table))
        for i in range(min(200, transactions)):  # warm: plans, caches
            await insert.fetch(i, i % 1000)
        with counting([pid]) as counted:
            for i in range(transactions):
                await insert.fetch(i, i % 1000)
        return counted[0] / transactions / 1000
    finally:
        await conn.close()


async def _backends(dsn: str) -> dict[str, list[int]]:
    """The gateway's database backends by role."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select pid, application_name, backend_type from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    roles: dict[str, list[int]] = {
        "listener": [],
        "decoder_writes": [],
        "walsender": [],
    }
    for r in rows:
        if r["backend_type"] == "walsender":
            roles["walsender"].append(r["pid"])
        elif r["application_name"] == "pgpulse-listener":
            roles["listener"].append(r["pid"])
        elif r["application_name"] == "pgpulse-decoder":
            roles["decoder_writes"].append(r["pid"])
    return roles


def _following(
    ctx: Ctx, mode: str, clients: int, seconds: float, postmaster: int
) -> dict[str, Any]:
    database, table = FOLLOWING[mode]
    dsn = ctx.cluster.dsn(database)
    gateway = start_server(ctx, "pgpulse", database=database)
    try:
        time.sleep(1.0)  # the decoder's backends connect
        roles = asyncio.run(_backends(dsn))
        assert gateway.proc is not None
        roles["gateway"] = tree(gateway.proc.pid)
        with (
            counting(roles["listener"]) as listener,
            counting(roles["decoder_writes"]) as writes,
            counting(roles["walsender"]) as walsender,
            counting(roles["gateway"]) as python,
        ):
            run = _pgbench(dsn, table, clients, seconds, postmaster)
            # Until every change is logged and read: its work counts too.
            asyncio.run(caught_up(dsn, limit=60.0))
            time.sleep(1.0)
    finally:
        gateway.stop()
    n = run["transactions"] or 1
    return {
        "transactions": run["transactions"],
        "tps": run["tps"],
        "kinstr_per_change": {
            "listener": round(listener[0] / n / 1000, 1),
            "decoder_writes": round(writes[0] / n / 1000, 1),
            "walsender": round(walsender[0] / n / 1000, 1),
            "gateway": round(python[0] / n / 1000, 1),
        },
    }


def run_instructions(
    ctx: Ctx, transactions: int, clients: int, seconds: float
) -> dict[str, Any]:
    problem = perf_problem()
    if problem is not None:
        ctx.log(f"  cannot count instructions: {problem}")
        return {"status": "cannot", "reason": problem}
    writer = {}
    for mode, (database, table) in WRITERS.items():
        writer[mode] = round(
            asyncio.run(_writer(ctx.cluster.dsn(database), table, transactions)), 1
        )
        ctx.log(f"  writer, {mode}: {writer[mode]:.1f}k instructions per transaction")
    postmaster = _postmaster(ctx)
    following = {}
    for mode in FOLLOWING:
        following[mode] = _following(ctx, mode, clients, seconds, postmaster)
        ctx.log(f"  following, {mode}: {following[mode]['kinstr_per_change']}")
    return {
        "status": "ok",
        "transactions": transactions,
        "clients": clients,
        "seconds": seconds,
        "writer_kinstr_per_tx": writer,
        "following": following,
    }
