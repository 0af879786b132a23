"""``pgpulse setup --grant ROLE``: install the capture schema and grant a role
what a gateway needs (run once by the database owner)."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import click

from pgpulse.capture.privileges import grant_sql, setup
from pgpulse.cli._common import (
    async_command,
    console,
    database_option,
    resolve_database,
)


@click.command(name="setup")
@click.option(
    "--grant",
    "role",
    required=True,
    metavar="ROLE",
    help="The role the gateway runs as (no superuser, CREATEDB or CREATEROLE needed).",
)
@click.option(
    "--emit-migration",
    is_flag=True,
    help="Write the grants as a migration file instead of applying them.",
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
async def setup_command(
    role: str, emit_migration: bool, directory: str, database_url: str | None
) -> None:
    """Install or upgrade the capture schema and grant ROLE exactly what the
    gateway, `watch` (of tables ROLE owns), `prune` and the wal decoder need."""
    conn = await asyncpg.connect(resolve_database(database_url))
    try:
        if emit_migration:
            from pgpulse.capture import install_schema
            from pgpulse.migrate import new_migration

            await install_schema(conn)
            sql = (
                f"-- pgpulse: what role {role} needs to run a gateway.\n"
                "-- The capture schema is installed by `pgpulse setup` or by a "
                "gateway with the rights to.\n" + grant_sql(role)
            )
            label = re.sub(r"[^a-z0-9_]+", "_", f"pgpulse_grant_{role}".lower())
            path = new_migration(Path(directory), label[:60], sql)
            console.print(f"wrote [bold]{path}[/]")
            return
        version = await setup(conn, role)
        console.print(
            f"capture schema v{version} installed; role [bold]{role}[/] may now "
            "serve, watch its own tables and prune"
        )
        can_replicate = await conn.fetchval(
            "select rolreplication or rolsuper from pg_roles where rolname = $1", role
        )
        if not can_replicate:
            console.print(
                f"[dim]for tables watched with --source wal, {role} also needs "
                f"REPLICATION: ALTER ROLE {role} REPLICATION (on RDS: GRANT "
                f"rds_replication TO {role})[/]"
            )
    finally:
        await conn.close()
