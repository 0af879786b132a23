"""Accept a DSN or an open connection, the way an app or a fixture has one.

Why: the CLI has a URL, ``pgpulse serve --migrate`` and test fixtures already
hold a connection; both should get the same runner without opening a second
connection needlessly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from pgpulse.migrate._errors import MigrationError

__all__ = ["APPLICATION_NAME", "Conn", "DsnOrConn", "connection", "redact_dsn"]

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
DsnOrConn: TypeAlias = "str | asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

APPLICATION_NAME = "migrations:pgpulse"
"""Counted under a ``migrations`` service by ``pgpulse budget``."""


def redact_dsn(dsn: str) -> str:
    """*dsn* with its password replaced, safe to print in an error."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def connection(
    target: DsnOrConn, application_name: str = APPLICATION_NAME
) -> AsyncIterator[Conn]:
    """Yield *target* itself, or a connection to it that is closed afterwards."""
    if not isinstance(target, str):
        yield target
        return
    settings: dict[str, str] = {}
    # An application_name in the URL or PGAPPNAME is the user's choice; keep it.
    if "application_name=" not in target and "PGAPPNAME" not in os.environ:
        settings["application_name"] = application_name
    try:
        conn = await asyncpg.connect(target, server_settings=settings or None)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
        raise MigrationError(
            f"could not connect to {redact_dsn(target)}: {exc}; check the "
            "database URL (--database-url or DATABASE_URL) and that the server "
            "is running"
        ) from None
    try:
        yield conn
    finally:
        await conn.close()
