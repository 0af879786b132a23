"""A builder's state, argument checks, and its compilation into SQL lines.

Kept apart from the builder's methods so the chain API (``_builder``) reads as a
list of verbs, and so what a chain means is decided in one function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgpulse.catalog import Table
from pgpulse.query._errors import QueryError
from pgpulse.query._plan import Level, Order, build_plan
from pgpulse.query._render import render_read, render_returning
from pgpulse.query._schema import Schema
from pgpulse.query._select import Item, Star
from pgpulse.query._sql import Params
from pgpulse.query._write import (
    insert_groups,
    render_delete,
    render_insert,
    render_update,
    write_ctes,
)
from pgpulse.routing.filters import Filter

__all__ = [
    "Action",
    "Path",
    "Row",
    "State",
    "checked_rows",
    "column_list",
    "compile_state",
    "count_flag",
    "non_negative",
    "returning_flag",
]

Action = Literal["select", "insert", "upsert", "update", "delete"]
Path = tuple[str, ...]
Row = Mapping[str, Any]


@dataclass(frozen=True)
class State:
    """Everything a chain said, unchecked against the catalog until compiled."""

    table: str
    action: Action = "select"
    select_text: str = "*"
    select: tuple[Item, ...] = (Star(),)
    count: bool = False
    head: bool = False
    filters: tuple[tuple[Path, Filter], ...] = ()
    orders: tuple[Order, ...] = ()
    limits: tuple[tuple[Path, int], ...] = ()
    offsets: tuple[tuple[Path, int], ...] = ()
    single: Literal["single", "maybe"] | None = None
    rows: tuple[Row, ...] = ()
    values: Row | None = None
    returning: Literal["representation", "minimal"] = "representation"
    on_conflict: tuple[str, ...] | None = None
    ignore_duplicates: bool = False
    columns: tuple[str, ...] | None = None
    """The keys an insert takes from its rows (None: every key any row has)."""
    default_missing: bool = False
    """A key missing from a row gets the column's DEFAULT (else NULL)."""
    csv: bool = False
    """Return the rows as CSV text (PostgreSQL's text form of each value)."""
    explain: tuple[str, ...] | None = None
    """``EXPLAIN`` options: return the plan instead of the rows."""


def count_flag(count: str | None) -> bool:
    if count is None:
        return False
    if count not in ("exact", "planned", "estimated"):
        raise QueryError(
            f"count must be 'exact', 'planned', 'estimated' or None, got {count!r}."
        )
    # Planned and estimated are answered exactly: PostgreSQL's planner
    # estimate can be far off, and PostgREST clients only read the number.
    return True


def returning_flag(value: str) -> Literal["representation", "minimal"]:
    if value == "representation":
        return "representation"
    if value == "minimal":
        return "minimal"
    raise QueryError(f"returning must be 'representation' or 'minimal', got {value!r}")


def non_negative(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise QueryError(f"{name} takes a non-negative integer, got {value!r}")
    return value


def column_list(columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """``columns=`` of insert/upsert: names, or one comma-separated string."""
    if columns is None:
        return None
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise QueryError(f"columns takes column names, got {columns!r}")
    return tuple(n.strip() for n in names)


def checked_rows(rows: Row | Sequence[Row], method: str) -> tuple[Row, ...]:
    items = (rows,) if isinstance(rows, Mapping) else rows
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise QueryError(f"{method}() takes a dict or a list of dicts, got {rows!r}")
    if not items:
        raise QueryError(f"{method}() needs at least one row, got {rows!r}")
    for row in items:
        if not isinstance(row, Mapping):
            raise QueryError(f"{method}() rows must be dicts, got {row!r}")
    return tuple(items)


def compile_state(s: State, schema: Schema, params: Params) -> list[str]:
    """The SQL lines of a builder state (checks every name; registers params)."""
    table = schema.table(s.table)
    limits = list(s.limits)
    if s.single and s.action == "select":
        current = dict(limits).get(())
        limits.append(((), 2 if current is None else min(current, 2)))
    root = build_plan(
        schema,
        table,
        s.select,
        s.select_text,
        s.filters,
        s.orders,
        limits,
        s.offsets,
    )
    if s.action == "select":
        return render_read(root, params, count=s.count, head=s.head, csv=s.csv)
    if s.csv:
        raise QueryError("csv() applies to reads; a write returns JSON rows.")
    if root.orders or root.limit is not None or root.offset is not None:
        raise QueryError(
            f"order(), limit() and range() apply to reads, not to {s.action}(); "
            "use filters to pick the rows to change."
        )
    return _compile_write(s, schema, table, root, params)


def _compile_write(
    s: State, schema: Schema, table: Table, root: Level, params: Params
) -> list[str]:
    """A write: the statement(s), and the read-back of what they wrote.

    A policy's filters (the first of the root's, see ``_plan``) bound the rows
    an update or delete touches and an upsert may overwrite, and are checked
    on every row written (``denied``); the caller's filters pick the rows.
    """
    policy = list(schema.filters(table))
    filters = root.filters[len(policy) :]
    root.filters = []
    _check_written_columns(s, schema, table)
    checks: list[Filter] = []
    if s.action in ("insert", "upsert"):
        if filters:
            raise QueryError(
                f"{s.action}() takes no filters; put the values in the rows."
            )
        conflict = s.on_conflict
        if s.action == "upsert" and conflict is None:
            if not table.primary_key:
                raise QueryError(
                    f"upsert() into {table.name!r} needs on_conflict='column' "
                    "because the table has no primary key."
                )
            conflict = table.primary_key
        statements = [
            render_insert(
                table,
                columns,
                rows,
                params,
                on_conflict=conflict,
                ignore_duplicates=s.ignore_duplicates,
                conflict_filters=policy,
            )
            for columns, rows in insert_groups(
                table, s.rows, s.columns, s.default_missing
            )
        ]
        checks = policy
    else:
        if not filters:
            raise QueryError(
                f"{s.action}() without filters would change every row of "
                f"{table.name!r}; add a filter such as .eq('id', 1)."
            )
        if s.action == "update":
            statements = [
                render_update(table, s.values or {}, [*policy, *filters], params)
            ]
            checks = policy
        else:
            statements = [render_delete(table, [*policy, *filters], params)]
    minimal = s.returning == "minimal"
    if minimal and len(statements) == 1 and not checks:
        return statements[0]
    return render_returning(
        root,
        params,
        write_ctes(statements),
        count=s.count,
        minimal=minimal,
        checks=checks,
    )


def _check_written_columns(s: State, schema: Schema, table: Table) -> None:
    """Every column a write names must be one the caller may see (with auth,
    a hidden column is as unknown as a missing one)."""
    names: list[str] = list(s.on_conflict or ())
    if s.columns is not None:
        names += s.columns
    else:
        names += [k for row in s.rows for k in row if isinstance(k, str)]
    if s.values is not None:
        names += [k for k in s.values if isinstance(k, str)]
    for name in dict.fromkeys(names):
        schema.column(table, name)
