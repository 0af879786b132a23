"""Install and upgrade the ``pgpulse`` capture schema (versioned SQL files).

Why: the capture schema lives in the user's database and outlives any one pgpulse
version.  A fresh database gets ``sql/schema.sql`` (the current schema in one
file); an older one gets each ``sql/migrations/NNNN_*.sql`` above its recorded
version, in order, under an advisory lock so concurrent starts don't race.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["SCHEMA_VERSION", "install_schema", "migrations", "schema_sql"]

_LOCK_KEY = 0x7067_7075_6C73  # "pgpuls": serializes installs across processes


def _sql_dir() -> Any:
    return resources.files("pgpulse.capture").joinpath("sql")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, sql)`` of every capture-schema migration, in order."""
    out = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(out)


def schema_sql() -> str:
    """The current capture schema as one script."""
    return str(_sql_dir().joinpath("schema.sql").read_text())


SCHEMA_VERSION = migrations()[-1][0]


async def installed_version(conn: Any) -> int | None:
    """The capture-schema version in this database, or ``None``."""
    exists = await conn.fetchval("select to_regclass('pgpulse.schema_version')")
    if exists is None:
        return None
    return int(await conn.fetchval("select max(version) from pgpulse.schema_version"))


async def install_schema(conn: Any) -> int:
    """Create or upgrade the capture schema; returns the version now installed."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
        current = await installed_version(conn)
        if current is None:
            await conn.execute(schema_sql())
        else:
            for version, _name, sql in migrations():
                if version > current:
                    await conn.execute(sql)
    return SCHEMA_VERSION
