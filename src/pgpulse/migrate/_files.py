"""Migration files on disk: naming, discovery, checksums and new files.

Why: a migration is identified by the version in its file name (a UTC timestamp,
``20260213120000_add_documents.sql``) and pinned by the sha256 of its bytes, so an
edit to an already-applied file is noticed instead of silently diverging from
what the database really ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgpulse.migrate._errors import MigrationError
from pgpulse.migrate._split import Statement, split_statements

__all__ = [
    "MigrationFile",
    "discover",
    "new_migration",
    "validate_name",
]

NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
FILE_RE = re.compile(r"(?P<version>[0-9]{1,18})_(?P<name>[a-z][a-z0-9_]*)\.sql")
_DIRECTIVE_RE = re.compile(r"--\s*pgpulse\s*:\s*(?P<directive>\S.*?)\s*$", re.I)
_DIRECTIVES = frozenset({"no-transaction"})
_TIMESTAMP = "%Y%m%d%H%M%S"


@dataclass(frozen=True)
class MigrationFile:
    """One ``VERSION_NAME.sql`` file, read once."""

    version: int
    """The number before the first underscore; migrations apply in this order."""
    name: str
    """The words after the version, e.g. ``add_documents``."""
    path: Path
    checksum: str
    """Hex sha256 of the file's bytes, as recorded when it was applied."""
    sql: str
    no_transaction: bool
    """True when a header line says ``-- pgpulse: no-transaction``."""

    @property
    def filename(self) -> str:
        return self.path.name

    def statements(self) -> list[Statement]:
        """The file's statements, split the way psql would split them."""
        return split_statements(self.sql)


def validate_name(name: str) -> str:
    """Return *name* if it is lowercase words joined by underscores."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise MigrationError(
            f"invalid migration name {name!r}: use lowercase letters, digits and "
            "underscores, starting with a letter (e.g. 'add_documents')"
        )
    return name


def _directives(sql: str, path: Path) -> set[str]:
    """``-- pgpulse: WORD`` lines among the leading comment lines of a file.

    An unknown one-word directive is an error rather than ignored: a typo such
    as ``no-transation`` would otherwise run ``CREATE INDEX CONCURRENTLY`` in a
    transaction and fail far from the cause.  A ``-- pgpulse: ...`` line of
    several words is prose (``pgpulse watch --emit-migration`` writes one).
    """
    found: set[str] = set()
    for raw in sql.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        match = _DIRECTIVE_RE.match(line)
        if match is None:
            continue
        directive = re.sub(r"[\s_]+", "-", match["directive"].lower())
        if directive not in _DIRECTIVES and " " in match["directive"]:
            continue
        if directive not in _DIRECTIVES:
            raise MigrationError(
                f"{path}: unknown directive {match['directive']!r} in "
                f"{line!r}; the only directive is '-- pgpulse: no-transaction'"
            )
        found.add(directive)
    return found


def read_migration(path: Path) -> MigrationFile:
    """Parse one migration file; raise `MigrationError` when it is unusable."""
    match = FILE_RE.fullmatch(path.name)
    if match is None:
        raise MigrationError(
            f"{path}: migration files must be named VERSION_NAME.sql with a numeric "
            "version and a lowercase name (e.g. 20260213120000_add_documents.sql); "
            "create one with `pgpulse migrate new NAME`"
        )
    data = path.read_bytes()
    try:
        sql = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(
            f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "save the file as UTF-8"
        ) from None
    return MigrationFile(
        version=int(match["version"]),
        name=match["name"],
        path=path,
        checksum=hashlib.sha256(data).hexdigest(),
        sql=sql,
        no_transaction="no-transaction" in _directives(sql, path),
    )


def discover(directory: str | Path) -> list[MigrationFile]:
    """Every ``*.sql`` migration in *directory*, ordered by version.

    Other files (a README, editor backups) are ignored; a ``.sql`` file with a bad
    name or a version used twice is an error, because skipping it would
    silently leave part of the schema unapplied.
    """
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise MigrationError(
            f"migrations directory {str(root)!r} {what}; pass --dir (or set "
            "PGPULSE_MIGRATIONS) or create a first migration with "
            "`pgpulse migrate new NAME`"
        )
    files = sorted(p for p in root.iterdir() if p.suffix == ".sql" and p.is_file())
    bad = [p.name for p in files if FILE_RE.fullmatch(p.name) is None]
    if bad:
        raise MigrationError(
            f"badly named migration files in {str(root)!r}: {', '.join(bad)}; "
            "name them VERSION_NAME.sql with a numeric version and a lowercase "
            "name (e.g. 20260213120000_add_documents.sql)"
        )
    migrations = [read_migration(p) for p in files]
    by_version: dict[int, MigrationFile] = {}
    for migration in migrations:
        other = by_version.get(migration.version)
        if other is not None:
            raise MigrationError(
                f"duplicate migration version {migration.version}: "
                f"{other.filename} and {migration.filename}; give one of them a "
                "new version (rename it, or recreate it with `pgpulse migrate new`)"
            )
        by_version[migration.version] = migration
    return sorted(migrations, key=lambda m: m.version)


def new_migration(directory: str | Path, name: str, sql: str = "") -> Path:
    """Write a new ``<UTC timestamp>_<name>.sql`` in *directory* and return its path.

    The directory is created if needed.  When a file with the same timestamp
    already exists (two files in one second), the next free second is used so
    versions stay unique and ordered by creation.

    Raises:
        MigrationError: *name* is not lowercase words joined by underscores.
    """
    validate_name(name)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    taken = {
        int(m["version"])
        for p in root.iterdir()
        if (m := FILE_RE.fullmatch(p.name)) is not None
    }
    moment = datetime.now(UTC).replace(microsecond=0)
    while int(moment.strftime(_TIMESTAMP)) in taken:
        moment += timedelta(seconds=1)
    version = moment.strftime(_TIMESTAMP)
    body = sql if sql else f"-- {name}: the SQL for this change goes below.\n"
    if not body.endswith("\n"):
        body += "\n"
    path = root / f"{version}_{name}.sql"
    with path.open("x", encoding="utf-8") as fh:
        fh.write(body)
    return path
