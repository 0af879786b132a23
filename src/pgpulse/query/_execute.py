"""Running a compiled query: fetch, decode, and the checks after a write.

Why apart from the chain: the builder's methods only record what a chain
says; what happens on the connection (transactions for writes that must stay
inside a policy or touch one row, ``EXPLAIN`` rolled back, CSV and JSON
answers) is decided here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from pgpulse.exceptions import AuthError, DatabaseError
from pgpulse.query._errors import SingleRowError
from pgpulse.query._plan import build_plan
from pgpulse.query._result import Result
from pgpulse.query._state import State

if TYPE_CHECKING:
    from pgpulse.query._builder import Backend, Connection

__all__ = ["Execution"]


class Execution:
    """One run of a builder's state on a connection."""

    def __init__(self, s: State, backend: Backend) -> None:
        self.s = s
        self.backend = backend

    async def run(self, conn: Connection, statement: str, params: list[Any]) -> Result:
        if self.s.explain is not None:
            return await self._explain(conn, statement, params, self.s.explain)
        try:
            if self.s.action != "select" and (self.s.single or self._guarded()):
                # A write that must touch one row, or stay inside a policy, is
                # undone when it did not.
                async with conn.transaction():
                    return await self._fetch(conn, statement, params)
            return await self._fetch(conn, statement, params)
        except asyncpg.PostgresError as exc:
            raise DatabaseError.from_asyncpg(exc) from exc

    async def _explain(
        self,
        conn: Connection,
        statement: str,
        params: list[Any],
        options: tuple[str, ...],
    ) -> Result:
        """The plan, from a transaction that is rolled back whatever it ran."""
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await conn.fetch(
                f"EXPLAIN ({', '.join(options)}) {statement}", *params
            )
        except asyncpg.PostgresError as exc:
            raise DatabaseError.from_asyncpg(exc) from exc
        finally:
            await transaction.rollback()
        if "FORMAT JSON" in options:
            plan = rows[0][0]
            return Result(orjson.loads(plan) if isinstance(plan, str) else plan, None)
        return Result("\n".join(r[0] for r in rows), None)

    def _guarded(self) -> bool:
        """Whether a policy's filter checks the rows this write leaves."""
        if self.s.action in ("select", "delete"):
            return False
        schema = self.backend.schema
        return bool(schema.filters(schema.table(self.s.table)))

    async def _fetch(
        self, conn: Connection, statement: str, params: list[Any]
    ) -> Result:
        s = self.s
        minimal = s.action != "select" and s.returning == "minimal"
        if minimal and not statement.startswith("WITH"):
            status = await conn.execute(statement, *params)
            affected = int(status.rsplit(" ", 1)[-1])
            if s.single:
                self._check_single(affected, exact=True)
            return Result(None if s.single else [], affected if s.count else None)
        row = await conn.fetchrow(statement, *params)
        if row is None:  # pragma: no cover - the statement always returns a row
            raise DatabaseError("the query returned no result row")
        self._check_policy(row)
        if minimal:
            affected = row["count"]
            if s.single:
                self._check_single(affected, exact=True)
            return Result(None if s.single else [], affected if s.count else None)
        count = row["count"] if s.count else None
        if s.csv:
            return Result(self._csv_text(row["data"]), count)
        text = row["data"]
        data = orjson.loads(text)
        if s.single:
            self._check_single(len(data), exact=s.action != "select")
            # One element: json_agg's text of it, between the brackets.
            one = text.strip()[1:-1].strip() if data else None
            return Result(data[0] if data else None, count, one)
        return Result(data, count, text)

    def _csv_text(self, lines: str) -> str:
        """The CSV header (the rows' keys, quoted as CSV needs), then *lines*."""
        schema = self.backend.schema
        s = self.s
        root = build_plan(
            schema, schema.table(s.table), s.select, s.select_text, s.filters
        )
        header = ",".join(_csv_field(k) for k in root.output_keys())
        return header + ("\n" + lines if lines else "")

    def _check_policy(self, row: asyncpg.Record) -> None:
        """Raise (so the transaction rolls back) when the write left a row the
        policy does not allow, or an upsert met a row it may not overwrite."""
        denied = row.get("denied")
        if denied is None:
            return
        s = self.s
        skipped = s.action == "upsert" and not s.ignore_duplicates
        if denied or (skipped and row["count"] < len(s.rows)):
            name = self.backend.schema.table(s.table).name
            raise AuthError(
                f"the {s.action} would leave rows of table {name!r} outside your "
                "policy (or overwrite rows you may not see); nothing was changed",
                status=403,
            )

    def _check_single(self, rows: int, *, exact: bool) -> None:
        allow_none = self.s.single == "maybe"
        if rows > 1 or (rows == 0 and not allow_none):
            raise SingleRowError(rows, allow_none, exact)


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text
