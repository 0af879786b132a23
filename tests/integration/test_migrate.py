"""The migration runner against a real PostgreSQL: order, atomicity, drift, locks."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest

from pgpulse.migrate import (
    MigrationError,
    MigrationObserver,
    State,
    apply_migrations,
    migration_status,
    new_migration,
    repair_checksums,
)
from pgpulse.migrate._runner import LOCK_KEY


def write(directory: Path, filename: str, sql: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(sql)
    return path


async def exists(conn: asyncpg.Connection, relation: str) -> bool:
    return await conn.fetchval("select to_regclass($1)", relation) is not None


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    write(directory, "20260101000000_create_docs.sql", "create table docs (id int);")
    write(
        directory,
        "20260102000000_add_title.sql",
        "alter table docs add column title text;\n"
        "insert into docs values (1, 'first');",
    )
    write(
        directory,
        "20260103000000_add_tags.sql",
        "create table tags (doc_id int, tag text);",
    )
    return directory


async def test_pending_migrations_apply_in_version_order_and_are_recorded(
    conn, migrations
):
    applied = await apply_migrations(conn, migrations)
    assert [m.version for m in applied] == [
        20260101000000,
        20260102000000,
        20260103000000,
    ]
    assert [m.statements for m in applied] == [1, 2, 1]
    assert await conn.fetchval("select title from docs where id = 1") == "first"
    rows = await conn.fetch("select * from pgpulse.migrations order by version")
    assert [r["name"] for r in rows] == ["create_docs", "add_title", "add_tags"]
    first = rows[0]
    assert first["checksum"] == applied[0].checksum
    assert first["applied_by"] == await conn.fetchval("select current_user")
    assert first["client_host"] == socket.gethostname()
    assert first["duration_ms"] >= 0
    assert first["applied_at"] is not None


async def test_a_second_run_applies_nothing(conn, migrations):
    await apply_migrations(conn, migrations)
    assert await apply_migrations(conn, migrations) == []
    assert await conn.fetchval("select count(*) from docs") == 1


async def test_applying_with_a_dsn_records_the_migrate_application_name(
    database, conn, migrations
):
    await apply_migrations(database, migrations)
    assert await conn.fetchval(
        "select distinct application from pgpulse.migrations"
    ) == ("migrations:pgpulse")


async def test_failing_migration_is_rolled_back_and_blocks_later_ones(conn, migrations):
    write(
        migrations,
        "20260102000000_add_title.sql",
        "alter table docs add column title text;\n"
        "insert into docs values (1, 'first');\n"
        "update docs\n"
        "   set title = upper(title)\n"
        "  from no_such_table\n"
        " where true;\n",
    )
    with pytest.raises(MigrationError) as caught:
        await apply_migrations(conn, migrations)
    error = caught.value
    message = str(error)
    assert "20260102000000_add_title.sql failed at line 5" in message
    assert "statement 3 of 3" in message
    assert 'relation "no_such_table" does not exist' in message
    assert "42P01" in message
    assert "  > 5 |   from no_such_table" in message
    assert error.line == 5
    assert error.sqlstate == "42P01"
    assert error.statement is not None and error.statement.startswith("update docs")
    # The first file stays applied; nothing of the failing file remains.
    assert await exists(conn, "docs")
    columns = await conn.fetch(
        "select column_name from information_schema.columns where table_name = 'docs'"
    )
    assert [c["column_name"] for c in columns] == ["id"]
    assert await conn.fetchval("select count(*) from docs") == 0
    assert not await exists(conn, "tags")
    versions = await conn.fetch("select version from pgpulse.migrations")
    assert [v["version"] for v in versions] == [20260101000000]


async def test_failure_message_carries_postgres_hint(conn, tmp_path):
    write(tmp_path, "1_bad_call.sql", "select 1;\n\nselect\n  lower(42);\n")
    with pytest.raises(MigrationError) as caught:
        await apply_migrations(conn, tmp_path)
    message = str(caught.value)
    assert "failed at line 4" in message
    assert "1_bad_call.sql:4:3:\n" in message
    assert "  > 4 |   lower(42)\n" + " " * 10 + "^" in message
    assert "function lower(integer) does not exist" in message
    assert "HINT: No function matches" in message
    assert caught.value.hint is not None


async def test_concurrent_index_without_the_directive_hints_at_it(conn, tmp_path):
    write(tmp_path, "1_table.sql", "create table t (x int);")
    write(tmp_path, "2_index.sql", "create index concurrently t_x on t (x);")
    with pytest.raises(MigrationError, match="-- pgpulse: no-transaction"):
        await apply_migrations(conn, tmp_path)


async def test_no_transaction_file_runs_create_index_concurrently(conn, tmp_path):
    write(tmp_path, "1_table.sql", "create table t (x int); insert into t values (1);")
    write(
        tmp_path,
        "2_index.sql",
        "-- pgpulse: no-transaction\n"
        "drop index concurrently if exists t_x;\n"
        "create index concurrently t_x on t (x);\n",
    )
    applied = await apply_migrations(conn, tmp_path)
    assert [m.name for m in applied] == ["table", "index"]
    valid = await conn.fetchval(
        "select indisvalid from pg_index where indexrelid = 't_x'::regclass"
    )
    assert valid is True
    assert await conn.fetchval("select count(*) from pgpulse.migrations") == 2


async def test_no_transaction_failure_keeps_earlier_statements_and_says_so(
    conn, tmp_path
):
    write(
        tmp_path,
        "1_partial.sql",
        "-- pgpulse: no-transaction\n"
        "create table a (x int);\n"
        "create table a (x int);\n",
    )
    with pytest.raises(MigrationError, match="first 1 statement"):
        await apply_migrations(conn, tmp_path)
    assert await exists(conn, "a")
    assert await conn.fetchval("select count(*) from pgpulse.migrations") == 0


async def test_edited_applied_file_is_refused_until_checksums_are_repaired(
    conn, migrations
):
    await apply_migrations(conn, migrations)
    edited = migrations / "20260101000000_create_docs.sql"
    edited.write_text("-- the documents\ncreate table docs (id int);")
    new_migration(migrations, "later", "create table later (x int);")
    with pytest.raises(MigrationError) as caught:
        await apply_migrations(conn, migrations)
    assert str(edited) in str(caught.value)
    assert "repair-checksums" in str(caught.value)
    assert not await exists(conn, "later")

    repaired = await repair_checksums(conn, migrations)
    assert [r.filename for r in repaired] == [edited.name]
    assert [m.name for m in await apply_migrations(conn, migrations)] == ["later"]
    states = {s.name: s.state for s in await migration_status(conn, migrations)}
    assert set(states.values()) == {State.APPLIED}


async def test_dry_run_lists_pending_migrations_and_changes_nothing(conn, migrations):
    planned = await apply_migrations(conn, migrations, dry_run=True)
    assert [m.name for m in planned] == ["create_docs", "add_title", "add_tags"]
    assert all(m.dry_run and m.duration == 0.0 for m in planned)
    assert not await exists(conn, "docs")
    assert not await exists(conn, "pgpulse.migrations")


async def test_to_stops_at_the_given_version(conn, migrations):
    applied = await apply_migrations(conn, migrations, to=20260102000000)
    assert [m.name for m in applied] == ["create_docs", "add_title"]
    assert not await exists(conn, "tags")
    assert [m.name for m in await apply_migrations(conn, migrations)] == ["add_tags"]


async def test_to_an_unknown_version_is_an_error(conn, migrations):
    with pytest.raises(MigrationError, match=r"--to 2026.*no migration file"):
        await apply_migrations(conn, migrations, to=2026)
    assert not await exists(conn, "docs")


async def test_status_shows_applied_pending_changed_and_missing(conn, migrations):
    await apply_migrations(conn, migrations, to=20260102000000)
    (migrations / "20260101000000_create_docs.sql").write_text("-- edited\n")
    await conn.execute(
        "insert into pgpulse.migrations (version, name, checksum, duration_ms)"
        " values (20251231000000, 'squashed', 'x', 0)"
    )
    statuses = await migration_status(conn, migrations)
    assert [(s.version, s.state) for s in statuses] == [
        (20251231000000, State.MISSING),
        (20260101000000, State.CHANGED),
        (20260102000000, State.APPLIED),
        (20260103000000, State.PENDING),
    ]
    assert statuses[2].record is not None
    assert statuses[3].record is None


async def test_status_of_a_database_never_migrated_is_all_pending(conn, migrations):
    statuses = await migration_status(conn, migrations)
    assert {s.state for s in statuses} == {State.PENDING}
    assert not await exists(conn, "pgpulse.migrations")


async def test_tracking_table_is_created_in_a_database_without_pgpulse(
    pg_server, tmp_path
):
    name = pg_server.new_database_name()
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f"create database {name} template template0")
        new_migration(tmp_path, "first", "create table first (x int);")
        applied = await apply_migrations(pg_server.dsn(name), tmp_path)
        assert [m.name for m in applied] == ["first"]
    finally:
        await admin.execute(f"drop database if exists {name} with (force)")
        await admin.close()


async def test_concurrent_runs_in_one_process_apply_each_file_once(database, tmp_path):
    write(tmp_path, "1_slow.sql", "create table runs (n int); select pg_sleep(0.5);")
    write(tmp_path, "2_count.sql", "insert into runs values (2);")
    results = await asyncio.gather(
        apply_migrations(database, tmp_path), apply_migrations(database, tmp_path)
    )
    assert sorted(len(r) for r in results) == [0, 2]
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("select count(*) from runs") == 1
    finally:
        await conn.close()


class Recorder(MigrationObserver):
    def __init__(self) -> None:
        self.waited_for: list[int | None] = []

    def waiting_for_lock(self, holder_pid: int | None) -> None:
        self.waited_for.append(holder_pid)


async def test_lock_timeout_names_the_holder_and_applies_nothing(
    conn, database, migrations
):
    await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
    recorder = Recorder()
    try:
        with pytest.raises(MigrationError, match=r"backend pid \d+.*--lock-timeout"):
            await apply_migrations(
                database, migrations, lock_timeout=0.3, observer=recorder
            )
    finally:
        await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
    assert recorder.waited_for == [conn.get_server_pid()]
    assert not await exists(conn, "docs")


async def test_migrating_an_empty_directory_does_nothing(conn, tmp_path):
    assert await apply_migrations(conn, tmp_path) == []


async def test_missing_directory_raises_before_connecting(tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        await apply_migrations("postgresql://nowhere.invalid/x", tmp_path / "nope")


async def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    url = "postgresql://me:s3cret@127.0.0.1:1/x"
    with pytest.raises(MigrationError, match="could not connect") as caught:
        await apply_migrations(url, tmp_path)
    assert "s3cret" not in str(caught.value)
