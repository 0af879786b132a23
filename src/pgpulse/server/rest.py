"""``GET /v1/rest/{table}``: PostgREST-style reads through the query builder.

Same URL syntax as PostgREST (``?select=id,nodes(id)&status=eq.final&order=id.desc
&limit=10``), same ``Range``/``Content-Range`` and ``Prefer: count=exact``
headers, ``Accept-Profile`` for the schema, so postgrest-js style clients can
read from pgpulse unchanged.  Every name is checked against the gateway's
catalog and every value is bound, exactly as for the Python builder.  Errors
are PostgREST's ``{code, message, details, hint}``
(:mod:`pgpulse.server.rest_errors`), the message naming the problem.  The
``pgpulse`` schema (the change log) is never exposed.

The gateway mounts this and provides ``request.app.state.gateway`` with ``.pool``,
``.catalog`` and ``.settings.rest_enabled``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pgpulse.exceptions import (
    AuthError,
    UnknownTableError,
)
from pgpulse.query import QueryBuilder, QueryClient, apply_params
from pgpulse.server.exposure import RestExposure
from pgpulse.server.rest_errors import (
    REST_DISABLED,
    REST_ERRORS,
    RestProblem,
    error_response,
    problem,
)
from pgpulse.server.rest_prefer import Prefer, in_transaction

__all__ = [
    "HIDDEN_SCHEMAS",
    "OBJECT_MEDIA_TYPE",
    "RestRequest",
    "open_request",
    "rest_client",
    "rest_read",
    "run_as_viewer",
    "run_request",
]

#: Schemas the endpoint never reads (pgpulse's own bookkeeping).
HIDDEN_SCHEMAS = ("pgpulse",)
#: ``Accept`` value asking for one object instead of an array (as in PostgREST).
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"
#: ``Accept`` value asking for CSV (PostgreSQL's text form of each value).
CSV_MEDIA_TYPE = "text/csv"

_RANGE = re.compile(r"^\s*(?:items=)?(\d+)-(\d*)\s*$")
_DISABLED = (
    "the REST endpoint is disabled; start the gateway with --rest or set "
    "PGPULSE_REST=1 to enable it."
)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status, headers=headers, media_type="application/json"
    )


def _count_wanted(request: Request) -> bool:
    """``Prefer: count=exact|planned|estimated``: the count is always exact
    (PostgreSQL's planner estimate can be far off; exact costs a scan)."""
    for token in request.headers.get("prefer", "").split(","):
        key, _, value = token.strip().partition("=")
        if key == "count":
            if value not in ("exact", "planned", "estimated"):
                raise RestProblem(
                    400,
                    "PGRST100",
                    f"Prefer: count={value} is not understood; use "
                    "Prefer: count=exact (planned and estimated are answered "
                    "exactly).",
                )
            return True
    return False


def _table_name(request: Request, schemas: Any, header: str) -> str:
    """The table asked for, in the schema the profile header names
    (``Accept-Profile`` for reads, ``Content-Profile`` for writes)."""
    table: str = request.path_params["table"]
    profile = request.headers.get(header)
    if profile is None:
        return table
    allowed = list(schemas or ("public",))
    if profile not in allowed:
        raise RestProblem(
            406,
            "PGRST106",
            f"The schema must be one of the following: {', '.join(allowed)}",
            hint="list the schema in [rest] schemas to expose it",
        )
    return table if "." in table else f"{profile}.{table}"


def _range(request: Request) -> tuple[int, int | None] | None:
    header = request.headers.get("range")
    if header is None:
        return None
    unit = request.headers.get("range-unit", "items")
    match = _RANGE.match(header)
    if unit != "items" or match is None:
        raise RestProblem(
            400,
            "PGRST100",
            f"Range {header!r} (unit {unit!r}) is not understood; send e.g. "
            "'Range: 0-9' with 'Range-Unit: items'.",
        )
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else None
    if end is not None and end < start:
        raise RestProblem(416, "PGRST103", f"Range {header!r} ends before it starts.")
    return start, end


def _unknown(client: QueryClient, asked: str, table: str) -> UnknownTableError:
    """An unknown table, with suggestions from the schema it was looked for in
    (``Accept-Profile``) when the name came without one."""
    if asked == table:
        return UnknownTableError(asked, client.schema.names())
    schema = table.split(".", 1)[0]
    return UnknownTableError(
        table, [t.qualified for t in client.schema.tables() if t.schema == schema]
    )


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
            raise RestProblem(
                400,
                "PGRST100",
                "use either the Range header or limit/offset, not both.",
            )
        offset, end = wanted
        builder = builder.offset(offset)
        if end is not None:
            builder = builder.limit(end - offset + 1)
    accept = request.headers.get("accept", "")
    if OBJECT_MEDIA_TYPE in accept:
        builder = builder.single()
    elif CSV_MEDIA_TYPE in accept:
        builder = builder.csv()
    return builder, offset


def _content_range(offset: int, rows: int, total: int | None) -> str:
    size = "*" if total is None else str(total)
    if rows == 0:
        return f"*/{size}"
    return f"{offset}-{offset + rows - 1}/{size}"


@dataclass
class RestRequest:
    """One REST request's caller, rules and table (reads and writes alike)."""

    client: QueryClient
    exposure: RestExposure
    table: str
    """The table asked for, qualified by the profile header when given."""
    authenticated: bool


def rest_client(
    gateway: Any, access: Any, *, functions: bool = True
) -> tuple[QueryClient, RestExposure]:
    """A query client on the gateway's pool and catalog under REST's rules for
    *access* (``functions=False``: no computed columns or relationships)."""
    settings = gateway.settings
    exposure = RestExposure(
        gateway.catalog,
        gateway.watched,
        access,
        settings.rest_schemas,
        settings.rest_tables,
        settings.rest_functions if functions else (),
    )
    client = QueryClient(
        gateway.pool, gateway.catalog, hidden_schemas=HIDDEN_SCHEMAS, exposure=exposure
    )
    return client, exposure


async def open_request(
    request: Request, *, profile_header: str = "accept-profile"
) -> RestRequest:
    """Identify the caller and find the table (404 if they may not see it).

    A table the gateway does not know yet (just created or watched, before it
    re-read its catalog) gets one catalog refresh, as subscriptions do."""
    gateway = request.app.state.gateway
    access = await gateway.identify(request)
    table = _table_name(request, gateway.settings.rest_schemas, profile_header)
    for attempt in range(2):
        client, exposure = rest_client(gateway, access)
        try:
            client.schema.table(table)
        except UnknownTableError:
            if attempt == 0:
                # At most twice a second, however many requests miss.
                await gateway.refresh_catalog(min_age=0.5)
                continue
            unknown = _unknown(client, request.path_params["table"], table)
            raise RestProblem(404, "PGRST205", str(unknown)) from None
        return RestRequest(client, exposure, table, bool(access.claims.values))
    raise AssertionError("unreachable")  # pragma: no cover


async def rest_read(request: Request) -> Response:
    """Answer ``GET /v1/rest/{table}`` (see the module docstring)."""
    gateway = request.app.state.gateway
    auth_on = gateway.auth.enabled or gateway.authenticate is not None
    settings = gateway.settings
    if not (settings.rest_enabled or settings.rest_writes or auth_on):
        return problem(403, REST_DISABLED, _DISABLED)
    authenticated = False
    try:
        rest = await open_request(request)
        authenticated = rest.authenticated
        builder, offset = _build(request, rest.client, rest.table)
        result = await run_request(gateway.pool, rest, builder)
    except REST_ERRORS as exc:
        return error_response(exc, authenticated)
    csv = isinstance(result.data, str)
    if csv:
        rows = result.data.count("\n")  # lines after the header
    else:
        rows = len(result.data) if isinstance(result.data, list) else 1
    headers = {"Content-Range": _content_range(offset, rows, result.count)}
    media = CSV_MEDIA_TYPE + "; charset=utf-8" if csv else "application/json"
    if request.method == "HEAD":
        return Response(None, 200, headers=headers, media_type=media)
    total = result.count
    partial = total is not None and (offset > 0 or offset + rows < total)
    status = 206 if partial and isinstance(result.data, list | str) else 200
    if csv:
        return Response(result.data, status, headers=headers, media_type=media)
    if result.text is not None:  # PostgreSQL's own JSON: numbers keep every digit
        return Response(result.text, status, headers=headers, media_type=media)
    return _json(status, result.data, headers)


async def run_request(
    pool: Any,
    rest: RestRequest,
    builder: QueryBuilder,
    *,
    readonly: bool = True,
    prefer: Prefer | None = None,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Run a REST request's query: as the caller's role when a table it reads
    is under row-level security, and a write in one transaction, ended as
    *prefer* says (``tx=rollback``) unless *check* refuses the result."""
    builder.sql()  # plans the query: every table's rules are known now
    if rest.exposure.viewers:
        return await run_as_viewer(
            pool, builder, rest.exposure, readonly=readonly, prefer=prefer, check=check
        )
    if readonly:
        return await builder.execute()
    async with pool.acquire() as conn:
        return await _in_transaction(conn, builder, None, False, prefer, check)


async def run_as_viewer(
    pool: Any,
    builder: QueryBuilder,
    exposure: RestExposure,
    *,
    readonly: bool = True,
    prefer: Prefer | None = None,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Run the query as the caller's role with its claims (row-level security
    mode: PostgreSQL applies the tables' own policies and GRANTs)."""
    if len(exposure.viewers) != 1:
        raise AuthError("one request reads under one role", status=400)
    ((role, claims),) = exposure.viewers
    if role is None:
        raise AuthError("row-level security needs a role in the token", status=403)
    async with pool.acquire() as conn:
        return await _in_transaction(
            conn, builder, (role, claims), readonly, prefer, check
        )


async def _in_transaction(
    conn: Any,
    builder: QueryBuilder,
    viewer: tuple[str, str] | None,
    readonly: bool,
    prefer: Prefer | None,
    check: Callable[[Any], None] | None,
) -> Any:
    async def work() -> Any:
        if viewer is not None:
            await conn.execute(
                "select set_config('role', $1, true), "
                "set_config('request.jwt.claims', $2, true)",
                *viewer,
            )
        result = await builder.execute(conn)
        if check is not None:
            check(result)
        return result

    return await in_transaction(conn, work, prefer, readonly=readonly)
