"""Errors specific to the query layer.

They extend the hierarchy in :mod:`pgpulse.exceptions`: bad select strings and
unresolvable embeds are :class:`~pgpulse.exceptions.ValidationError` (HTTP 400),
so the REST endpoint and the CLI treat them like any other bad input::

    ValidationError
    └── QueryError              a builder chain that cannot be turned into SQL
        ├── SelectError         malformed select string
        └── RelationshipError   embed with no (or more than one) foreign key path
    PgPulseError
    └── SingleRowError          single()/maybe_single() got the wrong row count
"""

from __future__ import annotations

from pgpulse.exceptions import PgPulseError, ValidationError

__all__ = ["QueryError", "RelationshipError", "SelectError", "SingleRowError"]


class QueryError(ValidationError):
    """A builder chain that cannot be turned into SQL (nothing was executed)."""


class SelectError(QueryError):
    """The select string is malformed."""


class RelationshipError(QueryError):
    """An embedded resource matches no foreign key, or more than one."""


class SingleRowError(PgPulseError):
    """``single()`` found zero or several rows, or ``maybe_single()`` several.

    For writes the transaction was rolled back, so nothing changed.
    """

    def __init__(self, rows: int, allow_none: bool, exact: bool = True) -> None:
        self.rows = rows
        self.exact = exact
        """Rows found (a lower bound when *exact* is false: reads stop at 2)."""
        wanted = "at most one row" if allow_none else "exactly one row"
        if rows == 0:
            got = "no rows"
        elif exact:
            got = f"{rows} rows"
        else:
            got = "more than one row"
        super().__init__(
            f"expected {wanted}, got {got}; add filters that pick one row "
            "(e.g. .eq('id', 1)), or drop single()/maybe_single() to get a list."
        )
