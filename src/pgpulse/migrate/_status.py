"""Compare migration files with what the database recorded as applied.

Why: one comparison serves ``status``, the drift check before applying, and
``repair-checksums``; each file is in exactly one `State`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgpulse.migrate._connect import Conn
from pgpulse.migrate._files import MigrationFile

__all__ = ["AppliedRecord", "MigrationStatus", "State", "compare", "fetch_applied"]

TABLE = "pgpulse.migrations"


class State(enum.StrEnum):
    """Where one migration stands."""

    APPLIED = "applied"
    """Recorded in the database with the file's current checksum."""
    PENDING = "pending"
    """A file not yet recorded; ``migrate up`` will apply it."""
    CHANGED = "changed"
    """Applied, but the file was edited afterwards (checksum differs)."""
    MISSING = "missing"
    """Recorded as applied, but no file with that version exists any more."""


@dataclass(frozen=True)
class AppliedRecord:
    """One row of ``pgpulse.migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: float
    applied_by: str
    """The database role (``current_user``) that applied it."""
    client_host: str | None
    """Host name of the machine the runner ran on."""
    application: str | None
    """``application_name`` of the applying session."""


@dataclass(frozen=True)
class MigrationStatus:
    """One migration, from its file, its record, or both."""

    version: int
    name: str
    state: State
    file: MigrationFile | None
    """``None`` when the state is ``missing``."""
    record: AppliedRecord | None
    """``None`` when the state is ``pending``."""

    @property
    def filename(self) -> str:
        if self.file is not None:
            return self.file.filename
        return f"{self.version}_{self.name}.sql"

    @property
    def path(self) -> Path | None:
        return None if self.file is None else self.file.path


async def fetch_applied(conn: Conn) -> dict[int, AppliedRecord]:
    """Applied migrations by version; empty when nothing was ever applied."""
    if await conn.fetchval(f"select to_regclass('{TABLE}')") is None:
        return {}
    rows = await conn.fetch(
        "select version, name, checksum, applied_at, duration_ms, applied_by,"
        f" client_host, application from {TABLE} order by version"
    )
    return {row["version"]: AppliedRecord(**dict(row)) for row in rows}


def compare(
    files: Sequence[MigrationFile], applied: dict[int, AppliedRecord]
) -> list[MigrationStatus]:
    """Every file and every record, ordered by version."""
    out: list[MigrationStatus] = []
    for f in files:
        record = applied.get(f.version)
        if record is None:
            state = State.PENDING
        elif record.checksum != f.checksum:
            state = State.CHANGED
        else:
            state = State.APPLIED
        out.append(MigrationStatus(f.version, f.name, state, f, record))
    known = {f.version for f in files}
    for version, record in applied.items():
        if version not in known:
            out.append(
                MigrationStatus(version, record.name, State.MISSING, None, record)
            )
    return sorted(out, key=lambda s: s.version)


def changed_message(changed: Iterable[MigrationStatus]) -> str:
    """Why the runner refuses to go on after an applied file was edited."""
    lines = []
    for s in changed:
        if s.record is None or s.file is None:  # never for CHANGED
            continue
        lines.append(
            f"  {s.file.path}: applied with sha256 {s.record.checksum[:12]}…, "
            f"file now {s.file.checksum[:12]}…"
        )
    return (
        "migration files were edited after they were applied:\n"
        + "\n".join(lines)
        + "\nApplied migrations never run again, so the edit would not reach the "
        "database. Revert the edit and put the change in a new migration "
        "(`pgpulse migrate new NAME`); if the edit changes nothing in the schema "
        "(a comment, formatting), accept the new contents with "
        "`pgpulse migrate repair-checksums`."
    )
