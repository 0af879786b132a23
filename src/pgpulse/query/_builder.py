"""The chainable query builder: ``db.table("documents").select(...).eq(...)``.

Builders are immutable values: every method returns a new builder, so a base
query can be kept and extended in several ways.  Nothing touches the database
until ``execute()`` (or ``await builder``); ``sql()`` shows exactly what would run.
Names are checked against the catalog when the SQL is built, so the chain can be
written in any order.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeAlias

import asyncpg
import asyncpg.pool

from pgpulse.query._chain import FilterMethods, split_path
from pgpulse.query._errors import QueryError
from pgpulse.query._execute import Execution
from pgpulse.query._plan import Order
from pgpulse.query._result import Result
from pgpulse.query._schema import Schema
from pgpulse.query._select import parse_select
from pgpulse.query._sql import Params
from pgpulse.query._state import (
    Action,
    Path,
    Row,
    State,
    checked_rows,
    column_list,
    compile_state,
    count_flag,
    non_negative,
    returning_flag,
)
from pgpulse.routing.filters import And, Condition, Filter, Or

__all__ = ["Connection", "QueryBuilder"]

Connection: TypeAlias = (
    "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"
)


class Backend(Protocol):
    """What a builder needs from its client (a pool and the catalog)."""

    @property
    def pool(self) -> asyncpg.Pool[Any]: ...

    @property
    def schema(self) -> Schema: ...


class _Not(FilterMethods):
    """``builder.not_``: the next filter is negated (``.not_.eq(...)``)."""

    _negate = True

    def __init__(self, builder: QueryBuilder) -> None:
        self._builder = builder

    def _add(self, filt: Filter, path: Path = ()) -> QueryBuilder:
        return self._builder._add(filt, path)

    def __call__(self, column: str, operator: str, value: object) -> QueryBuilder:
        """postgrest-js style: ``not_("status", "eq", "done")``."""
        return self.filter(column, operator, value)


class QueryBuilder(FilterMethods):
    """A query on one table; see ``docs/query.md`` for every method and its SQL."""

    __slots__ = ("_backend", "_s")

    def __init__(self, backend: Backend, table: str) -> None:
        if not isinstance(table, str) or not table:
            raise QueryError(f"table() takes a table name, got {table!r}")
        self._backend = backend
        self._s = State(table)

    def _with(self, **changes: Any) -> QueryBuilder:
        clone = QueryBuilder.__new__(QueryBuilder)
        clone._backend = self._backend
        clone._s = replace(self._s, **changes)
        return clone

    def _add(self, filt: Filter, path: Path = ()) -> QueryBuilder:
        return self._with(filters=(*self._s.filters, (path, filt)))

    def _write(self, action: Action, **changes: Any) -> QueryBuilder:
        if self._s.action != "select":
            raise QueryError(
                f"this query is already an {self._s.action}(); start a new one with "
                f"db.table({self._s.table!r})"
            )
        return self._with(action=action, **changes)

    def __repr__(self) -> str:
        return f"<QueryBuilder {self._s.action} {self._s.table!r}>"

    # -- what to do ---------------------------------------------------------------

    def select(
        self, columns: str = "*", *, count: str | None = None, head: bool = False
    ) -> QueryBuilder:
        """Columns and embedded tables to return; after a write, what it returns.

        ``count="exact"`` also returns the number of matching rows; ``head=True``
        returns only that number.
        """
        return self._with(
            select=parse_select(columns),
            select_text=columns,
            count=count_flag(count) or self._s.count,
            head=head,
        )

    def insert(
        self,
        rows: Row | Sequence[Row],
        *,
        returning: str = "representation",
        count: str | None = None,
        default_to_null: bool = True,
        columns: Sequence[str] | None = None,
    ) -> QueryBuilder:
        """Insert one row (a dict) or many.

        A key missing from a row is NULL, or the column's DEFAULT with
        ``default_to_null=False``.  ``columns`` takes only those keys.
        """
        return self._write(
            "insert",
            rows=checked_rows(rows, "insert"),
            returning=returning_flag(returning),
            count=count_flag(count),
            default_missing=not default_to_null,
            columns=column_list(columns),
        )

    def upsert(
        self,
        rows: Row | Sequence[Row],
        *,
        on_conflict: str | Sequence[str] | None = None,
        ignore_duplicates: bool = False,
        returning: str = "representation",
        count: str | None = None,
        default_to_null: bool = True,
        columns: Sequence[str] | None = None,
    ) -> QueryBuilder:
        """Insert, or update rows whose *on_conflict* columns (default: the
        primary key) already exist; ``ignore_duplicates`` leaves them as they
        are.  ``default_to_null`` and ``columns`` as for :meth:`insert`."""
        target: tuple[str, ...] | None = None
        if isinstance(on_conflict, str):
            target = tuple(c.strip() for c in on_conflict.split(","))
        elif on_conflict is not None:
            target = tuple(on_conflict)
        if target is not None and (not target or not all(target)):
            raise QueryError(f"on_conflict names no columns: {on_conflict!r}")
        return self._write(
            "upsert",
            rows=checked_rows(rows, "upsert"),
            on_conflict=target,
            ignore_duplicates=bool(ignore_duplicates),
            returning=returning_flag(returning),
            count=count_flag(count),
            default_missing=not default_to_null,
            columns=column_list(columns),
        )

    def update(
        self,
        values: Row,
        *,
        returning: str = "representation",
        count: str | None = None,
    ) -> QueryBuilder:
        """Set columns on the rows the filters match (filters are required)."""
        if not isinstance(values, Mapping):
            raise QueryError(f"update() takes a dict of column values, got {values!r}")
        return self._write(
            "update",
            values=dict(values),
            returning=returning_flag(returning),
            count=count_flag(count),
        )

    def delete(
        self, *, returning: str = "representation", count: str | None = None
    ) -> QueryBuilder:
        """Delete the rows the filters match (filters are required)."""
        return self._write(
            "delete", returning=returning_flag(returning), count=count_flag(count)
        )

    # -- shaping ------------------------------------------------------------------

    def where(
        self, *filters: Filter, reference_table: str | None = None
    ) -> QueryBuilder:
        """Add parsed grammar trees (from
        :func:`pgpulse.routing.filters.parse_filters`)."""
        path = split_path(reference_table, "reference_table")
        builder = self
        for filt in filters:
            if not isinstance(filt, Condition | Or | And):
                raise QueryError(f"where() takes parsed filters, got {filt!r}")
            builder = builder._add(filt, path)
        return builder

    @property
    def not_(self) -> _Not:
        """Negate the next filter: ``.not_.eq("status", "done")``."""
        return _Not(self)

    def order(
        self,
        column: str,
        *,
        desc: bool = False,
        nulls_first: bool | None = None,
        foreign_table: str | None = None,
        reference_table: str | None = None,
    ) -> QueryBuilder:
        """Sort by *column*; call again for more keys.  ``foreign_table`` sorts an
        embedded list.  ``nulls_first=None`` keeps PostgreSQL's default."""
        if not isinstance(column, str) or not column:
            raise QueryError(f"order() takes a column name, got {column!r}")
        path = split_path(reference_table or foreign_table)
        item = Order(column, bool(desc), nulls_first, path)
        return self._with(orders=(*self._s.orders, item))

    def limit(self, count: int, *, foreign_table: str | None = None) -> QueryBuilder:
        """Return at most *count* rows (of an embedded list with ``foreign_table``)."""
        path = split_path(foreign_table)
        value = non_negative("limit()", count)
        return self._with(limits=(*self._s.limits, (path, value)))

    def offset(self, count: int, *, foreign_table: str | None = None) -> QueryBuilder:
        """Skip the first *count* rows."""
        path = split_path(foreign_table)
        value = non_negative("offset()", count)
        return self._with(offsets=(*self._s.offsets, (path, value)))

    def range(
        self, start: int, end: int, *, foreign_table: str | None = None
    ) -> QueryBuilder:
        """Rows *start* to *end*, both included and counted from 0."""
        first = non_negative("range() start", start)
        last = non_negative("range() end", end)
        if last < first:
            raise QueryError(f"range() end {end!r} is before start {start!r}")
        path = split_path(foreign_table)
        return self._with(
            offsets=(*self._s.offsets, (path, first)),
            limits=(*self._s.limits, (path, last - first + 1)),
        )

    def single(self) -> QueryBuilder:
        """Return one dict; raise :class:`SingleRowError` unless exactly one row."""
        return self._with(single="single")

    def explain(
        self,
        *,
        analyze: bool = False,
        verbose: bool = False,
        settings: bool = False,
        buffers: bool = False,
        wal: bool = False,
        format: str = "text",
    ) -> QueryBuilder:
        """Return PostgreSQL's plan for this query instead of its rows (text,
        or with ``format="json"`` the JSON plan).  With ``analyze`` the query
        runs, in a transaction that is always rolled back (a write changes
        nothing)."""
        if format not in ("text", "json"):
            raise QueryError(f"explain() format is 'text' or 'json', got {format!r}")
        flags = {
            "ANALYZE": analyze,
            "VERBOSE": verbose,
            "SETTINGS": settings,
            "BUFFERS": buffers,
            "WAL": wal,
        }
        if wal and not analyze:
            raise QueryError("explain(wal=True) needs analyze=True (PostgreSQL's rule)")
        options = [name for name, on in flags.items() if on]
        return self._with(explain=(*options, f"FORMAT {format.upper()}"))

    def csv(self) -> QueryBuilder:
        """Return the rows as CSV text: a header of the row keys, then one line
        per row with each value in PostgreSQL's own text form (as PostgREST's
        ``Accept: text/csv``)."""
        return self._with(csv=True)

    def maybe_single(self) -> QueryBuilder:
        """Return one dict or ``None``; raise if there are several rows."""
        return self._with(single="maybe")

    # -- SQL and execution ----------------------------------------------------------

    def sql(self) -> tuple[str, list[Any]]:
        """The exact ``(statement, parameters)`` that ``execute()`` sends."""
        params = Params()
        return "\n".join(
            compile_state(self._s, self._backend.schema, params)
        ), params.values

    async def execute(self, connection: Connection | None = None) -> Result:
        """Run the query (on *connection*, else on a pooled one) and return rows.

        Raises :class:`~pgpulse.exceptions.ValidationError` subclasses for bad
        names or chains (nothing ran), :class:`DatabaseError` when PostgreSQL
        refuses, :class:`SingleRowError` for ``single()`` mismatches.
        """
        statement, params = self.sql()
        if connection is not None:
            return await Execution(self._s, self._backend).run(
                connection, statement, params
            )
        async with self._backend.pool.acquire() as conn:
            return await Execution(self._s, self._backend).run(conn, statement, params)

    def __await__(self) -> Generator[Any, None, Result]:
        return self.execute().__await__()
