"""INSERT, UPSERT, UPDATE and DELETE statements.

Inserts send all rows as ONE JSON parameter unpacked by ``json_to_recordset``:
the statement text is the same for 1 or 10,000 rows (one prepared statement, no
32,767-parameter ceiling), and PostgreSQL parses each value with the column's
own input function.  Updates bind one text parameter per column.  A policy's
filter (auth) is both which rows a write may touch (``WHERE``) and what it may
leave behind: :mod:`pgpulse.query._render` counts written rows outside it, and
the builder undoes the write when there are any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from pgpulse.catalog import Table, quote_ident
from pgpulse.query._errors import QueryError
from pgpulse.query._sql import Params, bind_value, render_filter, value_type
from pgpulse.routing.filters import Filter

__all__ = [
    "WRITE_CTE",
    "insert_groups",
    "render_delete",
    "render_insert",
    "render_update",
    "write_ctes",
]

WRITE_CTE = "pgpulse_write"
#: Statements one insert with ``default_missing`` may take before rows are
#: grouped by their keys instead of kept in order.
MAX_RUNS = 64

_IN = "  "


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{value!r} (a {type(value).__name__}) cannot be sent as JSON")


def payload(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as JSON text; naive datetimes count as UTC, as asyncpg does."""
    try:
        data = orjson.dumps(
            [dict(row) for row in rows],
            default=_json_default,
            option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS,
        )
    except TypeError as exc:
        raise QueryError(f"cannot send these rows to PostgreSQL: {exc}") from None
    return data.decode()


def columns_of_rows(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key used by any row, in first-seen order, checked against *table*."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if not isinstance(key, str):
                raise QueryError(f"row keys must be column names, got {key!r}")
            if key not in seen:
                table.column(key)
                seen[key] = None
    return list(seen)


def insert_groups(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None,
    default_missing: bool,
) -> list[tuple[list[str], list[Mapping[str, Any]]]]:
    """The rows to insert, grouped by the columns each sets.

    Why groups: a key missing from a row is NULL when the statement names the
    column, and the column's DEFAULT only when it does not.  With
    ``default_missing`` (PostgREST's ``Prefer: missing=default``) rows are
    grouped by the keys they carry, one INSERT per group, all in one statement:
    runs of consecutive rows, so rows are written (and returned) in the order
    given, unless that takes more than :data:`MAX_RUNS` statements; then one
    per distinct set of keys.
    """
    names = list(columns) if columns is not None else columns_of_rows(table, rows)
    for name in names:
        table.column(name)
    if not default_missing:
        if not names:
            raise QueryError(
                f"rows for {table.name!r} have no columns; pass dicts like "
                "{'title': 'x'}."
            )
        return [(names, list(rows))]
    keyed = [(tuple(n for n in names if n in row), row) for row in rows]
    runs: list[tuple[list[str], list[Mapping[str, Any]]]] = []
    for key, row in keyed:
        if runs and tuple(runs[-1][0]) == key:
            runs[-1][1].append(row)
        else:
            runs.append((list(key), [row]))
    if len(runs) <= MAX_RUNS:
        return runs  # consecutive rows with the same keys: input order is kept
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for key, row in keyed:
        groups.setdefault(key, []).append(row)
    return [(list(key), members) for key, members in groups.items()]


def render_insert(
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    params: Params,
    *,
    on_conflict: Sequence[str] | None = None,
    ignore_duplicates: bool = False,
    conflict_filters: Sequence[Filter] = (),
) -> list[str]:
    """``INSERT ... SELECT ... FROM json_to_recordset($1)`` (+ ``ON CONFLICT``).

    *conflict_filters* limit which existing rows an upsert may update (a
    policy's filter: a conflicting row outside it is left alone).
    """
    placeholder = params.add(payload(rows))
    if not columns:  # every column takes its default
        return [
            f'INSERT INTO {table.sql} AS "t0"',
            f'SELECT FROM json_array_elements({placeholder}::json) AS "v"',
        ]
    names = ", ".join(quote_ident(c) for c in columns)
    record = ", ".join(
        f"{quote_ident(c)} {value_type(table.column(c))}" for c in columns
    )
    out = [
        f'INSERT INTO {table.sql} AS "t0" ({names})',
        f"SELECT {names}",
        f'FROM json_to_recordset({placeholder}::json) AS "v"({record})',
    ]
    if on_conflict is not None:
        for column in on_conflict:
            table.column(column)
        target = ", ".join(quote_ident(c) for c in on_conflict)
        updated = [c for c in columns if c not in on_conflict] or list(on_conflict)
        if ignore_duplicates:
            out.append(f"ON CONFLICT ({target}) DO NOTHING")
        else:
            sets = ", ".join(
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updated
            )
            out.append(f"ON CONFLICT ({target}) DO UPDATE SET {sets}")
            out.extend(_where(table, conflict_filters, params))
    return out


def write_ctes(statements: Sequence[Sequence[str]]) -> list[str]:
    """``WITH`` items running every statement, their rows as ``pgpulse_write``.

    Data-modifying statements must sit at the top of ``WITH``, so several
    (insert groups) are items of their own, read back with ``UNION ALL``.
    """
    cte = quote_ident(WRITE_CTE)
    if len(statements) == 1:
        body = [*statements[0], "RETURNING *"]
        return [f"{cte} AS ("] + [_IN + line for line in body] + [")"]
    out: list[str] = []
    for number, statement in enumerate(statements):
        body = [*statement, "RETURNING *"]
        out += [f'"w{number}" AS ('] + [_IN + line for line in body] + ["),"]
    union = " UNION ALL ".join(f'SELECT * FROM "w{n}"' for n in range(len(statements)))
    return [*out, f"{cte} AS (", _IN + union, ")"]


def _where(table: Table, filters: Sequence[Filter], params: Params) -> list[str]:
    rendered = [render_filter(f, table, "t0", params) for f in filters]
    if not rendered:
        return []
    return ["WHERE " + rendered[0]] + [f"{_IN}AND {r}" for r in rendered[1:]]


def render_update(
    table: Table, values: Mapping[str, Any], filters: Sequence[Filter], params: Params
) -> list[str]:
    """``UPDATE ... SET col = $n::text::type ... WHERE filters``."""
    if not values:
        raise QueryError(
            f"update() on {table.name!r} needs at least one column to set, "
            "e.g. update({'status': 'done'})."
        )
    sets = []
    for key, value in values.items():
        if not isinstance(key, str):
            raise QueryError(f"update() keys must be column names, got {key!r}")
        column = table.column(key)
        sets.append(f"{quote_ident(key)} = {bind_value(params, column, value)}")
    return [
        f'UPDATE {table.sql} AS "t0"',
        "SET " + ", ".join(sets),
        *_where(table, filters, params),
    ]


def render_delete(table: Table, filters: Sequence[Filter], params: Params) -> list[str]:
    """``DELETE FROM ... WHERE filters``."""
    return [f'DELETE FROM {table.sql} AS "t0"', *_where(table, filters, params)]
