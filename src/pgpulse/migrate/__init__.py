"""SQL migrations for your application's schema: ``pgpulse migrate``.

Files named ``<UTC timestamp>_<name>.sql`` in one directory are applied in
version order, each in its own transaction, each exactly once, recorded with its
sha256 in ``pgpulse.migrations``.  Typical uses::

    from pgpulse.migrate import apply_migrations, MigrationError

    await apply_migrations(dsn, "migrations")          # app startup / fixture
    path = new_migration("migrations", "add_documents", "create table ...;")

See ``docs/operations.md`` for the deploy pattern.
"""

from __future__ import annotations

from pathlib import Path

from pgpulse.migrate._connect import APPLICATION_NAME, DsnOrConn
from pgpulse.migrate._errors import MigrationError
from pgpulse.migrate._files import (
    MigrationFile,
    discover,
    new_migration,
    validate_name,
)
from pgpulse.migrate._runner import AppliedMigration, MigrationObserver, Migrator
from pgpulse.migrate._split import Statement, split_statements
from pgpulse.migrate._status import AppliedRecord, MigrationStatus, State

__all__ = [
    "APPLICATION_NAME",
    "AppliedMigration",
    "AppliedRecord",
    "DsnOrConn",
    "MigrationError",
    "MigrationFile",
    "MigrationObserver",
    "MigrationStatus",
    "Migrator",
    "State",
    "Statement",
    "apply_migrations",
    "discover",
    "migration_status",
    "new_migration",
    "repair_checksums",
    "split_statements",
    "validate_name",
]


async def apply_migrations(
    dsn_or_conn: DsnOrConn,
    directory: str | Path = "migrations",
    *,
    to: int | None = None,
    dry_run: bool = False,
    observer: MigrationObserver | None = None,
    lock_timeout: float | None = None,
) -> list[AppliedMigration]:
    """Apply pending migrations from *directory*; return those applied.

    Safe to call from several processes at once (an advisory lock serializes
    them).  With *to*, stop after that version; with *dry_run*, change nothing
    and return what would be applied.

    Raises:
        MigrationError: bad files, an applied file was edited, or a statement
            failed (its file is rolled back; later files are not attempted).
    """
    migrator = Migrator(directory, observer=observer, lock_timeout=lock_timeout)
    return await migrator.apply(dsn_or_conn, to=to, dry_run=dry_run)


async def migration_status(
    dsn_or_conn: DsnOrConn, directory: str | Path = "migrations"
) -> list[MigrationStatus]:
    """Every migration as applied, pending, changed or missing; changes nothing."""
    return await Migrator(directory).status(dsn_or_conn)


async def repair_checksums(
    dsn_or_conn: DsnOrConn, directory: str | Path = "migrations"
) -> list[MigrationStatus]:
    """Record the current checksum of edited applied files; re-runs nothing.

    The explicit override for the drift check: use it only when the edit does
    not change the schema.  Returns the migrations it updated.
    """
    return await Migrator(directory).repair_checksums(dsn_or_conn)
