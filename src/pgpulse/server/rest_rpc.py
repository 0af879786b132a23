"""``GET/POST /v1/rest/rpc/{function}``: PostgREST's function calls, allow-listed.

Why an allow-list: a database holds many functions nobody meant to publish
(``pg_read_file``, ``pg_sleep``, pgpulse's own, an extension's helpers), and
PostgREST's answer (whatever the role may EXECUTE in the exposed schemas)
depends on GRANTs most databases never tightened.  Here only functions named
in ``[serve] rest_functions`` (``--rest-function``) exist for REST; any other
name is "not found", whether or not such a function exists.

How a call runs: arguments by name (a JSON object for POST, query parameters
for GET), each bound as a value and cast to the argument's type by
PostgreSQL; the overload whose argument names match is called.  With auth on,
the call runs as the caller's role with ``request.jwt.claims`` set (the
PostgREST convention), so PostgreSQL's ``GRANT EXECUTE`` and the row-level
security of the tables it reads decide; with auth off, as the gateway's own
role.  GET runs in a read-only transaction (a function that writes is
``405``), POST in a read-write one.  A set-returning function answers a JSON
array, one returning a composite an object, a scalar function its value.
``Prefer: tx=rollback`` and ``max-affected`` work as for writes
(:mod:`pgpulse.server.rest_prefer`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pgpulse.exceptions import AuthError, DatabaseError
from pgpulse.query._rpc import Function, FunctionNotFound, call_function
from pgpulse.server.exposure import qualified_functions
from pgpulse.server.rest import HIDDEN_SCHEMAS
from pgpulse.server.rest_errors import RestProblem, error_response, problem
from pgpulse.server.rest_prefer import Prefer, in_transaction

__all__ = ["rest_rpc"]


def _allowed_name(request: Request) -> tuple[str, str]:
    """(schema, name) of an allow-listed function, else 404 as PostgREST says
    for a function it cannot find."""
    settings = request.app.state.gateway.settings
    asked: str = request.path_params["function"]
    profile_header = "accept-profile" if request.method == "GET" else "content-profile"
    schemas = list(settings.rest_schemas or ("public",))
    profile = request.headers.get(profile_header)
    if profile is not None and profile not in schemas:
        raise RestProblem(
            406,
            "PGRST106",
            f"The schema must be one of the following: {', '.join(schemas)}",
        )
    schema, dot, name = asked.rpartition(".")
    if not dot:
        schema = profile or schemas[0]
    allowed = qualified_functions(settings.rest_functions)
    if (
        f"{schema}.{name}" not in allowed
        or schema in HIDDEN_SCHEMAS
        or schema not in schemas
    ):
        raise RestProblem(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name} in the exposed functions",
            hint="functions are callable over REST only when listed in "
            "[serve] rest_functions (--rest-function NAME)",
        )
    return schema, name


def _arguments(request: Request, raw: bytes) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query_params.multi_items())
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RestProblem(400, "PGRST102", f"Empty or invalid json: {exc}") from None
    if not isinstance(body, dict):
        raise RestProblem(
            400, "PGRST102", "an rpc body is a JSON object of named arguments"
        )
    return body


async def rest_rpc(request: Request) -> Response:
    """Answer ``/v1/rest/rpc/{function}`` (see the module docstring)."""
    gateway = request.app.state.gateway
    raw = await request.body()
    authenticated = False
    try:
        access = await gateway.identify(request)
        authenticated = bool(access.claims.values)
        schema, name = _allowed_name(request)
        args = _arguments(request, raw)
        prefer = Prefer(request.headers.get("prefer", ""))
        async with gateway.pool.acquire() as conn:

            async def call() -> tuple[Function, str]:
                if access.enabled:
                    role = access.claims.role
                    if role is None:
                        raise AuthError(
                            "calling a function needs a role in the token",
                            status=403,
                        )
                    await conn.execute(
                        "select set_config('role', $1, true), "
                        "set_config('request.jwt.claims', $2, true)",
                        role,
                        orjson.dumps(access.claims.values).decode(),
                    )
                called = await call_function(
                    conn, schema, name, args, as_text=request.method == "GET"
                )
                _check_affected(prefer, *called)
                return called

            function, result = await in_transaction(
                conn, call, prefer, readonly=request.method == "GET"
            )
    except FunctionNotFound as exc:
        if exc.ambiguous:
            return problem(300, "PGRST203", str(exc))
        return problem(404, "PGRST202", str(exc))
    except (RestProblem, AuthError, DatabaseError) as exc:
        return error_response(exc, authenticated)
    headers = {"Preference-Applied": prefer.applied} if prefer.applied else {}
    if function.returns_void:
        return Response(None, 204, headers=headers)
    return Response(result, 200, headers=headers, media_type="application/json")


def _check_affected(prefer: Prefer, function: Function, result: str) -> None:
    """``max-affected`` counts the rows a set-returning function returns; a
    function returning one value has nothing to count (``PGRST128``)."""
    if prefer.max_affected is None:
        return
    if not function.returns_set:
        raise RestProblem(
            400,
            "PGRST128",
            "Function must return SETOF or TABLE when max-affected preference "
            "is used with handling=strict",
        )
    rows = orjson.loads(result)
    prefer.check_affected(len(rows) if isinstance(rows, list) else 0)
