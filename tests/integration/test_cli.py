"""The `pgpulse` command line, run as users run it (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from pgpulse.embedded import free_port
from tests.gateway import SSEStream


def pgpulse(
    *args: str, dsn: str | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("DATABASE_URL", None)
    if dsn:
        env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pgpulse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def test_help_explains_every_command():
    result = pgpulse("--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "watch",
        "unwatch",
        "watched",
        "tail",
        "prune",
        "demo",
        "migrate",
        "budget",
    ):
        assert command in result.stdout
        sub = pgpulse(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "Usage:" in sub.stdout


async def test_watch_watched_unwatch_round_trip(conn, database):
    await conn.execute("create table docs (id int primary key, secret text)")
    result = pgpulse("watch", "docs", "--exclude", "secret", dsn=database)
    assert result.returncode == 0, result.stderr
    assert "watching public.docs" in result.stderr
    listed = pgpulse("watched", dsn=database)
    assert "public.docs" in listed.stdout and "secret" in listed.stdout
    assert pgpulse("unwatch", "docs", dsn=database).returncode == 0
    assert "no tables are watched" in pgpulse("watched", dsn=database).stderr


async def test_watch_with_the_wal_source(conn, database):
    await conn.execute("create table docs (id int primary key)")
    result = pgpulse("watch", "docs", "--source", "wal", dsn=database)
    assert result.returncode == 0, result.stderr
    assert "watching public.docs (rows, wal)" in result.stderr
    listed = pgpulse("watched", dsn=database)
    assert "wal" in listed.stdout
    # The slot, and that nothing decodes it while no gateway runs.
    assert "wal source: slot pgpulse_" in listed.stdout
    assert "nobody decodes it" in listed.stdout
    assert await conn.fetchval(
        "select count(*) from pg_replication_slots "
        "where slot_name = pgpulse.slot_name()"
    )
    # A migration file cannot create the slot: refused with the way forward.
    refused = pgpulse(
        "watch", "docs", "--source", "wal", "--emit-migration", dsn=database
    )
    assert refused.returncode != 0
    assert "pgpulse watch --source wal TABLE" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert pgpulse("unwatch", "docs", dsn=database).returncode == 0
    assert not await conn.fetchval(
        "select count(*) from pg_replication_slots "
        "where slot_name = pgpulse.slot_name()"
    )


async def test_watch_errors_are_one_clear_line_without_traceback(conn, database):
    await conn.execute("create table nopk (a int)")
    await conn.execute("create table documents (id int primary key)")
    cases = {
        ("watch", "nopk"): "has no primary key",
        ("watch", "documnets"): "Did you mean 'documents'",
        ("watch", "documents", "--exclude", "nope"): "column 'nope' does not exist",
        ("watch", "x; drop table documents"): "does not exist",
        ("prune",): "--older-than",
        ("prune", "--older-than", "soon"): "not a duration",
    }
    for args, message in cases.items():
        result = pgpulse(*args, dsn=database)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert await conn.fetchval("select to_regclass('documents') is not null")


def test_unreachable_database_is_a_clear_error():
    result = pgpulse("watched", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert result.returncode != 0
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


async def test_emit_migration_writes_a_file_that_migrate_applies(
    conn, database, tmp_path
):
    await conn.execute("create table Docs (id int primary key)")
    result = pgpulse(
        "watch", "docs", "--emit-migration", "--dir", str(tmp_path), dsn=database
    )
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("*.sql")
    assert "pgpulse.watch" in path.read_text()
    assert await conn.fetchval("select count(*) from pgpulse.watched") == 0
    migrate = pgpulse("migrate", "--dir", str(tmp_path), dsn=database)
    assert migrate.returncode == 0, migrate.stderr
    assert await conn.fetchval("select count(*) from pgpulse.watched") == 1


async def test_prune_deletes_old_changes(conn, database):
    await conn.execute("create table docs (id int primary key)")
    pgpulse("watch", "docs", dsn=database)
    await conn.execute("insert into docs select generate_series(1, 50)")
    result = pgpulse("prune", "--keep-rows", "10", dsn=database)
    assert result.returncode == 0, result.stderr
    assert "pruned 40 changes" in result.stderr
    assert await conn.fetchval("select count(*) from pgpulse.changes") == 10


async def _exits(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Wait for *proc* to exit; if it does not, fail with where it is stuck
    (PYTHONFAULTHANDLER dumps every thread's stack on SIGABRT)."""
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.send_signal(signal.SIGABRT)
        await proc.wait()
        stderr = await proc.stderr.read() if proc.stderr else b""
        raise AssertionError(
            f"did not exit within {timeout} s of SIGINT; stacks:\n"
            + stderr.decode(errors="replace")[-6000:]
        ) from None


async def test_tail_prints_live_changes_matching_its_filter(conn, database):
    await conn.execute("create table docs (id int primary key, shipment_id int)")
    pgpulse("watch", "docs", dsn=database)
    env = {**os.environ, "DATABASE_URL": database, "PYTHONFAULTHANDLER": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgpulse",
        "tail",
        "docs",
        "--filter",
        "shipment_id=eq.42",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        started = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"tailing docs:shipment_id=eq.42" in started
        await conn.execute("insert into docs values (1, 7), (2, 42)")
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert b'"pk":{"id":2}' in line
        assert b'"shipment_id":7' not in line
    finally:
        proc.send_signal(signal.SIGINT)
        await _exits(proc, 15)


async def test_serve_with_several_workers_has_one_listener_per_process(conn, database):
    await conn.execute("create table docs (id int primary key)")
    pgpulse("watch", "docs", dsn=database)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgpulse",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
        listeners = 0
        while time.monotonic() < deadline and listeners < 2:
            listeners = await conn.fetchval(
                "select count(*) from pg_stat_activity "
                "where application_name = 'pgpulse-listener'"
            )
            await asyncio.sleep(0.2)
        assert listeners == 2  # one listener connection per process
        async with SSEStream(url, ["docs"]) as stream:
            await stream.next_event()
            await conn.execute("insert into docs values (1)")
            (event,) = await stream.changes(1)
            assert event.data["pk"] == {"id": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


async def test_serve_migrate_refuses_to_start_when_a_migration_fails(
    database, tmp_path
):
    (tmp_path / "20260101000000_good.sql").write_text("create table a (id int);")
    (tmp_path / "20260101000001_bad.sql").write_text("create table b (id nope);")
    result = pgpulse(
        "serve",
        "--migrate",
        "--migrations-dir",
        str(tmp_path),
        "--port",
        str(free_port()),
        dsn=database,
    )
    assert result.returncode != 0
    assert "not starting: migration failed" in result.stderr
    assert "nope" in result.stderr
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("select to_regclass('a') is not null")
        assert await conn.fetchval("select to_regclass('b') is null")
    finally:
        await conn.close()


def test_serve_refuses_to_start_when_its_budget_share_is_too_small(database, tmp_path):
    (tmp_path / "pgpulse.toml").write_text(
        "[budget]\nheadroom = 2\n[budget.services]\napi = 10\npgpulse = 2\n"
    )
    result = pgpulse("serve", "--port", str(free_port()), dsn=database, cwd=tmp_path)
    assert result.returncode != 0
    assert "budget gives service 'pgpulse' 2 connections" in result.stderr


def test_demo_starts_on_embedded_postgres_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "PGPULSE_DATA_DIR": str(tmp_path / "pg")}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgpulse",
            "demo",
            "--no-browser",
            "--port",
            str(port),
            "--writer-interval",
            "0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        page = httpx.get(url + "/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert httpx.get(url + "/v1/client.js").status_code == 200
        with httpx.stream(
            "GET", url + "/v1/events", params={"sub": "documents"}, timeout=20
        ) as response:
            seen = ""
            for chunk in response.iter_text():
                seen += chunk
                if "event: change" in seen:
                    break
        assert "event: ready" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "embedded PostgreSQL" in err
    assert "Traceback" not in err


def test_serve_on_a_missing_database_is_one_clear_line(pg_server):
    result = pgpulse(
        "serve", "--port", str(free_port()), dsn=pg_server.dsn("no_such_database")
    )
    assert result.returncode != 0
    assert 'database "no_such_database" does not exist' in result.stderr
    assert "Traceback" not in result.stderr
