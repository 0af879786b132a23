"""Apply pending migrations, each once, in order, under an advisory lock.

Why each choice:

* One transaction per file, with its record inserted in that same transaction:
  a file is either fully applied and recorded, or not at all, even if the
  process dies half-way.
* Statements are sent one at a time (split like psql) so a failure names the
  statement and the file line, and ``-- pgpulse: no-transaction`` files can run
  ``CREATE INDEX CONCURRENTLY``.
* A session advisory lock serializes concurrent deploys; the second run waits,
  then finds the files applied.  It waits by polling ``pg_try_advisory_lock``
  rather than blocking in ``pg_advisory_lock``: a blocked call keeps a snapshot
  open, and ``CREATE INDEX CONCURRENTLY`` in the first run waits for every
  older snapshot to end - the two runs would deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from pgpulse.migrate._connect import APPLICATION_NAME, Conn, DsnOrConn, connection
from pgpulse.migrate._errors import MigrationError
from pgpulse.migrate._files import MigrationFile, discover
from pgpulse.migrate._split import Statement
from pgpulse.migrate._status import (
    TABLE,
    AppliedRecord,
    MigrationStatus,
    State,
    changed_message,
    compare,
    fetch_applied,
)

__all__ = ["AppliedMigration", "MigrationObserver", "Migrator"]

# "pgpulmig": serializes migration runs on one database (not the capture lock).
LOCK_KEY = int.from_bytes(b"pgpulmig", "big")
_EXCERPT_CONTEXT = 3


@dataclass(frozen=True)
class AppliedMigration:
    """A migration applied by this run (or that would be, on a dry run)."""

    version: int
    name: str
    path: Path
    checksum: str
    statements: int
    """How many statements the file holds."""
    duration: float
    """Seconds spent applying it; 0.0 on a dry run."""
    dry_run: bool = False

    @property
    def filename(self) -> str:
        return self.path.name


class MigrationObserver:
    """Hooks for progress output; every method does nothing by default.

    Subclass it to drive a progress bar or logs (the CLI does); the runner
    calls these from its own task, between statements.
    """

    def waiting_for_lock(self, holder_pid: int | None) -> None:
        """Another run holds the lock; this one waits for it."""

    def planned(self, migrations: Sequence[MigrationFile], *, dry_run: bool) -> None:
        """These migrations will be applied (or would be, on a dry run)."""

    def migration_started(self, migration: MigrationFile) -> None:
        """About to apply *migration*."""

    def statement_done(self, migration: MigrationFile, statement: Statement) -> None:
        """One statement of *migration* succeeded."""

    def migration_done(self, applied: AppliedMigration) -> None:
        """*applied* is committed and recorded."""


def _tracking_sql() -> str:
    return resources.files("pgpulse.migrate").joinpath("sql/tracking.sql").read_text()


def _excerpt(statement: Statement, line: int, column: int | None) -> str:
    """The failing statement's lines, numbered as in the file, error marked."""
    lines = statement.text.splitlines() or [""]
    first = statement.line
    lo = max(first, line - _EXCERPT_CONTEXT)
    hi = min(first + len(lines) - 1, line + _EXCERPT_CONTEXT)
    width = len(str(hi))
    out = []
    for number in range(lo, hi + 1):
        mark = ">" if number == line else " "
        prefix = f"  {mark} {number:>{width}} | "
        out.append(prefix + lines[number - first])
        if number == line and column is not None:
            out.append(" " * (len(prefix) + column - 1) + "^")
    return "\n".join(out)


def _statement_error(
    migration: MigrationFile,
    statements: Sequence[Statement],
    index: int,
    exc: asyncpg.PostgresError,
) -> MigrationError:
    statement = statements[index]
    position = int(exc.position) if exc.position else None
    line = statement.line if position is None else statement.line_of(position)
    column = None
    if position is not None:
        column = position - statement.text.rfind("\n", 0, position - 1) - 1
    hint = exc.hint
    if exc.sqlstate == "25001" and not migration.no_transaction:
        hint = (
            "this statement cannot run inside a transaction; make the first line "
            "of the file '-- pgpulse: no-transaction' to run it on its own"
        )
    if migration.no_transaction:
        outcome = (
            "the file runs without a transaction, so "
            + (
                f"its first {index} statement(s) stay committed"
                if index
                else "nothing from it was committed"
            )
            + "; it is not recorded as applied and will run again from the top, "
            "so make its statements safe to repeat (IF NOT EXISTS; drop an index "
            "a failed CREATE INDEX CONCURRENTLY left INVALID)."
        )
    else:
        outcome = "its transaction was rolled back."
    parts = [
        f"migration {migration.filename} failed at line {line} "
        f"(statement {index + 1} of {len(statements)}); {outcome} "
        "Later migrations were not applied.",
        f"  ERROR {exc.sqlstate}: {exc.message}",
    ]
    if exc.detail:
        parts.append(f"  DETAIL: {exc.detail}")
    if hint:
        parts.append(f"  HINT: {hint}")
    if exc.context:
        parts.append(f"  CONTEXT: {exc.context}")
    where = f"{line}" if column is None else f"{line}:{column}"
    parts.append(f"  in {migration.path}:{where}:")
    parts.append(_excerpt(statement, line, column))
    return MigrationError(
        "\n".join(parts),
        path=migration.path,
        line=line,
        statement=statement.text,
        sqlstate=exc.sqlstate,
        detail=exc.detail,
        hint=hint,
    )


class Migrator:
    """Applies the ``VERSION_NAME.sql`` files of one directory to a database.

    Args:
        directory: where the migration files are.
        observer: receives progress callbacks (see `MigrationObserver`).
        lock_timeout: seconds to wait for a concurrent run to finish before
            giving up with `MigrationError`; ``None`` waits as long as it takes.
        application_name: used when a DSN is given (``pgpulse budget`` counts
            ``migrations:*`` under a ``migrations`` service).
    """

    def __init__(
        self,
        directory: str | Path = "migrations",
        *,
        observer: MigrationObserver | None = None,
        lock_timeout: float | None = None,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        if lock_timeout is not None and lock_timeout < 0:
            raise ValueError(f"lock_timeout must be >= 0, got {lock_timeout!r}")
        self.directory = Path(directory)
        self.observer = observer or MigrationObserver()
        self.lock_timeout = lock_timeout
        self.application_name = application_name
        self.poll_interval = 0.1

    def files(self) -> list[MigrationFile]:
        """The migration files, ordered; raises `MigrationError` if unusable."""
        return discover(self.directory)

    async def status(self, target: DsnOrConn) -> list[MigrationStatus]:
        """Every migration as applied, pending, changed or missing; no changes."""
        files = self.files()
        async with connection(target, self.application_name) as conn:
            return compare(files, await fetch_applied(conn))

    async def apply(
        self, target: DsnOrConn, *, to: int | None = None, dry_run: bool = False
    ) -> list[AppliedMigration]:
        """Apply pending migrations up to version *to* (inclusive), in order.

        On a dry run nothing is locked, created or executed; the result lists
        what would be applied.

        Raises:
            MigrationError: bad files, an edited applied file, an unknown *to*,
                or a failing statement (that file is rolled back, later ones
                are not attempted).
        """
        files = self.files()
        if to is not None and to not in {f.version for f in files}:
            known = ", ".join(str(f.version) for f in files[-3:]) or "none"
            raise MigrationError(
                f"--to {to}: no migration file has that version in "
                f"{str(self.directory)!r} (latest: {known}); pass the version "
                "part of a file name"
            )
        async with connection(target, self.application_name) as conn:
            if dry_run:
                plan = self._plan(files, await fetch_applied(conn), to)
                self.observer.planned(plan, dry_run=True)
                return [
                    AppliedMigration(
                        m.version,
                        m.name,
                        m.path,
                        m.checksum,
                        len(m.statements()),
                        0.0,
                        dry_run=True,
                    )
                    for m in plan
                ]
            await self._lock(conn)
            applied: list[AppliedMigration] = []
            try:
                await self._ensure_table(conn)
                plan = self._plan(files, await fetch_applied(conn), to)
                self.observer.planned(plan, dry_run=False)
                for migration in plan:
                    applied.append(await self._apply_one(conn, migration))
                return applied
            finally:
                if applied:
                    # Running gateways read the catalog again: their live
                    # queries re-snapshot with the new shapes.  Best effort:
                    # it must not hide a migration's own error.
                    with contextlib.suppress(Exception):
                        await conn.execute("select pg_notify('pgpulse', 'catalog')")
                await self._unlock(conn)

    async def repair_checksums(self, target: DsnOrConn) -> list[MigrationStatus]:
        """Accept edited applied files: record their current checksums.

        Nothing is re-run: use it only when an edit leaves the schema as it
        was (comments, formatting).  Returns the migrations it updated.
        """
        files = self.files()
        async with connection(target, self.application_name) as conn:
            await self._lock(conn)
            try:
                changed = [
                    s
                    for s in compare(files, await fetch_applied(conn))
                    if s.state is State.CHANGED and s.file is not None
                ]
                async with conn.transaction():
                    for s in changed:
                        if s.file is not None:
                            await conn.execute(
                                f"update {TABLE} set checksum = $1 where version = $2",
                                s.file.checksum,
                                s.version,
                            )
                return changed
            finally:
                await self._unlock(conn)

    def _plan(
        self,
        files: Sequence[MigrationFile],
        applied: dict[int, AppliedRecord],
        to: int | None,
    ) -> list[MigrationFile]:
        statuses = compare(files, applied)
        changed = [s for s in statuses if s.state is State.CHANGED]
        if changed:
            raise MigrationError(changed_message(changed))
        return [
            s.file
            for s in statuses
            if s.state is State.PENDING
            and s.file is not None
            and (to is None or s.version <= to)
        ]

    async def _lock(self, conn: Conn) -> None:
        deadline = (
            None if self.lock_timeout is None else time.monotonic() + self.lock_timeout
        )
        told = False
        while not await conn.fetchval("select pg_try_advisory_lock($1)", LOCK_KEY):
            holder = await conn.fetchval(
                "select pid from pg_locks where locktype = 'advisory' and granted"
                " and database = (select oid from pg_database"
                "                 where datname = current_database())"
                " and classid = $1::bigint::oid and objid = $2::bigint::oid"
                " and objsubid = 1",
                LOCK_KEY >> 32,
                LOCK_KEY & 0xFFFF_FFFF,
            )
            if not told:
                self.observer.waiting_for_lock(holder)
                told = True
            if deadline is not None and time.monotonic() >= deadline:
                raise MigrationError(
                    f"another migration run (backend pid {holder}) still holds the "
                    f"migration lock after {self.lock_timeout:g}s; wait for it to "
                    "finish or raise --lock-timeout"
                )
            await asyncio.sleep(self.poll_interval)

    async def _unlock(self, conn: Conn) -> None:
        if conn.is_closed():
            return  # the server released the session lock with the session
        try:
            await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A broken connection ends the session, which releases the lock.
            pass

    async def _ensure_table(self, conn: Conn) -> None:
        if await conn.fetchval(f"select to_regclass('{TABLE}')") is not None:
            return
        try:
            async with conn.transaction():
                await conn.execute(_tracking_sql())
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"could not create the tracking table {TABLE}: {exc.message}; "
                "the role needs CREATE on the database (or create schema pgpulse "
                "for it)"
            ) from None

    async def _apply_one(
        self, conn: Conn, migration: MigrationFile
    ) -> AppliedMigration:
        statements = migration.statements()
        if migration.no_transaction and conn.is_in_transaction():
            raise MigrationError(
                f"migration {migration.filename} is marked no-transaction but the "
                "connection is inside a transaction; pass a connection outside "
                "any transaction"
            )
        self.observer.migration_started(migration)
        started = time.perf_counter()
        if migration.no_transaction:
            await self._run(conn, migration, statements)
            duration = time.perf_counter() - started
            await self._record(conn, migration, duration)
        else:
            async with conn.transaction():
                await self._run(conn, migration, statements)
                duration = time.perf_counter() - started
                await self._record(conn, migration, duration)
        applied = AppliedMigration(
            migration.version,
            migration.name,
            migration.path,
            migration.checksum,
            len(statements),
            duration,
        )
        self.observer.migration_done(applied)
        return applied

    async def _run(
        self, conn: Conn, migration: MigrationFile, statements: Sequence[Statement]
    ) -> None:
        for index, statement in enumerate(statements):
            try:
                # No arguments: the simple query protocol, as psql sends it.
                await conn.execute(statement.text)
            except asyncpg.PostgresError as exc:
                raise _statement_error(migration, statements, index, exc) from None
            except (asyncpg.InterfaceError, OSError) as exc:
                raise MigrationError(
                    f"lost the database connection while applying "
                    f"{migration.filename} (statement {index + 1} at line "
                    f"{statement.line}): {exc}; run `pgpulse migrate status` to "
                    "see what is recorded, then run the migrations again",
                    path=migration.path,
                    line=statement.line,
                    statement=statement.text,
                ) from None
            self.observer.statement_done(migration, statement)

    async def _record(
        self, conn: Conn, migration: MigrationFile, duration: float
    ) -> None:
        await conn.execute(
            f"insert into {TABLE} (version, name, checksum, duration_ms, client_host)"
            " values ($1, $2, $3, $4, $5)",
            migration.version,
            migration.name,
            migration.checksum,
            duration * 1000.0,
            socket.gethostname(),
        )
