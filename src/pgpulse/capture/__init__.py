"""Capture: which tables are watched, and how their changes reach the log.

``watch`` installs (idempotently) the statement-level triggers defined by the
capture schema's ``pgpulse.watch()`` function, or with ``source="wal"`` adds the
table to the publication a gateway decodes from the WAL (``capture/wal.py``,
``pgpulse/decoder.py``); identifiers are resolved through
the catalog first so a typo gets a clear error with suggestions, and every value is
a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from pgpulse.capture.privileges import check_schema
from pgpulse.capture.schema import SCHEMA_VERSION, install_schema
from pgpulse.capture.wal import disable_wal_if_unused, enable_wal
from pgpulse.catalog import Catalog, Table
from pgpulse.exceptions import (
    ConfigurationError,
    DatabaseError,
    NoPrimaryKeyError,
    ValidationError,
)

__all__ = [
    "SCHEMA_VERSION",
    "WatchedTable",
    "install_schema",
    "table_name_of",
    "unwatch",
    "watch",
    "watch_sql",
    "watched",
]


@dataclass(frozen=True)
class WatchedTable:
    name: str
    """Schema-qualified table name, e.g. ``public.documents``."""
    publish: str
    """``rows`` (full rows in events) or ``keys`` (primary keys only)."""
    columns: tuple[str, ...] | None
    """Captured columns, or ``None`` for all columns."""
    exclude: tuple[str, ...]
    """Columns left out of events (e.g. ``password_hash``)."""
    source: str = "trigger"
    """``trigger`` (triggers write the log) or ``wal`` (decoded from the WAL)."""


SOURCES = ("trigger", "wal")


def table_name_of(target: Any) -> str:
    """Accept a table name, a SQLAlchemy ``Table`` or a declarative model class."""
    if isinstance(target, str):
        return target
    table = getattr(target, "__table__", target)
    name = getattr(table, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"expected a table name, SQLAlchemy Table or model class, got {target!r}"
        )
    schema = getattr(table, "schema", None)
    return f"{schema}.{name}" if schema else name


def _check_options(
    table: Table,
    publish: str,
    columns: list[str] | None,
    exclude: list[str] | None,
    source: str = "trigger",
) -> None:
    if publish not in ("rows", "keys"):
        raise ValidationError(f"publish must be 'rows' or 'keys', got {publish!r}")
    if source not in SOURCES:
        raise ValidationError(f"source must be 'trigger' or 'wal', got {source!r}")
    if table.kind not in ("r", "p"):
        raise ValidationError(
            f"{table.qualified!r} is not a table (views cannot be watched); "
            "watch the tables it reads from."
        )
    if not table.primary_key:
        raise NoPrimaryKeyError(table.qualified)
    for name in [*(columns or []), *(exclude or [])]:
        table.column(name)
    for name in exclude or []:
        if name in table.primary_key:
            raise ValidationError(
                f"column {name!r} is part of the primary key of {table.qualified!r} "
                "and cannot be excluded: events identify rows by it."
            )


def watch_sql(
    table: Table,
    publish: str,
    columns: list[str] | None,
    exclude: list[str] | None,
    source: str = "trigger",
) -> str:
    """The SQL that watches *table*, for a migration file (literals quoted).

    With source ``wal`` the database must have been set up once by pgpulse
    (publication and slot, :func:`enable_wal`); the SQL says so if not."""

    def lit(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def arr(values: list[str] | None) -> str:
        if values is None:
            return "null"
        return "array[" + ", ".join(lit(v) for v in values) + "]::text[]"

    tail = "" if source == "trigger" else f", {lit(source)}"
    return (
        f"select pgpulse.watch({lit(table.sql)}::regclass, {lit(publish)}, "
        f"{arr(columns)}, {arr(exclude)}{tail});\n"
    )


async def watch(
    conn: Any,
    target: Any,
    *,
    publish: str = "rows",
    columns: list[str] | None = None,
    exclude: list[str] | None = None,
    source: str = "trigger",
    catalog: Catalog | None = None,
) -> WatchedTable:
    """Start capturing changes of *target* (idempotent; re-watching updates options).

    ``source="wal"`` captures from the WAL instead of triggers: writers pay no
    second write (needs ``wal_level = logical``; a running gateway decodes).

    Raises :class:`UnknownTableError`, :class:`UnknownColumnError`,
    :class:`NoPrimaryKeyError` or :class:`ValidationError` before touching the
    database when the request is wrong.
    """
    await check_schema(conn)
    await install_schema(conn)
    catalog = catalog or await Catalog.load(conn)
    table = catalog.table(table_name_of(target))
    _check_options(table, publish, columns, exclude, source)
    try:
        if source == "wal":
            await enable_wal(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise await _missing_privilege(conn, table, exc) from None
    try:
        await conn.execute(
            "select pgpulse.watch($1::regclass, $2, $3::text[], $4::text[], $5)",
            table.sql,
            publish,
            columns,
            exclude,
            source,
        )
        if source == "trigger":
            await disable_wal_if_unused(conn)
        else:
            # Running gateways look for the slot now rather than at their
            # next periodic look.
            await conn.execute("select pg_notify('pgpulse', 'wal')")
        # Running gateways read their catalog again: the table is
        # subscribable at once, with its new options.
        await conn.execute("select pg_notify('pgpulse', 'catalog')")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise await _missing_privilege(conn, table, exc) from None
    except asyncpg.PostgresError as exc:
        raise DatabaseError.from_asyncpg(exc) from exc
    return WatchedTable(
        table.qualified,
        publish,
        tuple(columns) if columns is not None else None,
        tuple(exclude or ()),
        source,
    )


async def _missing_privilege(
    conn: Any, table: Table, exc: BaseException
) -> ConfigurationError:
    """What a role lacks to watch *table*, and the command that grants it."""
    role = await conn.fetchval("select current_user")
    database = await conn.fetchval("select current_database()")
    message = str(exc).splitlines()[0]
    if "replication" in message:
        fix = (
            f"the wal source needs the REPLICATION attribute: ALTER ROLE {role} "
            f"REPLICATION (on Amazon RDS: GRANT rds_replication TO {role})"
        )
    elif (
        "owner" in message
        or "trigger" in message
        or f"for table {table.name}" in message
    ):
        fix = (
            f"capture puts a trigger on {table.qualified}, which only its owner or "
            f"a role with TRIGGER on it may do: ALTER TABLE {table.sql} OWNER TO "
            f"{role}, or GRANT TRIGGER ON {table.sql} TO {role}"
        )
    elif "database" in message:
        fix = (
            "the wal source creates a publication, which needs CREATE on the "
            f"database: GRANT CREATE ON DATABASE {database} TO {role}"
        )
    else:
        fix = f"as the database owner run: pgpulse setup --grant {role}"
    return ConfigurationError(
        f"role {role!r} cannot watch {table.qualified} ({message}); {fix}"
    )


async def unwatch(conn: Any, target: Any, *, catalog: Catalog | None = None) -> bool:
    """Stop capturing *target*; returns whether it was watched."""
    await install_schema(conn)
    catalog = catalog or await Catalog.load(conn)
    table = catalog.table(table_name_of(target))
    was = bool(await conn.fetchval("select pgpulse.unwatch($1::regclass)", table.sql))
    await disable_wal_if_unused(conn)
    await conn.execute("select pg_notify('pgpulse', 'catalog')")
    return was


async def watched(conn: Any) -> list[WatchedTable]:
    """Every watched table with its capture options."""
    exists = await conn.fetchval("select to_regclass('pgpulse.watched')")
    if exists is None:
        return []
    rows = await conn.fetch(
        "select tbl::regclass::text as reg, name, publish, columns, exclude, source "
        "from pgpulse.watched order by name"
    )
    return [
        WatchedTable(
            r["name"],
            r["publish"],
            tuple(r["columns"]) if r["columns"] is not None else None,
            tuple(r["exclude"] or ()),
            r["source"],
        )
        for r in rows
    ]
