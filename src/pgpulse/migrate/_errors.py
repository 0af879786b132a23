"""The one error the migration runner raises on purpose.

Why here and not in ``pgpulse.exceptions``: the runner owns its error fields
(file, line, statement); it still derives from `PgPulseError`, so callers that
catch every pgpulse error catch this one too.
"""

from __future__ import annotations

from pathlib import Path

from pgpulse.exceptions import PgPulseError

__all__ = ["MigrationError"]


class MigrationError(PgPulseError):
    """Migrations could not be found, checked or applied; the message says why.

    When a statement failed, the PostgreSQL fields are kept as attributes so an
    app's startup code can log them separately.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        statement: str | None = None,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        """The migration file that failed, if one did."""
        self.line = line
        """1-based line in that file where PostgreSQL located the error."""
        self.statement = statement
        """The statement that failed, as sent to the server."""
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
