"""INSERT, UPSERT, UPDATE and DELETE statements.

Inserts send all rows as ONE JSON parameter unpacked by ``json_to_recordset``:
the statement text is the same for 1 or 10,000 rows (one prepared statement, no
32,767-parameter ceiling), and PostgreSQL parses each value with the column's
own input function.  Updates bind one text parameter per column.
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

__all__ = ["render_delete", "render_insert", "render_update"]

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
    if not seen:
        raise QueryError(
            f"rows for {table.name!r} have no columns; pass dicts like "
            "{'title': 'x'}."
        )
    return list(seen)


def render_insert(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    params: Params,
    *,
    on_conflict: Sequence[str] | None = None,
    ignore_duplicates: bool = False,
) -> list[str]:
    """``INSERT ... SELECT ... FROM json_to_recordset($1)`` (+ ``ON CONFLICT``)."""
    columns = columns_of_rows(table, rows)
    names = ", ".join(quote_ident(c) for c in columns)
    record = ", ".join(
        f"{quote_ident(c)} {value_type(table.column(c))}" for c in columns
    )
    placeholder = params.add(payload(rows))
    out = [
        f'INSERT INTO {table.sql} AS "t0" ({names})',
        f"SELECT {names}",
        f'FROM json_to_recordset({placeholder}::json) AS "v"({record})',
    ]
    if on_conflict is not None:
        for column in on_conflict:
            table.column(column)
        target = ", ".join(quote_ident(c) for c in on_conflict)
        if ignore_duplicates:
            out.append(f"ON CONFLICT ({target}) DO NOTHING")
        else:
            updated = [c for c in columns if c not in on_conflict] or list(on_conflict)
            sets = ", ".join(
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updated
            )
            out.append(f"ON CONFLICT ({target}) DO UPDATE SET {sets}")
    return out


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
