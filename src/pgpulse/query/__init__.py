"""A supabase-py / postgrest-js shaped query builder on asyncpg.

::

    async with pgpulse.query.connect(url) as db:
        result = await (
            db.table("documents")
            .select("id, title, shipment:shipments(id, port), nodes(id, checks(*))")
            .eq("status", "final")
            .order("id")
            .execute()
        )
        result.data  # list of dicts, embedded tables nested

Every chain is ONE SQL statement with bound parameters; ``builder.sql()`` shows it.
Names are validated against the catalog before anything runs.  See docs/query.md.
"""

from __future__ import annotations

from pgpulse.query._builder import Connection, QueryBuilder
from pgpulse.query._client import APPLICATION_NAME, QueryClient, connect
from pgpulse.query._errors import (
    QueryError,
    RelationshipError,
    SelectError,
    SingleRowError,
)
from pgpulse.query._params import RESERVED_PARAMS, apply_params, parse_order
from pgpulse.query._result import Result

__all__ = [
    "APPLICATION_NAME",
    "RESERVED_PARAMS",
    "Connection",
    "QueryBuilder",
    "QueryClient",
    "QueryError",
    "RelationshipError",
    "Result",
    "SelectError",
    "SingleRowError",
    "apply_params",
    "connect",
    "parse_order",
]
