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
with that filter.  Tables read under row-level security
(:mod:`pgpulse.auth.rls`) add one round trip per batch that runs, inside the
database, one statement per distinct (role, claims) group as that role with
its claims, each filter ANDed to the table's policies
(:mod:`pgpulse.routing.row_security`).

A row PostgreSQL cannot evaluate (a column whose type
changed since the change was logged) costs that row for those filters: the
batch is evaluated again row by row and the row gets no verdict (the bus then
skips it for those subscribers, logged and counted), never the batch.  Under
row-level security a failure instead ends that (role, claims) group's streams
with the reason: its own policies raise for it, so it cannot be told which
rows it may see, and a silent gap would break "nothing lost".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgpulse.auth.rls import RowSecurity
from pgpulse.catalog import Table, quote_ident
from pgpulse.log.change import Change
from pgpulse.query._sql import Params, render_filter
from pgpulse.routing.filters import Filter
from pgpulse.routing.row_security import (
    STALE_PLAN,
    evaluate_viewers,
    is_connection_error,
)

__all__ = ["DatabaseFilter", "Viewer", "evaluate"]

log = logging.getLogger("pgpulse.routing")

#: Filters per statement (PostgreSQL allows 1,664 result columns).
_PER_STATEMENT = 500
_ALIAS = "t0"


@dataclass(frozen=True)
class Viewer:
    """Whose eyes a filter is evaluated with, for row-level security."""

    role: str | None
    claims: str
    """The claims as JSON text (``request.jwt.claims``)."""


@dataclass(frozen=True)
class DatabaseFilter:
    """The filters of one subscription, evaluated by PostgreSQL (ANDed), and,
    with a viewer, the table's row-level security for that viewer."""

    table: Table
    filters: tuple[Filter, ...]
    viewer: Viewer | None = None

    @property
    def key(self) -> str:
        """Identifies the filter: subscribers with the same one share verdicts."""
        return f"{self.table.qualified}|{self.filters!r}|{self.viewer!r}"

    def render(self, params: Params, alias: str = _ALIAS) -> str:
        parts = [render_filter(f, self.table, alias, params) for f in self.filters]
        return " AND ".join(f"({p})" for p in parts) or "true"


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
    """One result column per filter."""
    params = Params()
    rows = params.add(None)
    columns = ", ".join(f"({f.render(params)})" for f in filters)
    sql = (
        f"select x.pgpulse_ord, {columns}\n"
        f"from unnest({rows}::text[]) with ordinality as x(pgpulse_row, pgpulse_ord)\n"
        f"cross join lateral jsonb_populate_record(null::{table.sql}, "
        f"x.pgpulse_row::jsonb) as {quote_ident(_ALIAS)}"
    )
    return sql, params


def _record(owners: list[tuple[Change, int]], index: int, key: str, value: Any) -> None:
    change, side = owners[index]
    verdicts = change.verdicts
    if verdicts is None:
        verdicts = change.verdicts = {}
    pair = verdicts.get(key)
    if not isinstance(pair, list):
        pair = verdicts[key] = [False, False]
    selected = value is True
    if side == 2:
        pair[0] = pair[1] = selected
    else:
        pair[side] = selected


async def _run(conn: Any, sql: str, params: Params, texts: list[str]) -> list[Any]:
    params.values[0] = texts
    try:
        return await _run_once(conn, sql, params)
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) not in STALE_PLAN:
            raise
    # The table changed (ALTER TABLE) since the statement was prepared: its
    # rows were planned with the old row type.  Prepare it again, once.
    await conn.reload_schema_state()
    return await _run_once(conn, sql, params)


async def _run_once(conn: Any, sql: str, params: Params) -> list[Any]:
    if not conn.is_in_transaction():
        return list(await conn.fetch(sql, *params.values))
    # A failed statement must not abort the caller's transaction (the
    # listener's cursor, a resume's snapshot): run it in a savepoint.
    await conn.execute("savepoint pgpulse_filters")
    try:
        return list(await conn.fetch(sql, *params.values))
    finally:
        await conn.execute("rollback to savepoint pgpulse_filters")


_ROW_ERRORS = (asyncpg.DataError, asyncpg.SyntaxOrAccessError, asyncpg.PostgresError)


async def evaluate(
    conn: Any,
    table: Table,
    changes: Sequence[Change],
    filters: Iterable[DatabaseFilter],
    security: RowSecurity | None = None,
) -> int:
    """Record on each change of *table* the verdict of every filter in *filters*
    for its new and old row (``change.verdicts[filter.key] = [new, old]``).

    Returns the statements it ran: one per (role, claims) group and up to
    ``_PER_STATEMENT`` filters, however many subscribers share them (counted
    in ``pgpulse_filter_statements``)."""
    texts, owners = _sides(changes)
    groups: dict[Viewer | None, dict[str, DatabaseFilter]] = {}
    for f in filters:
        groups.setdefault(f.viewer, {})[f.key] = f
    if not texts:
        return 0
    statements = 0
    plain = groups.pop(None, None)
    if plain:
        statements += await _evaluate_group(
            conn, table, texts, owners, list(plain.values())
        )
    if groups:
        statements += await evaluate_viewers(
            conn,
            table,
            texts,
            owners,
            {v: by_key for v, by_key in groups.items() if v is not None},
            security,
        )
    return statements


async def _evaluate_group(
    conn: Any,
    table: Table,
    texts: list[str],
    owners: list[tuple[Change, int]],
    wanted: list[DatabaseFilter],
) -> int:
    """Filters without a viewer (no row-level security): one statement per
    ``_PER_STATEMENT`` of them; a batch PostgreSQL cannot evaluate is tried
    again row by row."""
    statements = 0
    for start in range(0, len(wanted), _PER_STATEMENT):
        chunk = wanted[start : start + _PER_STATEMENT]
        sql, params = _statement(table, chunk)
        statements += 1
        try:
            results = [(0, r) for r in await _run(conn, sql, params, texts)]
        except _ROW_ERRORS as exc:
            if is_connection_error(exc):
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
                    if is_connection_error(row_exc):
                        raise
                    continue  # no verdict: the bus skips the row for these
                results.extend((i, r) for r in rows)
        for offset, record in results:
            index = offset + record[0] - 1
            for k, f in enumerate(chunk):
                _record(owners, index, f.key, record[k + 1])
    return statements
