"""Row-level security of streamed rows: every (role, claims) group of a batch
in one round trip.

Why: under ``rls = true`` each distinct (role, claims) group (the members of
one tenant, say) must be told which rows of a batch its policies let it see,
evaluated by PostgreSQL as that role with its claims set.  Asking group by
group costs two round trips per group per batch and rebuilds the batch's rows
from JSON each time: with 100 groups that capped delivery at a few hundred
changes per second.  Instead the rows are rebuilt ONCE, and one call of
``pgpulse.row_security_verdicts`` (capture schema, version 8) loops over the
groups inside the database: per group it sets the role and
``request.jwt.claims``, runs that group's statement over the rebuilt rows and
returns only the rows the group may see.  The cost per batch is one round trip
plus one small statement per group; the routing then looks only at the groups
that see a change (:class:`pgpulse.routing.bus.Bus`), never at every
subscriber.

A group whose own policies raise for its claims is cut off (its streams end
with the reason, logged) and every other group goes on: the function catches
the error in that group's subtransaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from pgpulse.auth.rls import RowSecurity
from pgpulse.catalog import Table, quote_ident
from pgpulse.log.change import Change
from pgpulse.query._sql import Params

if TYPE_CHECKING:
    from pgpulse.routing.db_filters import DatabaseFilter, Viewer

__all__ = ["STALE_PLAN", "evaluate_viewers", "is_connection_error"]

log = logging.getLogger("pgpulse.routing")

#: "attribute N of type record has wrong type", "cached plan must not change
#: result type": a prepared statement that predates a change of the table.
STALE_PLAN = {"42804", "0A000"}


class _JsonParams(Params):
    """One group's bound values, passed together as one jsonb array (``$2``)
    so that groups with the same filters share one statement text."""

    def add(self, value: Any) -> str:
        self.values.append(value)
        i = len(self.values) - 1
        if isinstance(value, list):
            return (
                f"array(select e from jsonb_array_elements_text($2->{i}) "
                "with ordinality as pgpulse_p(e, n) order by n)"
            )
        return f"($2->>{i})"


def _group_statement(
    table: Table, filters: Sequence[DatabaseFilter], security: str
) -> tuple[str, str]:
    """The statement one group runs over the batch's rows (``$1``, an array of
    the table's row type) and its bound values as JSON.  Rows are named after
    the table (policies name columns unqualified or by the table's name)."""
    params = _JsonParams()
    alias = quote_ident(table.name)
    checks = ", ".join(
        f"({security}) AND ({f.render(params, table.name)})" for f in filters
    )
    if "ordinality" in table.columns:
        rows = (
            f"generate_subscripts($1, 1) as pgpulse_i(ordinality) "
            f"cross join lateral (select ($1[pgpulse_i.ordinality]).*) as {alias}"
        )
        ordinal = "pgpulse_i.ordinality"
    else:
        rows = f"unnest($1) with ordinality as {alias}"
        ordinal = f"{alias}.ordinality"
    sql = (
        "select * from (select $3::integer as viewer, "
        f"{ordinal}::integer as ord, array[{checks}] as verdicts, "
        f"null::text as error from {rows}) as pgpulse_v "
        "where true = any(pgpulse_v.verdicts)"
    )
    return sql, orjson.dumps(params.values).decode()


def _call(table: Table) -> str:
    return (
        "select viewer, ord, verdicts, error from pgpulse.row_security_verdicts("
        f"(select array_agg(jsonb_populate_record(null::{table.sql}, x.j::jsonb) "
        "order by x.n) from unnest($1::text[]) with ordinality as x(j, n)), "
        "$2::text[], $3::text[], $4::text[], $5::integer[], $6::text[]::jsonb[])"
    )


async def evaluate_viewers(
    conn: Any,
    table: Table,
    texts: list[str],
    owners: list[tuple[Change, int]],
    groups: dict[Viewer, dict[str, DatabaseFilter]],
    security: RowSecurity | None,
) -> int:
    """Record, on each change of the batch, which groups' filters see its new
    and old rows (only those that do: the others are listed in
    :attr:`Change.viewed`).  *groups* maps each viewer to its filters by key.
    Returns the number of group statements PostgreSQL ran."""
    policies: dict[str | None, str] = {}
    for viewer in groups:
        if viewer.role not in policies:
            if viewer.role is None or security is None:
                policies[viewer.role] = "false"  # no role to read as: nothing
            else:
                # Read before any role is set: the catalog as the gateway sees it.
                policies[viewer.role] = await security.expression(
                    conn, table.sql, viewer.role
                )
    viewed = frozenset(key for by_key in groups.values() for key in by_key)
    for change, _side in owners:
        change.viewed = viewed if change.viewed is None else change.viewed | viewed

    roles: list[str] = []
    claims: list[str] = []
    statements: list[str] = []
    statement_of: list[int] = []
    values: list[str] = []
    members: list[tuple[Viewer, list[DatabaseFilter]]] = []
    index: dict[str, int] = {}
    for viewer, by_key in groups.items():
        if viewer.role is None or policies[viewer.role] == "false":
            continue  # sees nothing: every verdict stays false
        wanted = list(by_key.values())
        sql, bound = _group_statement(table, wanted, policies[viewer.role])
        if sql not in index:
            statements.append(sql)
            index[sql] = len(statements)
        roles.append(viewer.role)
        claims.append(viewer.claims)
        statement_of.append(index[sql])
        values.append(bound)
        members.append((viewer, wanted))
    if not members:
        return 0
    args = (texts, roles, claims, statements, statement_of, values)
    try:
        records = await _fetch(conn, _call(table), args)
    except asyncpg.PostgresError as exc:
        if is_connection_error(exc):
            raise
        # The rows themselves cannot be rebuilt (a column's type changed
        # since they were logged): no group can be told what it may see.
        for viewer, wanted in members:
            _cut_off(table, owners, wanted, viewer, exc)
        return len(members)
    for viewer_no, ord_, verdicts, error in records:
        viewer, wanted = members[viewer_no - 1]
        if error is not None:
            _cut_off(table, owners, wanted, viewer, error)
            continue
        change, side = owners[ord_ - 1]
        for f, selected in zip(wanted, verdicts, strict=True):
            if selected is True:
                _select(change, side, f.key)
    return len(members)


def _select(change: Change, side: int, key: str) -> None:
    """The row on *side* (0 new, 1 old, 2 the key standing for both) passes."""
    verdicts = change.verdicts
    if verdicts is None:
        verdicts = change.verdicts = {}
    pair = verdicts.get(key)
    if not isinstance(pair, list):
        if isinstance(pair, str):
            return  # the group was cut off
        pair = verdicts[key] = [False, False]
    if side == 2:
        pair[0] = pair[1] = True
    else:
        pair[side] = True


async def _fetch(conn: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    for attempt in (1, 2):
        try:
            return await _fetch_once(conn, sql, args)
        except asyncpg.PostgresError as exc:
            stale = getattr(exc, "sqlstate", None) in STALE_PLAN
            if not stale or attempt == 2:
                raise
            # The table changed (ALTER TABLE) since the statement was
            # prepared: prepare it again, once.
            await conn.reload_schema_state()
    raise AssertionError("unreachable")


async def _fetch_once(conn: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    if not conn.is_in_transaction():
        # One statement: its roles and claims end with it.
        return list(await conn.fetch(sql, *args))
    # Inside the caller's transaction (the listener's snapshot, a resume):
    # the roles and claims must not outlive the call, nor may a failure
    # abort the caller's transaction.
    await conn.execute("savepoint pgpulse_viewers")
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        if not conn.is_closed():
            await conn.execute("rollback to savepoint pgpulse_viewers")


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.AdminShutdownError
        | OSError,
    )


def _cut_off(
    table: Table,
    owners: list[tuple[Change, int]],
    wanted: list[DatabaseFilter],
    viewer: Viewer,
    exc: BaseException | str,
) -> None:
    reason = (
        f"row-level security of {table.qualified} fails for role {viewer.role}: "
        f"{str(exc).splitlines()[0]}"
    )
    log.warning("%s; ending the streams of that role and claims", reason)
    for change, _side in owners:
        verdicts = change.verdicts
        if verdicts is None:
            verdicts = change.verdicts = {}
        for f in wanted:
            verdicts[f.key] = reason
