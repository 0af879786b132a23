"""``POST/PATCH/PUT/DELETE /v1/rest/{table}``: PostgREST's writes, under the rules.

Same requests as PostgREST: ``POST`` inserts an object or an array of them
(``?columns=`` picks the keys, ``Prefer: resolution=merge-duplicates`` or
``ignore-duplicates`` with ``?on_conflict=`` upserts, ``Prefer: missing=default``
gives absent keys their DEFAULT); ``PATCH`` updates and ``DELETE`` deletes the
rows its filters pick; ``PUT`` upserts the one row its primary-key filters name.
``Prefer: return=representation`` answers with the written rows (``select=``
shapes them, embeds included), ``return=minimal`` (the default) with none;
``Prefer: count=exact`` adds the number to ``Content-Range``.

Who may write what: with auth off, nothing unless the gateway was started with
``--rest-writes``.  With auth on, a table's policy names the writes each role
may make (``write = ["insert", "update"]``); its filter then bounds the rows an
update or delete touches and an upsert may overwrite, and every row a write
leaves must satisfy it, or the whole request is undone (403).  Hidden columns
cannot be written, tables under row-level security are written as the
caller's role (PostgreSQL's GRANTs and policies decide), and each request is
one transaction.  Unlike PostgREST, a PATCH or DELETE without filters is
refused rather than applied to the whole table.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pgpulse.exceptions import (
    AuthError,
    DatabaseError,
)
from pgpulse.query import QueryBuilder, apply_params
from pgpulse.routing.filter_values import to_literal
from pgpulse.server.rest import (
    OBJECT_MEDIA_TYPE,
    RestRequest,
    open_request,
    run_request,
)
from pgpulse.server.rest_errors import (
    REST_DISABLED,
    REST_ERRORS,
    RestProblem,
    error_response,
    problem,
)
from pgpulse.server.rest_prefer import Prefer

__all__ = ["rest_write"]

#: The policy ``write`` each request needs.
_NEEDS = {
    "insert": ("insert",),
    "merge": ("insert", "update"),
    "ignore": ("insert",),
    "update": ("update",),
    "delete": ("delete",),
}
_VERB = {"insert": "insert into", "update": "update", "delete": "delete from"}
_DISABLED = (
    "REST writes are off; start the gateway with --rest-writes (or set "
    "PGPULSE_REST_WRITES=1), or turn auth on and allow writes in the table's "
    'policy (write = ["insert", "update", "delete"]).'
)


def _body(request_body: bytes, content_type: str) -> Any:
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("", "application/json"):
        raise RestProblem(
            415,
            "PGRST107",
            f"Content-Type {media!r} is not accepted for writes; send "
            "'Content-Type: application/json'.",
        )
    try:
        return orjson.loads(request_body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RestProblem(
            400, "PGRST102", f"Empty or invalid json: {exc}", hint="send a JSON object"
        ) from None


def _rows(body: Any, *, with_columns: bool) -> list[dict[str, Any]]:
    rows = body if isinstance(body, list) else [body]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise RestProblem(
            400,
            "PGRST102",
            "the body must be a JSON object or a non-empty array of objects",
        )
    if not with_columns:
        keys = set(rows[0])
        if any(set(r) != keys for r in rows[1:]):
            raise RestProblem(
                400,
                "PGRST102",
                "All object keys must match",
                hint="give every object the same keys, or name them with "
                "?columns=a,b (a missing key is then NULL, or its DEFAULT with "
                "Prefer: missing=default)",
            )
    return rows


def _names(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip().strip('"') for n in text.split(",")]
    if not all(names):
        raise RestProblem(400, "PGRST100", f"{what}={text!r} names an empty column")
    return names


def _filter_items(request: Request) -> list[tuple[str, str]]:
    skip = {"select", "columns", "on_conflict"}
    return [(k, v) for k, v in request.query_params.multi_items() if k not in skip]


def _put_rows(
    rest: RestRequest, items: list[tuple[str, str]], body: Any
) -> list[dict[str, Any]]:
    """PUT: the body is the one row its primary-key filters name."""
    table = rest.client.schema.table(rest.table)
    key = table.primary_key
    given = {k: v for k, v in items}
    if (
        not key
        or len(items) != len(key)
        or set(given) != set(key)
        or not all(v.startswith("eq.") for v in given.values())
    ):
        raise RestProblem(
            405 if not key else 400,
            "PGRST105",
            "Filters must include all and only primary key columns with 'eq' "
            f"operators (PUT on {table.name!r} needs "
            + ", ".join(f"{k}=eq.<value>" for k in key)
            + ")",
        )
    rows = body if isinstance(body, list) else [body]
    if len(rows) != 1 or not isinstance(rows[0], dict):
        raise RestProblem(400, "PGRST102", "PUT takes exactly one JSON object")
    row = rows[0]
    for column in key:
        value = row.get(column)
        if value is None or isinstance(value, dict | list):
            matches = False
        else:
            matches = to_literal(value) == given[column][3:]
        if not matches:
            raise RestProblem(
                400,
                "PGRST115",
                "Payload values do not match URL in primary key column(s)",
                hint=f"the body's {column!r} must equal the filter's value",
            )
    return rows


def _plan(
    request: Request, rest: RestRequest, prefer: Prefer, raw: bytes
) -> tuple[QueryBuilder, str]:
    """The builder for this write and the policy write it needs."""
    method = request.method
    params = request.query_params
    returning = "representation" if prefer.representation else "minimal"
    count = prefer.values.get("count")
    if prefer.max_affected is not None and method in ("PATCH", "DELETE"):
        count = "exact"  # the affected rows, counted in the same statement
    builder = rest.client.table(rest.table)
    items = _filter_items(request)
    default_to_null = prefer.values.get("missing") != "default"
    if method == "DELETE":
        builder = builder.delete(returning=returning, count=count)
        kind = "delete"
    else:
        body = _body(raw, request.headers.get("content-type", ""))
        if method == "PATCH":
            if not isinstance(body, dict):
                raise RestProblem(400, "PGRST102", "PATCH takes one JSON object")
            builder = builder.update(body, returning=returning, count=count)
            kind = "update"
        elif method == "PUT":
            rows = _put_rows(rest, items, body)
            items = []
            builder = builder.upsert(rows, returning=returning, count=count)
            kind = "merge"
        else:
            columns = _names(params.get("columns"), "columns")
            rows = _rows(body, with_columns=columns is not None)
            resolution = prefer.values.get("resolution")
            conflict = _names(params.get("on_conflict"), "on_conflict")
            options: dict[str, Any] = {
                "returning": returning,
                "count": count,
                "default_to_null": default_to_null,
                "columns": columns,
            }
            if resolution is None:
                table = rest.client.schema.table(rest.table)
                for name in conflict or ():  # unused without a resolution
                    rest.client.schema.column(table, name)
                builder = builder.insert(rows, **options)
                kind = "insert"
            else:
                ignore = resolution == "ignore-duplicates"
                builder = builder.upsert(
                    rows, on_conflict=conflict, ignore_duplicates=ignore, **options
                )
                kind = "ignore" if ignore else "merge"
    builder = apply_params(builder, items)
    select = params.getlist("select")
    if select:
        builder = builder.select(select[-1])
    if (
        OBJECT_MEDIA_TYPE in request.headers.get("accept", "")
        and returning != "minimal"
    ):
        builder = builder.single()
    return builder, kind


def _allowed(rest: RestRequest, kind: str) -> None:
    """403 unless this caller may make this write on this table."""
    table = rest.client.schema.table(rest.table)
    rules = rest.exposure.rules(table)
    display = rest.client.catalog.display_name(table)
    for write in _NEEDS[kind]:
        if write not in rules.writes:
            who = rest.exposure.access.claims.role or "this caller"
            raise AuthError(
                f"role {who!r} may not {_VERB[write]} table {display!r}; "
                f'allow it with write = ["{write}"] in [policies.{display}]',
                status=403,
            )


async def rest_write(request: Request) -> Response:
    """Answer a write on ``/v1/rest/{table}`` (see the module docstring)."""
    gateway = request.app.state.gateway
    auth_on = gateway.auth.enabled or gateway.authenticate is not None
    if not auth_on and not gateway.settings.rest_writes:
        return problem(403, REST_DISABLED, _DISABLED)
    raw = await request.body()
    authenticated = False
    try:
        rest = await open_request(request, profile_header="content-profile")
        authenticated = rest.authenticated
        prefer = Prefer(request.headers.get("prefer", ""))
        builder, kind = _plan(request, rest, prefer, raw)
        _allowed(rest, kind)
        # max-affected counts PATCH and DELETE only (as PostgREST).
        limited = prefer.max_affected is not None and kind in ("update", "delete")
        result = await run_request(
            gateway.pool,
            rest,
            builder,
            readonly=False,
            prefer=prefer,
            check=(lambda r: prefer.check_affected(r.count or 0)) if limited else None,
        )
    except REST_ERRORS as exc:
        if (
            isinstance(exc, DatabaseError)
            and auth_on
            and (exc.sqlstate or "")[:2] == "23"
        ):
            # The detail of an integrity error can name rows and tables the
            # caller may not see (a foreign key's target); the message names
            # only the constraint.
            exc.detail = None
        return error_response(exc, authenticated)
    headers = _headers(result, prefer)
    if not prefer.representation:
        status = 201 if request.method == "POST" else 204
        return Response(None, status, headers=headers)
    status = 201 if request.method == "POST" else 200
    return Response(
        result.text if result.text is not None else orjson.dumps(result.data),
        status,
        headers=headers,
        media_type="application/json",
    )


def _headers(result: Any, prefer: Prefer) -> dict[str, str]:
    rows = len(result.data) if isinstance(result.data, list) else 1
    asked = "count" in prefer.values
    total = "*" if result.count is None or not asked else str(result.count)
    if prefer.representation and rows:
        span = f"0-{rows - 1}/{total}"
    else:
        span = f"*/{total}"
    headers: dict[str, str] = {"Content-Range": span}
    if prefer.applied:
        headers["Preference-Applied"] = prefer.applied
    return headers
