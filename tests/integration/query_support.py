"""Shared pieces of the query-layer tests: the seeded schema and reference queries.

Why a module and not a conftest: the fixtures stay next to the tests that use
them, and read-only tests share one seeded database per module (creating one
per test would dominate the suite's run time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tests.pg import TestServer

SCHEMA_SQL = Path(__file__).with_name("query_schema.sql").read_text()


async def load_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA_SQL)
    finally:
        await conn.close()


@asynccontextmanager
async def seeded_database(server: TestServer, template: str) -> AsyncIterator[str]:
    """A fresh database with the query schema and its data; yields its DSN."""
    name = server.new_database_name()
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f"create database {name} template {template}")
    finally:
        await admin.close()
    try:
        await load_schema(server.dsn(name))
        yield server.dsn(name)
    finally:
        admin = await asyncpg.connect(server.dsn())
        try:
            await admin.execute(f"drop database if exists {name} with (force)")
        finally:
            await admin.close()


async def hand(conn: asyncpg.Connection[Any], sql: str, *args: Any) -> list[Any]:
    """Rows of a hand-written query, as the JSON values PostgreSQL would give."""
    rows = await conn.fetch(f"select row_to_json(q)::text from ({sql}) as q", *args)
    return [orjson.loads(r[0]) for r in rows]


def canon(value: Any) -> Any:
    """Sort every list (recursively) so results compare without row order."""
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [canon(v) for v in value]
        return sorted(items, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return value


async def table_counts(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    """Row counts of every seeded table (to prove nothing was changed)."""
    out = {}
    for name in (
        "ports",
        "users",
        "shipments",
        "shipment_customs",
        "documents",
        "nodes",
        "checks",
        "labels",
        "document_labels",
        "Audit Log",
        "samples",
    ):
        ident = '"' + name.replace('"', '""') + '"'
        out[name] = await conn.fetchval(f"select count(*) from {ident}")
    return out
