"""The benchmark's PostgreSQL, its databases, the peers' dependencies and a
description of the machine.

One embedded cluster serves every scenario.  It runs with ``fsync=on`` and
``synchronous_commit=on`` throughout (the honest setting for the cost-to-the-
database scenario, and latency is measured from COMMIT *returning*, so it is not
inflated by the flush).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from pgpulse import capture
from pgpulse.embedded import EmbeddedCluster, _bin_dir, distribution_bin_dir

__all__ = [
    "NODE_DIR",
    "PG_SETTINGS",
    "BenchCluster",
    "ensure_node_bridge",
    "ensure_python_peers",
    "machine_info",
]

PG_SETTINGS = {
    "max_connections": "300",
    # The wal capture source decodes the WAL (scenario 4 measures it).
    "wal_level": "logical",
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
    "log_min_messages": "warning",
}

NODE_DIR = Path(__file__).parent / "peers" / "node_bridge"

DOCS_DDL = """
create table {table} (
    id bigint generated always as identity primary key,
    seq bigint not null,
    shipment_id int not null,
    t_ns bigint not null,
    body text not null
)
"""

# The tutorial trigger: every row, as JSON, through NOTIFY (8000-byte limit and
# all).  Peers (a), (b) and (c) all read this channel.
NOTIFY_DDL = """
create or replace function notify_row() returns trigger language plpgsql as $$
begin
    perform pg_notify(tg_argv[0], json_build_object(
        'table', tg_table_name, 'op', tg_op, 'row', row_to_json(new))::text);
    return new;
end
$$;
create trigger {table}_notify after insert or update on {table}
    for each row execute function notify_row('{channel}');
"""

# Reference floors for the cost scenario: what any trigger-based durable log
# must pay at least, so the pgpulse numbers can be read against physics rather
# than against the targets alone.  Both are statement-level AFTER INSERT
# triggers with a transition table, the same shape as pgpulse's capture.
FLOOR_TRIGGER_DDL = """
create or replace function floor_nothing() returns trigger language plpgsql as $$
begin
    return null;
end
$$;
create trigger {table}_floor after insert on {table}
    referencing new table as n for each statement
    execute function floor_nothing();
"""

# The sink has the source's columns but no index, no constraint and no JSON:
# writing each row again verbatim is the least a trigger-based log can cost.
FLOOR_COPY_DDL = """
create table {sink} (
    id bigint,
    seq bigint,
    shipment_id int,
    t_ns bigint,
    body text
);
create or replace function {table}_copy() returns trigger language plpgsql as $$
begin
    insert into {sink} select * from n;
    return null;
end
$$;
create trigger {table}_floor after insert on {table}
    referencing new table as n for each statement
    execute function {table}_copy();
"""

#: Databases: one per kind of system, so triggers never overlap.
DB_PGPULSE = "bench_pgpulse"
DB_NOTIFY = "bench_notify"
DB_COST = "bench_cost"
#: The capture-cost table again, in a database no gateway reads.
DB_COST_SOLO = "bench_cost_solo"
#: The wal capture source, with its own gateway, running only while measured:
#: a decoding walsender reads ALL the cluster's WAL, so it must not run while
#: the other configurations are measured.
DB_COST_WAL = "bench_cost_wal"
#: The latency table again, watched with the wal source (system pgpulse-wal).
DB_PGPULSE_WAL = "bench_pgpulse_wal"
#: The job table of the consumer-group scenario (worker processes only).
DB_CONSUMERS = "bench_consumers"


async def _drop_database(admin: Any, db: str) -> None:
    """Drop *db* and its replication slots (the wal source's keep it alive)."""
    await admin.execute(
        "select pg_terminate_backend(active_pid) from pg_replication_slots "
        "where database = $1 and active_pid is not null",
        db,
    )
    for _ in range(50):
        try:
            await admin.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                "where database = $1",
                db,
            )
            break
        except asyncpg.ObjectInUseError:
            await asyncio.sleep(0.1)  # the walsender is still exiting
    await admin.execute(f"drop database if exists {db} with (force)")


ALL_DATABASES = (
    DB_PGPULSE,
    DB_CONSUMERS,
    DB_NOTIFY,
    DB_COST,
    DB_COST_SOLO,
    DB_COST_WAL,
    DB_PGPULSE_WAL,
)


class BenchCluster:
    """The embedded PostgreSQL the benchmark starts for itself."""

    def __init__(
        self, existing: EmbeddedCluster | None = None, build: str = "embedded"
    ) -> None:
        """Start a private cluster, or use a running *existing* one (the test
        suite's) and only create and drop the benchmark databases in it.
        *build*: ``embedded`` (the wheel's PostgreSQL) or ``system`` (the
        distribution's, with its JIT on)."""
        self.existing = existing
        self.build = build
        self.base = Path(tempfile.mkdtemp(prefix="pgpulse-bench-"))
        self.cluster = existing or EmbeddedCluster(
            self.base / "data",
            settings=dict(PG_SETTINGS),
            bin_dir=distribution_bin_dir() if build == "system" else None,
        )
        self.version = ""

    def __enter__(self) -> BenchCluster:
        if self.existing is None:
            self.cluster.start()
        asyncio.run(self._setup())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.existing is None:
            self.cluster.destroy()
        else:
            asyncio.run(self._drop())
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.cluster.settings)

    async def _drop(self) -> None:
        admin = await asyncpg.connect(self.dsn())
        try:
            for db in ALL_DATABASES:
                await _drop_database(admin, db)
        finally:
            await admin.close()

    def dsn(self, database: str = "postgres") -> str:
        return self.cluster.dsn(database)

    async def _setup(self) -> None:
        admin = await asyncpg.connect(self.dsn())
        try:
            self.version = await admin.fetchval("show server_version")
            for db in ALL_DATABASES:
                await _drop_database(admin, db)
                await admin.execute(f"create database {db}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn(DB_PGPULSE))
        try:
            await conn.execute(DOCS_DDL.format(table="docs"))
            await capture.watch(conn, "docs")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(DB_PGPULSE_WAL))
        try:
            await conn.execute(DOCS_DDL.format(table="docs"))
            await capture.watch(conn, "docs", source="wal")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(DB_NOTIFY))
        try:
            await conn.execute(DOCS_DDL.format(table="docs"))
            await conn.execute(NOTIFY_DDL.format(table="docs", channel="docs"))
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(DB_COST_SOLO))
        try:
            await conn.execute(DOCS_DDL.format(table="cost_pgpulse"))
            await capture.watch(conn, "cost_pgpulse")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(DB_COST_WAL))
        try:
            await conn.execute(DOCS_DDL.format(table="cost_pgpulse_wal"))
            await capture.watch(conn, "cost_pgpulse_wal", source="wal")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(DB_COST))
        try:
            for table in (
                "cost_plain",
                "cost_pgpulse",
                "cost_notify",
                "cost_floor_trigger",
                "cost_floor_copy",
            ):
                await conn.execute(DOCS_DDL.format(table=table))
            await capture.watch(conn, "cost_pgpulse")
            await conn.execute(
                NOTIFY_DDL.format(table="cost_notify", channel="cost_notify")
            )
            await conn.execute(FLOOR_TRIGGER_DDL.format(table="cost_floor_trigger"))
            await conn.execute(
                FLOOR_COPY_DDL.format(
                    table="cost_floor_copy", sink="cost_floor_copy_sink"
                )
            )
        finally:
            await conn.close()

    async def connections(self, database: str) -> int:
        """Client connections to *database* right now (pg_stat_activity)."""
        conn = await asyncpg.connect(self.dsn())
        try:
            n = await conn.fetchval(
                "select count(*) from pg_stat_activity "
                "where datname = $1 and backend_type = 'client backend'",
                database,
            )
            return int(n)
        finally:
            await conn.close()

    async def connection_names(self, database: str) -> dict[str, int]:
        conn = await asyncpg.connect(self.dsn())
        try:
            rows = await conn.fetch(
                "select application_name, count(*) as n from pg_stat_activity "
                "where datname = $1 and backend_type = 'client backend' "
                "group by 1 order by 1",
                database,
            )
            return {r["application_name"] or "(none)": int(r["n"]) for r in rows}
        finally:
            await conn.close()


def pgbench_path() -> Path:
    return _bin_dir() / "pgbench"


def ensure_python_peers() -> str | None:
    """Install the Python peers' packages into this environment if missing.

    Returns None when available, else the reason they are not.
    """
    needed = {
        "fastapi": "fastapi",
        "broadcaster": "broadcaster[postgres]",
        "sse_starlette": "sse-starlette",
    }
    missing = [
        pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None
    ]
    if not missing:
        return None
    print(f"==> installing benchmark peers: {' '.join(missing)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *missing],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"pip install {' '.join(missing)} failed: {done.stderr.strip()[-300:]}"
    importlib.invalidate_caches()
    return None


def ensure_node_bridge() -> str | None:
    """``npm ci`` the Node bridge if needed; None when ready, else the reason."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found on PATH"
    if (NODE_DIR / "node_modules" / "ws").is_dir() and (
        NODE_DIR / "node_modules" / "pg"
    ).is_dir():
        return None
    print("==> npm ci (benchmark Node bridge)", flush=True)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"npm ci failed: {done.stderr.strip()[-300:]}"
    return None


def _first(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "n/a"


def _revision() -> str:
    """The pgpulse commit measured (``+changes`` when src/ had local edits)."""
    root = Path(__file__).resolve().parents[1]
    head = _first(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _first(["git", "-C", str(root), "status", "--porcelain", "--", "src"])
    return f"{head}+changes" if dirty else head


def machine_info(pg_version: str = "") -> dict[str, Any]:
    model = cores = ""
    for line in _first(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "CPU(s)":
            cores = value.strip()
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": model,
        "cores": int(cores or os.cpu_count() or 0),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "node": _first(["node", "--version"]) if shutil.which("node") else "n/a",
        "revision": _revision(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
