"""``pgpulse watch`` / ``unwatch`` / ``watched``."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import click
from rich.table import Table as RichTable

from pgpulse import capture
from pgpulse.capture.wal import slot_status
from pgpulse.catalog import Catalog
from pgpulse.cli._common import (
    async_command,
    console,
    database_option,
    out,
    resolve_database,
)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.argument("tables", nargs=-1, required=True)
@click.option(
    "--publish",
    type=click.Choice(["rows", "keys"]),
    default="rows",
    show_default=True,
    help="Publish whole rows, or primary keys only.",
)
@click.option("--columns", metavar="A,B", help="Capture only these columns.")
@click.option(
    "--exclude", metavar="A,B", help="Never capture these columns (e.g. password_hash)."
)
@click.option(
    "--source",
    type=click.Choice(capture.SOURCES),
    default="trigger",
    show_default=True,
    help="Capture with triggers, or decode the WAL (needs wal_level=logical; "
    "writers pay no trigger).",
)
@click.option(
    "--emit-migration",
    is_flag=True,
    help="Write the triggers as a migration file instead of applying them.",
)
@click.option(
    "--dir",
    "directory",
    default="migrations",
    show_default=True,
    envvar="PGPULSE_MIGRATIONS",
    help="Migrations directory (with --emit-migration).",
)
@database_option
@async_command
async def watch(
    tables: tuple[str, ...],
    publish: str,
    columns: str | None,
    exclude: str | None,
    source: str,
    emit_migration: bool,
    directory: str,
    database_url: str | None,
) -> None:
    """Capture changes of TABLES (idempotent; re-run to change options)."""
    if emit_migration and source == "wal":
        raise click.UsageError(
            "--source wal cannot be written as a migration: its replication slot "
            "cannot be created inside a migration's transaction. Run `pgpulse watch "
            "--source wal TABLE` against each database instead."
        )
    conn = await asyncpg.connect(resolve_database(database_url))
    try:
        if emit_migration:
            from pgpulse.migrate import new_migration

            catalog = await Catalog.load(conn)
            parts = []
            for name in tables:
                table = catalog.table(name)
                capture._check_options(table, publish, _split(columns), _split(exclude))
                parts.append(
                    capture.watch_sql(table, publish, _split(columns), _split(exclude))
                )
            sql = (
                "-- pgpulse: capture changes for real-time delivery.\n"
                "-- Requires the pgpulse capture schema (installed by `pgpulse serve`"
                " or `pgpulse watch`).\n" + "".join(parts)
            )
            await capture.install_schema(conn)
            names = "_".join(catalog.table(t).name for t in tables)
            label = re.sub(r"[^a-z0-9_]+", "_", ("watch_" + names).lower())
            path = new_migration(Path(directory), label[:60], sql)
            console.print(f"wrote [bold]{path}[/]")
            return
        for name in tables:
            info = await capture.watch(
                conn,
                name,
                publish=publish,
                columns=_split(columns),
                exclude=_split(exclude),
                source=source,
            )
            console.print(
                f"watching [bold]{info.name}[/] ({info.publish}, {info.source})"
            )
    finally:
        await conn.close()


@click.command()
@click.argument("tables", nargs=-1, required=True)
@database_option
@async_command
async def unwatch(tables: tuple[str, ...], database_url: str | None) -> None:
    """Stop capturing changes of TABLES."""
    conn = await asyncpg.connect(resolve_database(database_url))
    try:
        for name in tables:
            was = await capture.unwatch(conn, name)
            console.print(
                f"{'unwatched' if was else 'was not watching'} [bold]{name}[/]"
            )
    finally:
        await conn.close()


@click.command()
@database_option
@async_command
async def watched(database_url: str | None) -> None:
    """List watched tables and their capture options."""
    conn = await asyncpg.connect(resolve_database(database_url))
    try:
        rows = await capture.watched(conn)
        slot = await slot_status(conn) if rows else None
    finally:
        await conn.close()
    table = RichTable("table", "publish", "source", "columns", "excluded")
    for w in rows:
        table.add_row(
            w.name,
            w.publish,
            w.source,
            ", ".join(w.columns) if w.columns else "all",
            ", ".join(w.exclude) or "-",
        )
    if not rows:
        console.print("no tables are watched yet; try `pgpulse watch TABLE`")
    else:
        out.print(table)
    if slot is not None:
        who = (
            f"decoded by walsender pid {slot.decoding_pid}"
            if slot.decoding_pid
            else "[bold red]nobody decodes it[/] (start `pgpulse serve`)"
        )
        out.print(
            f"wal source: slot {slot.name}, {who}; WAL held back "
            f"{slot.held_back_bytes / 1_048_576:,.1f} MB; "
            f"logged up to {slot.decoded_lsn}"
        )
