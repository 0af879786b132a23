"""``pgpulse budget``: does every service's connection share fit the server?

Why a command that exits non-zero: run it in CI or before a deploy, and a pool
size bumped in one service fails the pipeline instead of production at peak.
Registered on the main CLI with ``main.add_command(budget)``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pgpulse.budget import OTHER, BudgetReport, check_budget, load_budget
from pgpulse.exceptions import PgPulseError

__all__ = ["budget"]


def _table(report: BudgetReport) -> Table:
    table = Table(title="connection budget")
    table.add_column("service")
    table.add_column("application_name")
    table.add_column("declared", justify="right")
    table.add_column("in use", justify="right")
    for row in report.services:
        declared = "-" if row.declared is None else str(row.declared)
        in_use = f"[bold red]{row.in_use}[/]" if row.over else str(row.in_use)
        names = ", ".join(n or "''" for n in row.application_names)
        service = f"[dim]{OTHER}[/]" if row.declared is None else row.service
        table.add_row(service, names, declared, in_use)
    table.add_section()
    table.add_row("headroom", "", str(report.headroom), "")
    total = str(report.declared_total)
    if not report.fits:
        total = f"[bold red]{total}[/]"
    table.add_row("total", "", total, str(report.in_use))
    table.add_row(
        "server allows",
        f"max_connections {report.max_connections} - reserved "
        f"{report.superuser_reserved + report.reserved}",
        str(report.available),
        "",
    )
    return table


@click.command()
@click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    metavar="URL",
    help="postgresql:// URL of the server to check  [env: DATABASE_URL]",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="pgpulse.toml or pyproject.toml with the budget (default: look for "
    "pgpulse.toml, then pyproject.toml, in the current directory).",
)
def budget(database_url: str | None, config: Path | None) -> None:
    """Check that declared connections fit max_connections; show live usage.

    Exits with status 1 when the declared services plus headroom do not fit,
    or a service holds more connections than it declared.
    """
    if not database_url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL")
    try:
        declared = load_budget(config)
        if declared is None:
            where = str(config) if config else "pgpulse.toml or pyproject.toml"
            raise click.ClickException(
                f"no connection budget in {where}: add a [budget] table (in "
                "pyproject.toml: [tool.pgpulse.budget]) with services = "
                "{name = max connections} and a headroom; see docs/operations.md"
            )
        report = asyncio.run(check_budget(database_url, declared))
    except PgPulseError as exc:
        raise click.ClickException(str(exc)) from None
    Console().print(_table(report))
    if report.ok:
        click.echo(report.message)
    else:
        click.echo(report.message, err=True)
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    budget(prog_name="pgpulse budget")
