"""``pgpulse migrate`` as users run it: click commands and real processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pgpulse.cli.migrate import migrate


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command in a thread: it calls asyncio.run() itself."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, migrate, list(args), env=env, catch_exceptions=False
    )


def write(directory: Path, filename: str, sql: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(sql)


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    write(directory, "20260101000000_create_docs.sql", "create table docs (id int);")
    write(directory, "20260102000000_add_tags.sql", "create table tags (t text);")
    return directory


async def test_bare_migrate_applies_pending_files_from_env_settings(
    database, conn, migrations
):
    env = {"DATABASE_URL": database, "PGPULSE_MIGRATIONS": str(migrations)}
    result = await invoke(env=env)
    assert result.exit_code == 0, result.output
    assert "applied 20260101000000_create_docs.sql" in result.output
    assert "applied 2 migration(s)" in result.output
    assert await conn.fetchval("select to_regclass('tags')") is not None
    again = await invoke(env=env)
    assert "nothing to apply" in again.output


async def test_up_subcommand_with_to_stops_at_the_version(database, conn, migrations):
    result = await invoke(
        "up",
        "--database-url",
        database,
        "--dir",
        str(migrations),
        "--to",
        "20260101000000",
    )
    assert result.exit_code == 0, result.output
    assert await conn.fetchval("select to_regclass('tags')") is None


async def test_group_options_reach_the_status_subcommand(database, migrations):
    await invoke(
        "--database-url", database, "--dir", str(migrations), "--to", "20260101000000"
    )
    (migrations / "20260101000000_create_docs.sql").write_text("-- edited\n")
    write(migrations, "20260103000000_more.sql", "select 1;")
    result = await invoke(
        "--database-url", database, "--dir", str(migrations), "status"
    )
    assert result.exit_code == 0, result.output
    for word in ("changed", "pending", "20260103000000", "create_docs"):
        assert word in result.output
    assert "0 applied, 2 pending, 1 changed, 0 missing" in result.output
    assert "repair-checksums" in result.output


async def test_dry_run_prints_statements_and_runs_nothing(database, conn, migrations):
    result = await invoke(
        "--database-url", database, "--dir", str(migrations), "--dry-run"
    )
    assert result.exit_code == 0, result.output
    assert "-- would apply 20260101000000_create_docs.sql" in result.output
    assert "create table docs (id int);" in result.output
    assert "2 migration(s) would be applied" in result.output
    assert await conn.fetchval("select to_regclass('docs')") is None
    assert await conn.fetchval("select to_regclass('pgpulse.migrations')") is None


async def test_failing_migration_exits_nonzero_with_the_error_and_no_traceback(
    database, conn, migrations
):
    write(migrations, "20260103000000_broken.sql", "select 1;\nselect nope;\n")
    result = await invoke("--database-url", database, "--dir", str(migrations))
    assert result.exit_code == 1
    assert "20260103000000_broken.sql failed at line 2" in result.output
    assert 'column "nope" does not exist' in result.output
    assert "Traceback" not in result.output
    count = await conn.fetchval("select count(*) from pgpulse.migrations")
    assert count == 2


async def test_new_creates_a_timestamped_file_and_rejects_bad_names(tmp_path):
    result = await invoke("new", "add_documents", "--dir", str(tmp_path / "m"))
    assert result.exit_code == 0, result.output
    (created,) = (tmp_path / "m").iterdir()
    assert created.name.endswith("_add_documents.sql")
    assert str(created) in result.output
    bad = await invoke("new", "Add-Documents", "--dir", str(tmp_path / "m"))
    assert bad.exit_code == 1
    assert "invalid migration name 'Add-Documents'" in bad.output


async def test_missing_database_url_is_a_usage_error(migrations):
    result = await invoke("--dir", str(migrations), env={"DATABASE_URL": ""})
    assert result.exit_code == 2
    assert "pass --database-url or set DATABASE_URL" in result.output


async def test_missing_directory_is_a_clear_error(database, tmp_path):
    result = await invoke(
        "status", "--database-url", database, "--dir", str(tmp_path / "nope")
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output


async def test_repair_checksums_command_lets_migrate_run_again(database, migrations):
    await invoke("--database-url", database, "--dir", str(migrations))
    (migrations / "20260102000000_add_tags.sql").write_text(
        "-- tags\ncreate table tags (t text);"
    )
    refused = await invoke("--database-url", database, "--dir", str(migrations))
    assert refused.exit_code == 1
    assert "20260102000000_add_tags.sql" in refused.output
    repaired = await invoke(
        "repair-checksums", "--database-url", database, "--dir", str(migrations)
    )
    assert "recorded the new checksum of 20260102000000_add_tags.sql" in (
        repaired.output
    )
    again = await invoke("--database-url", database, "--dir", str(migrations))
    assert again.exit_code == 0, again.output


CLI = "from pgpulse.cli.migrate import migrate; migrate(prog_name='pgpulse migrate')"


async def test_two_concurrent_migrate_processes_apply_each_file_exactly_once(
    database, conn, tmp_path
):
    """The second process waits for the lock, then finds everything applied.

    The first file blocks on an advisory lock the test holds, so both
    processes are guaranteed to overlap; a no-transaction CREATE INDEX
    CONCURRENTLY follows, which would deadlock against a waiter that blocks
    inside pg_advisory_lock (it keeps a snapshot open).
    """
    write(
        tmp_path,
        "1_gate.sql",
        "create table runs (n int);\n"
        "select pg_advisory_xact_lock(4242);\n"
        "insert into runs values (1);\n",
    )
    write(
        tmp_path,
        "2_index.sql",
        "-- pgpulse: no-transaction\ncreate index concurrently runs_n on runs (n);\n",
    )
    write(tmp_path, "3_more.sql", "insert into runs values (3);")
    await conn.execute("select pg_advisory_lock(4242)")
    args = ["-c", CLI, "--database-url", database, "--dir", str(tmp_path)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(30):
            while True:  # one run is inside 1_gate.sql, the other polls the lock
                waiting = await conn.fetchval(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                    " and objid = 4242 and not granted"
                )
                runners = await conn.fetchval(
                    "select count(*) from pg_stat_activity"
                    " where application_name = 'migrations:pgpulse'"
                )
                if waiting == 1 and runners == 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
    finally:
        await conn.execute("select pg_advisory_unlock(4242)")
    async with asyncio.timeout(60):
        outputs = [(await p.communicate())[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applier, waiter = sorted(outputs, key=lambda o: "nothing to apply" in o)
    assert "applied 3 migration(s)" in applier
    assert "waiting for another migration run" in waiter
    assert "nothing to apply" in waiter
    assert await conn.fetchval("select array_agg(n order by n) from runs") == [1, 3]
    assert await conn.fetchval("select count(*) from pgpulse.migrations") == 3
    valid = await conn.fetchval(
        "select indisvalid from pg_index where indexrelid = 'runs_n'::regclass"
    )
    assert valid is True


async def test_migrate_process_without_a_tty_prints_plain_lines(database, tmp_path):
    write(tmp_path, "1_a.sql", "create table a (x int);")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        "--database-url",
        database,
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines[0].startswith("applied 1_a.sql (1 statement, ")
    assert "\x1b[" not in out.decode()


async def test_progress_bar_on_a_terminal_still_reports_each_migration(
    database, migrations
):
    result = await invoke(
        "--database-url",
        database,
        "--dir",
        str(migrations),
        env={"FORCE_COLOR": "1", "COLUMNS": "100"},
    )
    assert result.exit_code == 0, result.output
    assert "20260102000000_add_tags.sql" in result.output
    assert "applied 2 migration(s)" in result.output
