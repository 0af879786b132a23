"""Every error pgpulse raises on purpose.

Hierarchy::

    PgPulseError
    ├── ConfigurationError        bad settings, budget does not fit
    ├── EmbeddedPostgresError     the embedded server could not init/start/stop
    ├── ValidationError           bad user input (HTTP 400 / CLI usage error)
    │   ├── FilterError           malformed filter or value of the wrong type
    │   ├── UnknownTableError     table not in the catalog (or not watched)
    │   ├── UnknownColumnError    column not in the table
    │   └── NoPrimaryKeyError     a watched table needs a primary key
    ├── CursorError               a resume cursor (Last-Event-ID) is malformed
    ├── AuthError                 no or bad token (401); no policy allows it (403)
    └── DatabaseError             PostgreSQL said no; keeps sqlstate/detail/hint

User-facing messages say what was wrong and what to do; the CLI and the HTTP layer
print ``str(error)`` and never a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AuthError",
    "ConfigurationError",
    "CursorError",
    "DatabaseError",
    "EmbeddedPostgresError",
    "FilterError",
    "NoPrimaryKeyError",
    "PgPulseError",
    "UnknownColumnError",
    "UnknownTableError",
    "ValidationError",
]


class PgPulseError(Exception):
    """Base class of all pgpulse errors."""


class ConfigurationError(PgPulseError):
    """The configuration is invalid or does not fit the database."""


class EmbeddedPostgresError(PgPulseError):
    """The embedded PostgreSQL server could not be initialized or started."""


class ValidationError(PgPulseError, ValueError):
    """User input was rejected before anything was executed."""


class FilterError(ValidationError):
    """A filter is malformed or its value does not fit the column type."""


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class UnknownTableError(ValidationError):
    """The table does not exist (or is not watched)."""

    def __init__(self, table: str, known: Iterable[str] = (), why: str = "") -> None:
        self.table = table
        known = list(known)
        reason = why or "does not exist"
        super().__init__(f"table {table!r} {reason}.{_suggest(table, known)}")


class UnknownColumnError(ValidationError):
    """The column does not exist in the table."""

    def __init__(self, table: str, column: str, known: Iterable[str] = ()) -> None:
        self.table = table
        self.column = column
        known = list(known)
        super().__init__(
            f"column {column!r} does not exist in table {table!r}."
            f"{_suggest(column, known)}"
        )


class NoPrimaryKeyError(ValidationError):
    """Changes are identified by primary key, so a watched table needs one."""

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(
            f"table {table!r} has no primary key; pgpulse identifies changed rows "
            f"by primary key. Add one (ALTER TABLE {table} ADD PRIMARY KEY (...)) "
            "and watch it again."
        )


class AuthError(PgPulseError):
    """The request is not authenticated (401) or not allowed (403).

    ``status`` is the HTTP status to answer with; the message says what to do
    without revealing what the caller may not see."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class CursorError(PgPulseError, ValueError):
    """A resume cursor (event id) could not be parsed."""


class DatabaseError(PgPulseError):
    """PostgreSQL rejected a statement; keeps its error fields."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        parts = [message]
        if detail:
            parts.append(f"DETAIL: {detail}")
        if hint:
            parts.append(f"HINT: {hint}")
        super().__init__("\n".join(parts))

    @classmethod
    def from_asyncpg(cls, exc: BaseException) -> DatabaseError:
        """Wrap an asyncpg ``PostgresError`` keeping code, detail and hint."""
        return cls(
            getattr(exc, "message", None) or str(exc),
            sqlstate=getattr(exc, "sqlstate", None),
            detail=getattr(exc, "detail", None),
            hint=getattr(exc, "hint", None),
        )
