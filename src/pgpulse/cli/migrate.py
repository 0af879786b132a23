"""``pgpulse migrate``: apply, create and inspect SQL migrations.

Why a group that runs ``up`` when called bare: a deploy step should be the
one obvious command, ``pgpulse migrate``; the subcommands are for people.
Registered on the main CLI with ``main.add_command(migrate)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pgpulse.migrate import (
    AppliedMigration,
    MigrationError,
    MigrationFile,
    MigrationObserver,
    Migrator,
    State,
    Statement,
    new_migration,
)

__all__ = ["migrate"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_STATE_STYLE = {
    State.APPLIED: "green",
    State.PENDING: "yellow",
    State.CHANGED: "bold red",
    State.MISSING: "magenta",
}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro*; a `MigrationError` becomes a clean CLI error, no traceback."""
    try:
        return asyncio.run(coro)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None


def _connection_options(func: F) -> F:
    func = click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="PGPULSE_MIGRATIONS",
        default=None,
        help="Directory of migration files  [env: PGPULSE_MIGRATIONS; "
        "default: migrations]",
    )(func)
    func = click.option(
        "--database-url",
        envvar="DATABASE_URL",
        default=None,
        metavar="URL",
        help="postgresql:// URL of the database  [env: DATABASE_URL]",
    )(func)
    return func


def _apply_options(func: F) -> F:
    func = click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="Give up after waiting this many seconds for a concurrent run.",
    )(func)
    func = click.option(
        "--dry-run",
        is_flag=True,
        default=None,
        help="Print what would run; run and record nothing.",
    )(func)
    func = click.option(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="Apply pending migrations up to and including this version.",
    )(func)
    return func


def _inherit(ctx: click.Context, name: str, value: Any) -> Any:
    """A subcommand option, else the same option given to the group."""
    if value is not None:
        return value
    parent = ctx.parent
    return None if parent is None else parent.params.get(name)


def _database_url(ctx: click.Context, value: str | None) -> str:
    url = _inherit(ctx, "database_url", value)
    if not url:
        raise click.UsageError(
            "no database: pass --database-url or set DATABASE_URL", ctx=ctx
        )
    return str(url)


def _directory(ctx: click.Context, value: Path | None) -> Path:
    directory = _inherit(ctx, "directory", value)
    return Path(directory) if directory is not None else Path("migrations")


class _ConsoleObserver(MigrationObserver):
    """Progress bar on a terminal; one plain line per migration otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def waiting_for_lock(self, holder_pid: int | None) -> None:
        who = f" (backend pid {holder_pid})" if holder_pid else ""
        self.console.print(
            f"waiting for another migration run{who} to finish...", highlight=False
        )

    def planned(self, migrations: Sequence[MigrationFile], *, dry_run: bool) -> None:
        if dry_run:
            self._print_plan(migrations)
            return
        if migrations and self.console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("statements"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            total = sum(len(m.statements()) for m in migrations)
            self.task = self.progress.add_task("migrating", total=total)
            self.progress.start()

    def _print_plan(self, migrations: Sequence[MigrationFile]) -> None:
        for m in migrations:
            mode = " (no transaction)" if m.no_transaction else ""
            self.console.print(f"-- would apply {m.filename}{mode}", highlight=False)
            for statement in m.statements():
                self.console.print(
                    f"-- line {statement.line}\n{statement.text};",
                    markup=False,
                    highlight=False,
                )

    def migration_started(self, migration: MigrationFile) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=migration.filename)

    def statement_done(self, migration: MigrationFile, statement: Statement) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def migration_done(self, applied: AppliedMigration) -> None:
        self.console.print(
            f"applied {applied.filename} ({applied.statements} "
            f"statement{'' if applied.statements == 1 else 's'}, "
            f"{applied.duration * 1000:.0f} ms)",
            highlight=False,
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _up(
    ctx: click.Context,
    database_url: str | None,
    directory: Path | None,
    to: int | None,
    dry_run: bool | None,
    lock_timeout: float | None,
) -> None:
    url = _database_url(ctx, database_url)
    console = Console()
    observer = _ConsoleObserver(console)
    migrator = Migrator(
        _directory(ctx, directory),
        observer=observer,
        lock_timeout=_inherit(ctx, "lock_timeout", lock_timeout),
    )
    dry = bool(_inherit(ctx, "dry_run", dry_run))
    try:
        done = _run(migrator.apply(url, to=_inherit(ctx, "to", to), dry_run=dry))
    finally:
        observer.close()
    if dry:
        click.echo(
            f"dry run: {len(done)} migration(s) would be applied; nothing was run"
            if done
            else "dry run: nothing to apply; the database is up to date"
        )
    elif done:
        seconds = sum(m.duration for m in done)
        click.echo(f"applied {len(done)} migration(s) in {seconds:.2f}s")
    else:
        click.echo("nothing to apply; the database is up to date")


@click.group(invoke_without_command=True)
@_connection_options
@_apply_options
@click.pass_context
def migrate(
    ctx: click.Context,
    database_url: str | None,
    directory: Path | None,
    to: int | None,
    dry_run: bool | None,
    lock_timeout: float | None,
) -> None:
    """Apply pending SQL migrations (same as `pgpulse migrate up`).

    Files are DIR/<UTC timestamp>_<name>.sql, applied in order, each in its
    own transaction, each once (recorded in pgpulse.migrations).
    """
    if ctx.invoked_subcommand is None:
        _up(ctx, database_url, directory, to, dry_run, lock_timeout)


@migrate.command()
@_connection_options
@_apply_options
@click.pass_context
def up(
    ctx: click.Context,
    database_url: str | None,
    directory: Path | None,
    to: int | None,
    dry_run: bool | None,
    lock_timeout: float | None,
) -> None:
    """Apply pending migrations in version order."""
    _up(ctx, database_url, directory, to, dry_run, lock_timeout)


@migrate.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PGPULSE_MIGRATIONS",
    default=None,
    help="Directory of migration files  [env: PGPULSE_MIGRATIONS; default: migrations]",
)
@click.pass_context
def new(ctx: click.Context, name: str, directory: Path | None) -> None:
    """Create a migration file, DIR/<UTC timestamp>_NAME.sql.

    NAME is lowercase letters, digits and underscores, e.g. add_documents.
    """
    try:
        path = new_migration(_directory(ctx, directory), name)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {path}")


@migrate.command()
@_connection_options
@click.pass_context
def status(
    ctx: click.Context, database_url: str | None, directory: Path | None
) -> None:
    """Show every migration as applied, pending, changed or missing."""
    url = _database_url(ctx, database_url)
    rows = _run(Migrator(_directory(ctx, directory)).status(url))
    table = Table(title="migrations")
    for column in ("version", "name", "state", "applied at", "by", "took"):
        fixed = column in ("version", "state", "applied at")
        table.add_column(
            column,
            justify="right" if column == "took" else "left",
            no_wrap=fixed,
            overflow="ellipsis" if fixed else "fold",
        )
    for row in rows:
        record = row.record
        by = ""
        if record is not None:
            by = record.applied_by + (
                f"@{record.client_host}" if record.client_host else ""
            )
        table.add_row(
            str(row.version),
            row.name,
            f"[{_STATE_STYLE[row.state]}]{row.state.value}[/]",
            "" if record is None else f"{record.applied_at.astimezone(UTC):%F %TZ}",
            by,
            "" if record is None else f"{record.duration_ms:.0f} ms",
        )
    console = Console()
    if rows:
        console.print(table)
    counts = {state: sum(r.state is state for r in rows) for state in State}
    click.echo(", ".join(f"{n} {state.value}" for state, n in counts.items()))
    changed = [r.filename for r in rows if r.state is State.CHANGED]
    if changed:
        click.echo(
            f"edited after being applied: {', '.join(changed)}; `pgpulse migrate` "
            "will refuse to run until they are reverted or accepted with "
            "`pgpulse migrate repair-checksums`",
            err=True,
        )


@migrate.command("repair-checksums")
@_connection_options
@click.pass_context
def repair_checksums(
    ctx: click.Context, database_url: str | None, directory: Path | None
) -> None:
    """Accept edits to applied files by recording their new checksums.

    Nothing is re-run: use this only when the edit leaves the schema as it was
    (comments, formatting). Put real changes in a new migration.
    """
    url = _database_url(ctx, database_url)
    repaired = _run(Migrator(_directory(ctx, directory)).repair_checksums(url))
    for row in repaired:
        click.echo(f"recorded the new checksum of {row.filename}")
    if not repaired:
        click.echo("no applied migration was edited; nothing to repair")


if __name__ == "__main__":
    migrate(prog_name="pgpulse migrate")
