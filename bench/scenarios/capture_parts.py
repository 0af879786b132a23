"""Scenario 7: what each part of trigger capture costs the writer, counted by
callgrind.

Why: on a shared 2-core machine CPU seconds of the same work move by a third
between runs, and ``perf`` cannot count instructions on every machine (section
6 says when).  callgrind counts every instruction a process executes: the same
number on every run.  A single-user PostgreSQL backend (``postgres --single``:
no client, no network, no other process) runs *n* prepared single-row INSERT
transactions into a table, and one *n*-row ``INSERT ... SELECT``; two values of
*n* cancel the start-up, leaving the instructions per transaction and per row.

The tables form a ladder from no capture to pgpulse's capture, each step adding
one part, so the table reads as "where the writer's instructions go".  The
cluster is the scenario's own (single-user mode needs it stopped).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from bench.env import DOCS_DDL, FLOOR_COPY_DDL, FLOOR_TRIGGER_DDL
from bench.scenarios import Ctx
from pgpulse import capture
from pgpulse.capture.schema import install_schema
from pgpulse.embedded import EmbeddedCluster, _bin_dir

__all__ = ["ALTERNATIVES", "STEPS", "run_capture_parts", "valgrind_problem"]

DATABASE = "parts"

#: A log shaped like pgpulse.changes, written by a hand-made trigger, so the
#: ladder can add the log's parts one at a time.
_LOG_COLUMNS = (
    "xid xid8 not null, ts timestamptz not null, tbl text not null, "
    'op text not null, pk jsonb, "row" jsonb, old jsonb'
)
_LOG_INSERT = (
    'insert into {table}_log (xid, ts, tbl, op, "row") '
    "select pg_current_xact_id(), clock_timestamp(), 'public.{table}', 'INSERT', "
    "to_jsonb(n) from n;"
)


def _logging(log_columns: str, insert: str, options: str = "") -> str:
    """DDL: a table {table}_log and a statement trigger on {table} whose
    function runs *insert* (reading the transition table ``n``)."""
    return (
        f"create table {{table}}_log ({log_columns});"
        f"create function {{table}}_fn() returns trigger language plpgsql {options}"
        f" as $$begin {insert} return null; end $$;"
        "create trigger {table}_t after insert on {table} referencing new table as n"
        " for each statement execute function {table}_fn();"
    )


#: (step, what it adds, DDL for table {table}).  Each step adds one part to the
#: step before; the last is pgpulse's own capture (its generated function).
STEPS: list[tuple[str, str, str]] = [
    ("plain", "no capture", ""),
    (
        "trigger",
        "an empty AFTER INSERT statement trigger with a transition table",
        FLOOR_TRIGGER_DDL,
    ),
    ("copy", "each row copied verbatim into an unindexed table", FLOOR_COPY_DDL),
    (
        "json",
        "the row as jsonb (`to_jsonb`) instead of verbatim",
        _logging('"row" jsonb', "insert into {table}_log select to_jsonb(n) from n;"),
    ),
    (
        "log_row",
        "the log's other columns: transaction id, capture time, table, op",
        _logging(_LOG_COLUMNS, _LOG_INSERT),
    ),
    (
        "indexed",
        "the log's id, its xid index, and a SECURITY DEFINER function",
        _logging(
            "id bigint generated always as identity, " + _LOG_COLUMNS,
            _LOG_INSERT,
            "security definer set search_path = pg_catalog, public",
        )
        + "create index on {table}_log (xid);",
    ),
    (
        "pgpulse",
        "pgpulse's capture function: the wake-up check, one function for every "
        "operation, the shared log",
        "",
    ),
]

#: Measured beside the ladder, not part of it: (name, what it changes, the
#: step it replaces, DDL).
ALTERNATIVES: list[tuple[str, str, str, str]] = [
    (
        "json_text",
        "the row as json text (`to_json`) instead of jsonb",
        "json",
        _logging('"row" json', "insert into {table}_log select to_json(n) from n;"),
    ),
]

_PREPARE = (
    "prepare w as insert into {table} (seq, shipment_id, t_ns, body) "
    "values (1, 2, 0, repeat('x', 100));"
)
_BULK = (
    "insert into {table} (seq, shipment_id, t_ns, body) "
    "select g, g % 1000, 0, repeat('x', 100) from generate_series(1, {rows}) g;"
)


def valgrind_problem() -> str | None:
    """Why instructions cannot be counted with callgrind here, or ``None``."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: valgrind)"
    return None


def _setup(cluster: EmbeddedCluster) -> None:
    async def go() -> None:
        admin = await asyncpg.connect(cluster.dsn())
        try:
            await admin.execute(f"create database {DATABASE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(cluster.dsn(DATABASE))
        try:
            await install_schema(conn)
            tables = [(step, ddl) for step, _, ddl in STEPS]
            tables += [(name, ddl) for name, _, _, ddl in ALTERNATIVES]
            for step, ddl in tables:
                table = f"parts_{step}"
                await conn.execute(DOCS_DDL.format(table=table))
                if ddl:
                    await conn.execute(ddl.format(table=table, sink=f"{table}_sink"))
            await capture.watch(conn, "parts_pgpulse")
        finally:
            await conn.close()

    asyncio.run(go())


class _SingleUser:
    """Runs SQL scripts in a single-user backend under callgrind."""

    def __init__(self, cluster: EmbeddedCluster, scratch: Path) -> None:
        self.cluster = cluster
        self.scratch = scratch
        # The backend runs as whoever owns the cluster (the service user, as root).
        self.ident = cluster._identity()

    def instructions(self, script: str) -> int:
        path = self.scratch / "script.sql"
        path.write_text(script)
        with path.open() as stdin:  # opened here: the backend needs no access
            done = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                    str(_bin_dir() / "postgres"),
                    "--single",
                    "-D",
                    str(self.cluster.data_dir),
                    "-c",
                    "wal_level=logical",
                    DATABASE,
                ],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd="/",
                timeout=900,
                user=self.ident[0] if self.ident else None,
                group=self.ident[1] if self.ident else None,
                extra_groups=[] if self.ident else None,
            )
        found = re.search(r"Collected : (\d+)", done.stderr)
        errors = [
            line
            for line in done.stderr.splitlines()
            if "ERROR" in line or "FATAL" in line
        ]
        if done.returncode != 0 or found is None or errors:
            tail = (errors or done.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"single-user backend under callgrind failed: {tail}")
        return int(found.group(1))

    def per_transaction(self, table: str, small: int, large: int) -> float:
        """Instructions per single-row INSERT transaction into *table*."""

        def script(n: int) -> str:
            return _PREPARE.format(table=table) + "\n" + "execute w;\n" * n

        a = self.instructions(script(small))
        b = self.instructions(script(large))
        return (b - a) / (large - small)

    def per_row(self, table: str, small: int, large: int) -> float:
        """Instructions per row of one multi-row INSERT ... SELECT into *table*."""
        a = self.instructions(_BULK.format(table=table, rows=small) + "\n")
        b = self.instructions(_BULK.format(table=table, rows=large) + "\n")
        return (b - a) / (large - small)


def run_capture_parts(
    ctx: Ctx, transactions: tuple[int, int], rows: tuple[int, int]
) -> dict[str, Any]:
    problem = valgrind_problem()
    if problem is not None:
        ctx.log(f"  cannot count instructions: {problem}")
        return {"status": "cannot", "reason": problem}
    base = Path(tempfile.mkdtemp(prefix="pgpulse-parts-"))
    base.chmod(0o755)
    cluster = EmbeddedCluster(base / "data", settings={"wal_level": "logical"})
    try:
        cluster.start()
        _setup(cluster)
        cluster.stop()
        backend = _SingleUser(cluster, base)
        single: dict[str, float] = {}
        bulk: dict[str, float] = {}
        names = [step for step, _, _ in STEPS] + [n for n, _, _, _ in ALTERNATIVES]
        for step in names:
            table = f"parts_{step}"
            single[step] = round(backend.per_transaction(table, *transactions) / 1e3, 1)
            bulk[step] = round(backend.per_row(table, *rows) / 1e3, 2)
            ctx.log(
                f"  {step}: {single[step]:.1f}k instructions per transaction, "
                f"{bulk[step]:.2f}k per row in bulk"
            )
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "status": "ok",
        "transactions": list(transactions),
        "rows": list(rows),
        "steps": [{"step": s, "adds": a} for s, a, _ in STEPS],
        "alternatives": [
            {"name": n, "changes": c, "instead_of": i} for n, c, i, _ in ALTERNATIVES
        ],
        "single_kinstr_per_tx": single,
        "bulk_kinstr_per_row": bulk,
    }
