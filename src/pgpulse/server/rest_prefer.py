"""The ``Prefer`` header of REST writes and function calls, as PostgREST reads it.

Why one place: writes and ``rpc/`` share ``tx`` and ``max-affected`` and the
same strictness rules.  Unknown preferences are ignored unless
``handling=strict`` (then ``400 PGRST122``); a known one with a value it does
not take is always ``400``, saying which values it takes.

* ``tx=rollback``: the request runs and answers as usual, and its transaction
  is rolled back (deferred constraints are checked first, so it fails where a
  commit would).  PostgREST honours it only when configured to; pgpulse
  always does: a rolled-back request changes nothing.
* ``max-affected=N`` with ``handling=strict``: a PATCH, DELETE or call of a
  set-returning function affecting more than N rows fails with ``400
  PGRST124`` and changes nothing (ignored without ``handling=strict``, as in
  PostgREST).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from pgpulse.exceptions import DatabaseError
from pgpulse.server.rest_errors import RestProblem

__all__ = ["Prefer", "in_transaction"]

T = TypeVar("T")

_VALUES = {
    "return": ("representation", "minimal", "headers-only"),
    "resolution": ("merge-duplicates", "ignore-duplicates"),
    "missing": ("default", "null"),
    "count": ("exact", "planned", "estimated"),
    "tx": ("commit", "rollback"),
    "handling": ("strict", "lenient"),
}


class Prefer:
    """The preferences of one request."""

    def __init__(self, header: str) -> None:
        self.values: dict[str, str] = {}
        self.max_affected: int | None = None
        """Set only with ``handling=strict``."""
        unknown: list[str] = []
        limit: str | None = None
        for token in header.split(","):
            key, _, value = token.strip().partition("=")
            key, value = key.strip(), value.strip()
            if key in _VALUES:
                if value not in _VALUES[key]:
                    raise RestProblem(
                        400,
                        "PGRST122",
                        f"Prefer: {key}={value} is not understood; use one of "
                        + ", ".join(f"{key}={v}" for v in _VALUES[key]),
                    )
                self.values[key] = value
            elif key == "max-affected":
                limit = value
            elif key:
                unknown.append(token.strip())
        self.strict = self.values.get("handling") == "strict"
        if self.strict and unknown:
            raise RestProblem(
                400,
                "PGRST122",
                "Invalid preferences given with handling=strict",
                details="Invalid preferences: " + ", ".join(unknown),
            )
        if limit is not None and self.strict:
            if not limit.isdigit():
                raise RestProblem(
                    400,
                    "PGRST122",
                    f"Prefer: max-affected={limit} is not understood; it takes "
                    "a number of rows (max-affected=10)",
                )
            self.max_affected = int(limit)

    @property
    def representation(self) -> bool:
        return self.values.get("return") == "representation"

    @property
    def rollback(self) -> bool:
        return self.values.get("tx") == "rollback"

    @property
    def applied(self) -> str:
        """``Preference-Applied``: what was honoured (counts show in
        ``Content-Range`` instead)."""
        shown = [f"{k}={v}" for k, v in self.values.items() if k != "count"]
        if self.max_affected is not None:
            shown.append(f"max-affected={self.max_affected}")
        return ", ".join(shown)

    def check_affected(self, rows: int) -> None:
        """400 ``PGRST124`` if *rows* is more than ``max-affected`` allows."""
        if self.max_affected is not None and rows > self.max_affected:
            raise RestProblem(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
                details=f"The query affects {rows} rows",
            )


class _RolledBack(Exception):
    def __init__(self, result: Any) -> None:
        super().__init__("rolled back as preferred")
        self.result = result


async def in_transaction(
    conn: Any,
    work: Callable[[], Awaitable[T]],
    prefer: Prefer | None,
    *,
    readonly: bool = False,
) -> T:
    """Run *work* in one transaction, ended as *prefer* says: committed, or
    rolled back after checking deferred constraints (a rolled-back request
    fails where a committed one would).  An error at the end (a deferred
    constraint) is a :class:`DatabaseError` like any other."""
    try:
        async with conn.transaction(readonly=readonly):
            result = await work()
            if prefer is not None and prefer.rollback:
                await conn.execute("set constraints all immediate")
                raise _RolledBack(result)
    except _RolledBack as rolled:
        kept: T = rolled.result
        return kept
    except asyncpg.PostgresError as exc:
        raise DatabaseError.from_asyncpg(exc) from exc
    return result
