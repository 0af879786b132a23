"""A live query checked against the catalog and the caller's rules, and how
its state reads it (:mod:`pgpulse.server.live`).

Why its own module: the query is built with the REST endpoint's machinery
(exposure, policies, row-level security as the caller's role) once, and built
again when the catalog changes (a migration: the gateway reads the catalog
again on ``pgpulse migrate``'s or ``watch``'s notice), so that the next read
has the table's new shape and the clients get a new snapshot of it, never rows
of the old shape.  A read that fails on a missing column or table asks for the
catalog too: the clients reconnect to a query built on the new one, or are
told what no longer exists.
"""

from __future__ import annotations

from typing import Any

from pgpulse.auth.access import SESSION_CLAIMS
from pgpulse.catalog import Table
from pgpulse.exceptions import DatabaseError
from pgpulse.gateway import Gateway
from pgpulse.live.query import LiveQuery
from pgpulse.live.registry import Affects
from pgpulse.live.shared import SharedQuery
from pgpulse.log.change import Change
from pgpulse.query import QueryBuilder, QueryClient, apply_params
from pgpulse.query._plan import Level, build_plan
from pgpulse.query._select import parse_select
from pgpulse.routing.subscriber import row_keys
from pgpulse.server.exposure import RestExposure
from pgpulse.server.rest import rest_client, run_as_viewer

__all__ = ["LivePlan", "plan_live"]

#: Errors of a read whose query predates a change of the schema.
_SCHEMA_CHANGED = {"42703", "42P01", "0A000", "42804"}


def _build(
    gateway: Gateway, access: Any, query: LiveQuery
) -> tuple[RestExposure, Table, QueryBuilder, QueryClient]:
    # No computed columns or relationships: a function may read tables the
    # query does not name, whose changes would go unnoticed.
    client, exposure = rest_client(gateway, access, functions=False)
    table = client.schema.table(query.table)
    query.check_key(table)
    builder = apply_params(client.table(query.table), query.params)
    for column, desc, nulls in query.order_terms(table):
        builder = builder.order(column, desc=desc, nulls_first=nulls)
    builder.sql()  # checks every name, and the caller's rules on every table
    return exposure, table, builder, client


class LivePlan:
    """A checked live query, ready to be shared or created."""

    def __init__(
        self,
        gateway: Gateway,
        access: Any,
        query: LiveQuery,
        tables: frozenset[str],
        affects: Affects | None,
        context: Any,
    ) -> None:
        self.gateway = gateway
        self.access = access
        self.query = query
        self.generation = gateway.catalog_generation
        self.exposure, self.table, self.builder, _client = _build(
            gateway, access, query
        )
        self.tables = tables
        self.affects = affects
        self.query_id = query.key(context)

    async def fetch(self) -> list[dict[str, Any]]:
        gateway = self.gateway
        if gateway.catalog_generation != self.generation:
            # The catalog was read again (a migration): build on the new one.
            self.generation = gateway.catalog_generation
            self.exposure, self.table, self.builder, _client = _build(
                gateway, self.access, self.query
            )
        try:
            if self.exposure.viewers:
                result = await run_as_viewer(gateway.pool, self.builder, self.exposure)
            else:
                result = await self.builder.execute()
        except DatabaseError as exc:
            if exc.sqlstate in _SCHEMA_CHANGED:
                gateway.schedule_catalog_refresh()
            raise
        data = result.data
        rows = list(data) if isinstance(data, list) else [data]
        self.query.check_size(len(rows))
        return rows

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each output column: its name, PostgreSQL type and nullability
        (embedded rows are ``json``)."""
        names = list(rows[0]) if rows else list(self.table.columns)
        out = []
        for name in names:
            column = self.table.columns.get(name)
            if column is None:
                out.append({"name": name, "type": "json", "nullable": True})
            else:
                out.append(
                    {
                        "name": name,
                        "type": column.type_name,
                        "nullable": column.nullable,
                    }
                )
        return out

    async def create(self) -> tuple[SharedQuery, Affects | None]:
        label = f"{self.table.qualified} ({self.query.select})"
        shared = SharedQuery(
            self.query_id,
            label,
            self.table.primary_key,
            self.tables,
            self.fetch,
            self.describe,
        )
        return shared, self.affects


async def plan_live(gateway: Gateway, access: Any, query: LiveQuery) -> LivePlan:
    """Check *query* for *access* (raises the REST endpoint's errors)."""
    _exposure, table, _builder, client = _build(gateway, access, query)
    items = parse_select(query.select)
    root = build_plan(client.schema, table, items, query.select)
    tables = frozenset(_tables(root))
    affects = await _cheap_test(gateway, access, query, table, tables)
    context: Any = None
    if access.enabled:
        # Whose rows: the role and claims (minus those that differ per
        # session) decide the policy filters and row-level security.
        stable = {
            k: v for k, v in access.claims.values.items() if k not in SESSION_CLAIMS
        }
        context = [access.claims.role, stable]
    return LivePlan(gateway, access, query, tables, affects, context)


def _tables(level: Level) -> list[str]:
    out = [level.table.qualified]
    relation = level.relation
    if relation is not None and relation.junction is not None:
        out.append(relation.junction.qualified)
    for child in level.children:
        out.extend(_tables(child))
    return out


async def _cheap_test(
    gateway: Gateway,
    access: Any,
    query: LiveQuery,
    table: Table,
    tables: frozenset[str],
) -> Affects | None:
    """For a query on one table whose filters Python decides exactly: a
    change neither row of which passes them cannot change the result."""
    if tables != {table.qualified} or not query.filters:
        return None
    if any("." in key for key, _value in query.filters):
        return None  # a modifier of an embedded table
    text = ";".join(f"{k}={v}" for k, v in query.filters)
    try:
        (spec,) = await gateway.parse_subscriptions([f"{query.table}:{text}"], access)
    except Exception:  # no cheap test: every change reads again
        return None
    predicate = spec.predicate
    if predicate is None or spec.db_filter is not None:
        return None

    def affects(change: Change) -> bool:
        new, old = row_keys(change)
        return (new is not None and predicate(new) is True) or (
            old is not None and predicate(old) is True
        )

    return affects
