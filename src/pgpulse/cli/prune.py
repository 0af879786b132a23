"""``pgpulse prune``: trim the change log."""

from __future__ import annotations

import datetime as dt

import asyncpg
import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from pgpulse.cli._common import (
    async_command,
    console,
    database_option,
    resolve_database,
)
from pgpulse.cli.serve import parse_duration
from pgpulse.log.prune import prune as prune_log


@click.command()
@click.option(
    "--older-than",
    default=None,
    metavar="DURATION",
    help="Delete changes older than this (e.g. 7d, 12h; 0 = all changes "
    "captured before now).",
)
@click.option(
    "--keep-rows", type=int, default=None, help="Keep only the newest N changes."
)
@database_option
@async_command
async def prune(
    older_than: str | None, keep_rows: int | None, database_url: str | None
) -> None:
    """Delete old changes from the log (clients behind get a 'reset' event)."""
    if older_than is None and keep_rows is None:
        raise click.UsageError("give --older-than DURATION and/or --keep-rows N")
    if keep_rows is not None and keep_rows < 0:
        raise click.BadParameter("--keep-rows must be >= 0")
    age = (
        dt.timedelta(seconds=parse_duration(older_than))
        if older_than is not None
        else None
    )
    conn = await asyncpg.connect(resolve_database(database_url))
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("pruning", total=None)
            deleted = 0

            def step(n: int) -> None:
                nonlocal deleted
                deleted += n
                progress.update(task, description=f"pruned {deleted} changes")

            result = await prune_log(
                conn, older_than=age, keep_rows=keep_rows, progress=step
            )
    finally:
        await conn.close()
    console.print(f"pruned {result.deleted} changes")
