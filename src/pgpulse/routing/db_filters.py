"""Filters the stream cannot decide exactly in Python, decided by PostgreSQL.

Why: ordering text under a linguistic collation, ``ilike`` case folding,
arrays, jsonb containment, ranges, enum order and the types without an exact
key (:mod:`pgpulse.routing.values`) only PostgreSQL evaluates the way
PostgreSQL does.  Rather than approximate them, the stream asks the database:
once per batch and table, ONE statement evaluates every distinct such filter
of that table on every row of the batch, with the very SQL the REST endpoint
runs (:func:`pgpulse.query._sql.render_filter`), over the rows rebuilt from the
log (``jsonb_populate_record``)::

    select x.i, (f1), (f2), ...
    from unnest($1::text[]) with ordinality x(j, i)
    cross join lateral jsonb_populate_record(null::schema.table, x.j::jsonb) t0

Its cost grows with the number of distinct filters, not subscribers; the
verdicts are kept on the change (:attr:`Change.verdicts`) for every subscriber
with that filter.  A row PostgreSQL cannot evaluate (a column whose type
changed since the change was logged) costs that row for those filters: the
batch is evaluated again row by row and the row gets no verdict (the bus then
skips it for those subscribers, logged and counted), never the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgpulse.catalog import Table
from pgpulse.log.change import Change
from pgpulse.query._sql import Params, render_filter
from pgpulse.routing.filters import Filter

__all__ = ["DatabaseFilter", "evaluate"]

log = logging.getLogger("pgpulse.routing")

#: Filters per statement (PostgreSQL allows 1,664 result columns).
_PER_STATEMENT = 500
_ALIAS = "t0"


@dataclass(frozen=True)
class DatabaseFilter:
    """The filters of one subscription, evaluated by PostgreSQL (ANDed)."""

    table: Table
    filters: tuple[Filter, ...]

    @property
    def key(self) -> str:
        """Identifies the filter: subscribers with the same one share verdicts."""
        return f"{self.table.qualified}|{self.filters!r}"

    def render(self, params: Params) -> str:
        parts = [render_filter(f, self.table, _ALIAS, params) for f in self.filters]
        return " AND ".join(f"({p})" for p in parts)


def _sides(changes: Sequence[Change]) -> tuple[list[str], list[tuple[Change, int]]]:
    """The JSON rows to evaluate and, for each, its change and side (0 new,
    1 old; keys-only tables log the key, which stands for both sides)."""
    texts: list[str] = []
    owners: list[tuple[Change, int]] = []
    for change in changes:
        if change.op == "TRUNCATE":
            continue
        if change.row is None and change.old is None:
            texts.append(change.pk)
            owners.append((change, 2))
            continue
        if change.row is not None:
            texts.append(change.row)
            owners.append((change, 0))
        if change.old is not None:
            texts.append(change.old)
            owners.append((change, 1))
    return texts, owners


def _statement(table: Table, filters: Sequence[DatabaseFilter]) -> tuple[str, Params]:
    params = Params()
    rows = params.add(None)
    columns = ", ".join(f"({f.render(params)})" for f in filters)
    sql = (
        f"select x.i, {columns}\n"
        f"from unnest({rows}::text[]) with ordinality as x(j, i)\n"
        f"cross join lateral jsonb_populate_record(null::{table.sql}, x.j::jsonb)"
        f' as "{_ALIAS}"'
    )
    return sql, params


def _record(owners: list[tuple[Change, int]], index: int, key: str, value: Any) -> None:
    change, side = owners[index]
    verdicts = change.verdicts
    if verdicts is None:
        verdicts = change.verdicts = {}
    pair = verdicts.get(key)
    if pair is None:
        pair = verdicts[key] = [False, False]
    selected = value is True
    if side == 2:
        pair[0] = pair[1] = selected
    else:
        pair[side] = selected


async def _run(conn: Any, sql: str, params: Params, texts: list[str]) -> list[Any]:
    params.values[0] = texts
    if conn.is_in_transaction():
        # A failed statement must not abort the caller's transaction (the
        # listener's cursor, a resume's snapshot): run it in a savepoint.
        async with conn.transaction():
            return list(await conn.fetch(sql, *params.values))
    return list(await conn.fetch(sql, *params.values))


_ROW_ERRORS = (asyncpg.DataError, asyncpg.SyntaxOrAccessError, asyncpg.PostgresError)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.AdminShutdownError
        | OSError,
    )


async def evaluate(
    conn: Any,
    table: Table,
    changes: Sequence[Change],
    filters: Iterable[DatabaseFilter],
) -> None:
    """Record on each change of *table* the verdict of every filter in *filters*
    for its new and old row (``change.verdicts[filter.key] = [new, old]``)."""
    texts, owners = _sides(changes)
    wanted = list({f.key: f for f in filters}.values())
    if not texts or not wanted:
        return
    for start in range(0, len(wanted), _PER_STATEMENT):
        chunk = wanted[start : start + _PER_STATEMENT]
        sql, params = _statement(table, chunk)
        try:
            results = [(0, r) for r in await _run(conn, sql, params, texts)]
        except _ROW_ERRORS as exc:
            if _is_connection_error(exc):
                raise
            log.warning(
                "evaluating %d filters on %d rows of %s failed (%s); "
                "evaluating row by row",
                len(chunk),
                len(texts),
                table.qualified,
                exc,
            )
            results = []
            for i, text in enumerate(texts):
                try:
                    rows = await _run(conn, sql, params, [text])
                except _ROW_ERRORS as row_exc:
                    if _is_connection_error(row_exc):
                        raise
                    continue  # no verdict: the bus skips the row for these
                results.extend((i, r) for r in rows)
        for offset, record in results:
            index = offset + record[0] - 1
            for k, f in enumerate(chunk):
                _record(owners, index, f.key, record[k + 1])
