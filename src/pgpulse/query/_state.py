"""A builder's state, argument checks, and its compilation into SQL lines.

Kept apart from the builder's methods so the chain API (``_builder``) reads as a
list of verbs, and so what a chain means is decided in one function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgpulse.query._errors import QueryError
from pgpulse.query._plan import Order, Schema, build_plan
from pgpulse.query._render import render_read, render_returning
from pgpulse.query._select import Item, Star
from pgpulse.query._sql import Params
from pgpulse.query._write import render_delete, render_insert, render_update
from pgpulse.routing.filters import Filter

__all__ = [
    "Action",
    "Path",
    "Row",
    "State",
    "checked_rows",
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
        return render_read(root, params, count=s.count, head=s.head)
    if root.orders or root.limit is not None or root.offset is not None:
        raise QueryError(
            f"order(), limit() and range() apply to reads, not to {s.action}(); "
            "use filters to pick the rows to change."
        )
    filters, root.filters = root.filters, []
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
        write = render_insert(
            table,
            s.rows,
            params,
            on_conflict=conflict,
            ignore_duplicates=s.ignore_duplicates,
        )
    else:
        if not filters:
            raise QueryError(
                f"{s.action}() without filters would change every row of "
                f"{table.name!r}; add a filter such as .eq('id', 1)."
            )
        if s.action == "update":
            write = render_update(table, s.values or {}, filters, params)
        else:
            write = render_delete(table, filters, params)
    if s.returning == "minimal":
        return write
    return render_returning(root, params, [*write, "RETURNING *"], count=s.count)
