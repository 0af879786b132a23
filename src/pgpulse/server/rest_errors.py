"""REST errors in PostgREST's shape: ``{code, message, details, hint}``.

Why: clients written for PostgREST (postgrest-js, postgrest-py, supabase-js)
read these four fields and branch on ``code`` (postgrest-py's
``maybe_single()`` returns ``None`` only when ``details`` says the result
contains 0 rows).  Errors PostgreSQL raised keep its SQLSTATE as the code and
get PostgREST's HTTP status for it; errors pgpulse finds before running
anything get the ``PGRST`` code PostgREST uses for the same mistake.  The
message stays pgpulse's own: it names what was wrong and what to do.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from pgpulse.exceptions import (
    AuthError,
    DatabaseError,
    UnknownColumnError,
    UnknownTableError,
    ValidationError,
)
from pgpulse.query import RelationshipError, SingleRowError

__all__ = [
    "REST_ERRORS",
    "RestProblem",
    "error_response",
    "problem",
    "status_for_sqlstate",
]

#: pgpulse's own code for a REST endpoint that is switched off.
REST_DISABLED = "PGPULSE01"


class RestProblem(Exception):
    """A request pgpulse refuses before running anything."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details: str | None = extra.get("details")
        self.hint: str | None = extra.get("hint")


def problem(
    status: int,
    code: str,
    message: str,
    details: str | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return Response(
        orjson.dumps(body), status, headers=headers, media_type="application/json"
    )


#: What a REST request can fail with, each answered by :func:`error_response`.
REST_ERRORS: tuple[type[Exception], ...] = (
    RestProblem,
    AuthError,
    UnknownTableError,
    ValidationError,
    SingleRowError,
    DatabaseError,
)

#: PostgREST's HTTP status per SQLSTATE (exact codes first, then classes).
_EXACT = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
}
_CLASSES = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def status_for_sqlstate(sqlstate: str | None, authenticated: bool = True) -> int:
    """The HTTP status PostgREST answers a PostgreSQL error with."""
    state = sqlstate or ""
    if state == "42501":
        return 403 if authenticated else 401
    if state in _EXACT:
        return _EXACT[state]
    if state.startswith("PT") and state[2:].isdigit():
        return int(state[2:])  # RAISE sqlstate 'PT402': the status asked for
    return _CLASSES.get(state[:2], 400 if state else 500)


def error_response(exc: BaseException, authenticated: bool = True) -> Response:
    """The PostgREST-shaped answer to *exc*."""
    if isinstance(exc, RestProblem):
        return problem(exc.status, exc.code, str(exc), exc.details, exc.hint)
    if isinstance(exc, UnknownTableError):
        # The table asked for is checked first (PGRST205, 404): an unknown
        # table here is an embed, which PostgREST answers as a relationship
        # it cannot find.
        return problem(400, "PGRST200", str(exc))
    if isinstance(exc, UnknownColumnError):
        # PostgREST forwards PostgreSQL's "column ... does not exist".
        return problem(400, "42703", str(exc))
    if isinstance(exc, RelationshipError):
        ambiguous = "ways; add a hint" in str(exc)
        return problem(
            300 if ambiguous else 400,
            "PGRST201" if ambiguous else "PGRST200",
            str(exc),
        )
    if isinstance(exc, SingleRowError):
        rows = f"{exc.rows} rows" if exc.exact or exc.rows < 2 else "more than 1 row"
        return problem(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
            f"The result contains {rows}",
            str(exc),
        )
    if isinstance(exc, AuthError):
        if exc.status == 401:
            code = "PGRST302" if "needs a token" in str(exc) else "PGRST301"
        elif exc.status == 403:
            code = "42501"
        else:
            code = "PGRST100" if exc.status == 400 else "PGRST300"
        return problem(exc.status, code, str(exc))
    if isinstance(exc, ValidationError):
        return problem(400, "PGRST100", str(exc))
    if isinstance(exc, DatabaseError):
        message = str(exc).split("\n", 1)[0]
        return problem(
            status_for_sqlstate(exc.sqlstate, authenticated),
            exc.sqlstate or "XX000",
            message,
            exc.detail,
            exc.hint,
        )
    raise exc
