"""Shared CLI plumbing: the database option, the embedded default, error handling.

Why: every command takes ``--database-url``/``DATABASE_URL``; when neither is
given, commands that need a database start (or reuse) the embedded PostgreSQL in
the per-user data directory and say where it is, so ``psql`` can connect too.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console

from pgpulse.exceptions import PgPulseError

__all__ = ["console", "database_option", "resolve_database", "run"]


def _console(stderr: bool) -> Console:
    """A console that wraps and colours only on a terminal: piped to a file
    or another program, lines stay whole and plain."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=not terminal,
        width=None if terminal else 10_000,
    )


console = _console(stderr=True)
"""Messages and progress (stderr)."""
out = _console(stderr=False)
"""Results (stdout)."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def database_option(func: F) -> F:
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        default=None,
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL, else an embedded PostgreSQL "
        "kept in the per-user data directory).",
    )(func)


def resolve_database(url: str | None, *, quiet: bool = False) -> str:
    """The URL to use: the given one, or the embedded server's (started if needed)."""
    if url:
        return url
    from pgpulse.embedded import EmbeddedCluster, default_data_dir

    data_dir = default_data_dir()
    cluster = EmbeddedCluster(
        data_dir, settings={"wal_level": "logical", "max_connections": "200"}
    )
    fresh = not cluster.initialized
    running = cluster.is_running()
    if not quiet:
        what = "initializing" if fresh else ("using" if running else "starting")
        console.print(
            f"[dim]no DATABASE_URL: {what} embedded PostgreSQL in {data_dir}[/]"
        )
    cluster.start()
    if not running:
        # We started it, so we stop it when this command ends; the data stays.
        atexit.register(cluster.stop)
    dsn = cluster.dsn("postgres")
    if not quiet:
        console.print(f"[bold]embedded PostgreSQL:[/] {dsn}   (psql {dsn})")
    return dsn


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro*, turning expected errors into clear one-line CLI errors."""
    try:
        return asyncio.run(coro)
    except PgPulseError as exc:
        raise click.ClickException(str(exc)) from None
    except asyncpg.PostgresError as exc:
        detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
        raise click.ClickException(f"PostgreSQL: {exc}{detail}") from None
    except (OSError, asyncpg.InterfaceError) as exc:
        raise click.ClickException(
            f"cannot reach the database: {exc}. Check --database-url / DATABASE_URL."
        ) from None


def async_command(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run(func(*args, **kwargs))

    return wrapper


def setup_logging(verbose: bool) -> None:
    """Logs on stderr: rich on a terminal; one plain line per record when
    piped to a file or a log collector (journald, docker), easy to grep."""
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(
            level=level, format="%(name)s: %(message)s", handlers=[handler]
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").addFilter(_IntentionalAbortFilter())


class _IntentionalAbortFilter(logging.Filter):
    """uvicorn reports a response we cut off on purpose (a stalled client, whose
    reason pgpulse already logged) as an error; drop that duplicate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()
