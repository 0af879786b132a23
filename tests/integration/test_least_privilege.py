"""A gateway as an ordinary role: no superuser, CREATEDB or CREATEROLE.

An admin runs ``pgpulse setup --grant ROLE`` once; then the role serves,
resumes, prunes and watches the tables it owns.  What it lacks is named, with
the command that grants it.
"""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from pgpulse import capture
from pgpulse.exceptions import ConfigurationError
from tests.gateway import SSEStream


async def _role(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(
        f"do $$ begin create role {name} login nosuperuser nocreatedb "
        "nocreaterole; exception when duplicate_object then null; end $$"
    )


def _as(dsn: str, role: str) -> str:
    return dsn.replace("postgres@", f"{role}@", 1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgpulse", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_ordinary_role_serves_resumes_prunes_and_watches_its_tables(
    conn, database, gateway_factory
):
    await _role(conn, "pgpulse_gw")
    await conn.execute("create table docs (id int primary key, title text)")
    await conn.execute("alter table docs owner to pgpulse_gw")
    done = _cli("setup", "--grant", "pgpulse_gw", "--database-url", database)
    assert done.returncode == 0, done.stderr
    assert "pgpulse_gw" in done.stderr
    # The role itself watches its own table.
    role_conn = await asyncpg.connect(_as(database, "pgpulse_gw"))
    try:
        assert not await role_conn.fetchval(
            "select rolsuper or rolcreatedb or rolcreaterole from pg_roles "
            "where rolname = current_user"
        )
        await capture.watch(role_conn, "docs")
    finally:
        await role_conn.close()
    gw = gateway_factory(
        "--keep-rows", "10", "--prune-every", "0.3", dsn=_as(database, "pgpulse_gw")
    )
    async with SSEStream(gw.url, ["docs"]) as stream:
        cursor = (await stream.next_event()).id
        await conn.execute("insert into docs values (1, 'a')")
        assert [e.data["pk"]["id"] for e in await stream.changes(1)] == [1]
    await conn.execute("insert into docs select g, 'b' from generate_series(2, 5) g")
    async with SSEStream(gw.url, ["docs"], last_event_id=cursor) as stream:
        await stream.next_event()
        got = [e.data["pk"]["id"] for e in await stream.changes(5)]
        assert got == [1, 2, 3, 4, 5]
    # Pruning as that role: the log shrinks to the newest 10.
    await conn.execute("insert into docs select g, 'c' from generate_series(6, 60) g")
    for _ in range(100):
        if await conn.fetchval("select count(*) from pgpulse.changes") <= 10:
            break
        await asyncio_sleep(0.1)
    assert await conn.fetchval("select count(*) from pgpulse.changes") <= 10
    assert "pruned" in gw.log()


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_missing_privileges_are_named_with_the_command_that_grants_them(
    conn, database, gateway_factory
):
    await _role(conn, "pgpulse_gw")
    await _role(conn, "pgpulse_nobody")
    await conn.execute("create table theirs (id int primary key)")
    assert (
        _cli("setup", "--grant", "pgpulse_gw", "--database-url", database).returncode
        == 0
    )
    role_conn = await asyncpg.connect(_as(database, "pgpulse_gw"))
    try:
        with pytest.raises(ConfigurationError) as refused:
            await capture.watch(role_conn, "theirs")
        assert "OWNER TO pgpulse_gw" in str(refused.value)
        assert "GRANT TRIGGER" in str(refused.value)
        await conn.execute("alter table theirs owner to pgpulse_gw")
        with pytest.raises(ConfigurationError) as refused:
            await capture.watch(role_conn, "theirs", source="wal")
        message = str(refused.value)
        assert "REPLICATION" in message or "GRANT CREATE ON DATABASE" in message
    finally:
        await role_conn.close()
    # A role nobody set up: the gateway says what to run, instead of
    # "permission denied for schema pgpulse".
    with pytest.raises(RuntimeError) as refused_start:
        gateway_factory(dsn=_as(database, "pgpulse_nobody"))
    assert "pgpulse setup --grant pgpulse_nobody" in str(refused_start.value)
    missing = _cli("setup", "--grant", "no_such_role", "--database-url", database)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
