"""What a newcomer trips on, fixed: serve before the database is up, bad and
busy ports, bad durations, output piped to a file, the budget of a decoder."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from pgpulse import capture
from pgpulse.embedded import EmbeddedCluster, free_port
from tests.integration.test_cli import pgpulse


def test_serve_waits_for_a_database_that_is_not_up_yet():
    port = free_port()
    http = free_port()
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgpulse",
            "serve",
            "--database-url",
            dsn,
            "--port",
            str(http),
            "--wait-for-db",
            "60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = Path(tempfile.mkdtemp(prefix="pgpulse-late-"))
    cluster = EmbeddedCluster(base / "data", port=port)
    try:
        cluster.init()  # takes a while: the gateway is already waiting
        assert proc.poll() is None, "serve gave up before the database came up"
        cluster.start()
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{http}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None
            import time

            time.sleep(0.1)
        else:
            raise AssertionError("the gateway never became healthy")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
        cluster.destroy()
    assert "waiting for the database" in output
    assert "Traceback" not in output


def test_serve_gives_up_on_a_database_that_never_comes_with_a_clear_message():
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = pgpulse("serve", "--database-url", dsn, "--wait-for-db", "1s")
    assert result.returncode != 0
    assert "did not answer within 1 s" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_ports_are_checked_and_bound_before_ready(database):
    bad = pgpulse("serve", "--database-url", database, "--port", "99999")
    assert bad.returncode == 2 and "1<=x<=65535" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = pgpulse("serve", "--database-url", database, "--port", str(port))
    assert busy.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "gateway ready" not in busy.stdout + busy.stderr
    assert "gateway on http" not in busy.stdout + busy.stderr
    assert "Traceback" not in busy.stderr


@pytest.mark.parametrize(
    "duration", ["nan", "1e12d", "-1d", "", "inf", "7 weeks", "99999999d"]
)
def test_bad_durations_are_refused_without_a_traceback(database, duration):
    result = pgpulse("prune", "--older-than", duration, dsn=database)
    assert result.returncode == 2, result.stderr
    assert "duration" in result.stderr or "century" in result.stderr
    assert "Traceback" not in result.stderr


async def test_prune_older_than_zero_prunes_everything_captured_before_now(
    conn, database
):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs select generate_series(1, 20)")
    await asyncio.sleep(0.01)
    result = await asyncio.to_thread(
        pgpulse, "prune", "--older-than", "0", dsn=database
    )
    assert result.returncode == 0, result.stderr
    assert "pruned 20 changes" in result.stderr
    assert await conn.fetchval("select count(*) from pgpulse.changes") == 0


async def test_output_piped_to_a_file_is_not_wrapped(conn, database):
    name = "a_table_with_a_name_long_enough_to_wrap_an_eighty_col"
    await conn.execute(f"create table {name} (id int primary key)")
    await capture.watch(conn, name)
    result = await asyncio.to_thread(pgpulse, "watched", dsn=database)
    assert result.returncode == 0
    assert any(name in line for line in result.stdout.splitlines())
    assert "\x1b[" not in result.stdout  # no colour codes in a file
