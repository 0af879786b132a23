"""``GET /v1/rest/{table}``: PostgREST-style reads through the query builder.

Same URL syntax as PostgREST (``?select=id,nodes(id)&status=eq.final&order=id.desc
&limit=10``), same ``Range``/``Content-Range`` and ``Prefer: count=exact``
headers, so postgrest-js style clients can read from pgpulse unchanged.  Every
name is checked against the gateway's catalog and every value is bound, exactly
as for the Python builder.  Errors are JSON: ``{"error": "..."}`` naming the
problem.  The ``pgpulse`` schema (the change log) is never exposed.

The gateway mounts this and provides ``request.app.state.gateway`` with ``.pool``,
``.catalog`` and ``.settings.rest_enabled``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pgpulse.exceptions import (
    AuthError,
    DatabaseError,
    UnknownTableError,
    ValidationError,
)
from pgpulse.query import QueryBuilder, QueryClient, SingleRowError, apply_params
from pgpulse.server.exposure import RestExposure

__all__ = ["HIDDEN_SCHEMAS", "OBJECT_MEDIA_TYPE", "rest_read"]

#: Schemas the endpoint never reads (pgpulse's own bookkeeping).
HIDDEN_SCHEMAS = ("pgpulse",)
#: ``Accept`` value asking for one object instead of an array (as in PostgREST).
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"

_RANGE = re.compile(r"^\s*(?:items=)?(\d+)-(\d*)\s*$")
_DISABLED = (
    "the REST endpoint is disabled; start the gateway with --rest or set "
    "PGPULSE_REST=1 to enable it."
)


class _HTTPProblem(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status, headers=headers, media_type="application/json"
    )


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json(status, {"error": message, **extra})


def _count_wanted(request: Request) -> bool:
    for token in request.headers.get("prefer", "").split(","):
        key, _, value = token.strip().partition("=")
        if key == "count":
            if value != "exact":
                raise _HTTPProblem(
                    400,
                    f"Prefer: count={value} is not supported; use Prefer: count=exact.",
                )
            return True
    return False


def _range(request: Request) -> tuple[int, int | None] | None:
    header = request.headers.get("range")
    if header is None:
        return None
    unit = request.headers.get("range-unit", "items")
    match = _RANGE.match(header)
    if unit != "items" or match is None:
        raise _HTTPProblem(
            400,
            f"Range {header!r} (unit {unit!r}) is not understood; send e.g. "
            "'Range: 0-9' with 'Range-Unit: items'.",
        )
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else None
    if end is not None and end < start:
        raise _HTTPProblem(416, f"Range {header!r} ends before it starts.")
    return start, end


def _build(
    request: Request, client: QueryClient, table: str
) -> tuple[QueryBuilder, int]:
    """The builder for this request and the offset of its first row."""
    params = request.query_params
    select = params.getlist("select")
    builder = client.table(table).select(
        select[-1] if select else "*",
        count="exact" if _count_wanted(request) else None,
        head=request.method == "HEAD",
    )
    items = [(k, v) for k, v in params.multi_items() if k != "select"]
    builder = apply_params(builder, items)
    offset = int(params["offset"]) if "offset" in params else 0
    wanted = _range(request)
    if wanted is not None:
        if "limit" in params or "offset" in params:
            raise _HTTPProblem(
                400, "use either the Range header or limit/offset, not both."
            )
        offset, end = wanted
        builder = builder.offset(offset)
        if end is not None:
            builder = builder.limit(end - offset + 1)
    if OBJECT_MEDIA_TYPE in request.headers.get("accept", ""):
        builder = builder.single()
    return builder, offset


def _content_range(offset: int, rows: int, total: int | None) -> str:
    size = "*" if total is None else str(total)
    if rows == 0:
        return f"*/{size}"
    return f"{offset}-{offset + rows - 1}/{size}"


async def rest_read(request: Request) -> Response:
    """Answer ``GET /v1/rest/{table}`` (see the module docstring)."""
    gateway = request.app.state.gateway
    settings = gateway.settings
    auth_on = gateway.auth.enabled or gateway.authenticate is not None
    if not settings.rest_enabled and not auth_on:
        return _error(403, _DISABLED)
    try:
        access = await gateway.identify(request)
    except AuthError as exc:
        return _error(exc.status, str(exc))
    table = request.path_params["table"]
    exposure = RestExposure(
        gateway.catalog,
        gateway.watched,
        access,
        settings.rest_schemas,
        settings.rest_tables,
    )
    client = QueryClient(
        gateway.pool,
        gateway.catalog,
        hidden_schemas=HIDDEN_SCHEMAS,
        exposure=exposure,
    )
    try:
        client.schema.table(table)
    except UnknownTableError as exc:
        return _error(404, str(exc))
    try:
        builder, offset = _build(request, client, table)
        builder.sql()  # plans the query: every table's rules are known now
        if exposure.viewers:
            result = await _as_viewer(gateway.pool, builder, exposure)
        else:
            result = await builder.execute()
    except _HTTPProblem as exc:
        return _error(exc.status, str(exc), **exc.extra)
    except AuthError as exc:
        return _error(exc.status, str(exc))
    except ValidationError as exc:
        return _error(400, str(exc))
    except SingleRowError as exc:
        return _error(406, str(exc))
    except DatabaseError as exc:
        return _database_error(exc)
    rows = len(result.data) if isinstance(result.data, list) else 1
    headers = {"Content-Range": _content_range(offset, rows, result.count)}
    if request.method == "HEAD":
        return Response(None, 200, headers=headers, media_type="application/json")
    total = result.count
    partial = total is not None and (offset > 0 or offset + rows < total)
    status = 206 if partial and isinstance(result.data, list) else 200
    return _json(status, result.data, headers)


async def _as_viewer(pool: Any, builder: QueryBuilder, exposure: RestExposure) -> Any:
    """Run the read as the caller's role with its claims (row-level security
    mode: PostgreSQL applies the tables' own policies)."""
    if len(exposure.viewers) != 1:
        raise AuthError("one request reads under one role", status=400)
    ((role, claims),) = exposure.viewers
    if role is None:
        raise AuthError("row-level security needs a role in the token", status=403)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(
            "select set_config('role', $1, true), "
            "set_config('request.jwt.claims', $2, true)",
            role,
            claims,
        )
        return await builder.execute(conn)


def _database_error(exc: DatabaseError) -> Response:
    """Bad input PostgreSQL caught (a malformed integer...) is the client's 400."""
    state = exc.sqlstate or ""
    if state == "42501":
        status = 403
    elif state.startswith(("22", "42")):
        status = 400
    else:
        status = 500
    message = str(exc).split("\n", 1)[0]
    return _error(status, message, code=exc.sqlstate, detail=exc.detail, hint=exc.hint)
