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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from pgpulse.catalog import quote_ident
from pgpulse.exceptions import AuthError, DatabaseError
from pgpulse.server.rest import HIDDEN_SCHEMAS
from pgpulse.server.rest_errors import RestProblem, error_response

__all__ = ["rest_rpc"]

_FUNCTIONS = """
select p.oid, n.nspname as schema, p.proname as name, p.proretset as returns_set,
       t.typtype = 'c' or p.prorettype = 'record'::regtype as returns_row,
       p.prorettype = 'void'::regtype as returns_void,
       coalesce(p.proargnames, '{}') as arg_names,
       coalesce(p.proargmodes::text[], '{}') as arg_modes,
       array(select format_type(a, null) from unnest(p.proargtypes) as a) as in_types,
       p.pronargdefaults as defaults
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type t on t.oid = p.prorettype
where n.nspname = $1 and p.proname = $2 and p.prokind = 'f'
"""


@dataclass(frozen=True)
class _Function:
    schema: str
    name: str
    returns_set: bool
    returns_row: bool
    returns_void: bool
    args: tuple[tuple[str, str], ...]
    """Input arguments (name, type), in order."""
    required: frozenset[str]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> _Function:
        names = list(row["arg_names"])
        modes = list(row["arg_modes"]) or ["i"] * len(row["in_types"])
        inputs = [
            name for name, mode in zip(names, modes, strict=False) if mode in "ib"
        ]
        types = list(row["in_types"])
        args = tuple(zip(inputs, types, strict=False))
        required = frozenset(n for n, _ in args[: len(args) - row["defaults"]])
        return cls(
            row["schema"],
            row["name"],
            row["returns_set"],
            row["returns_row"],
            row["returns_void"],
            args,
            required,
        )

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    def accepts(self, given: set[str]) -> bool:
        names = {n for n, _ in self.args}
        return self.required <= given <= names


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
    allowed = {f if "." in f else f"public.{f}" for f in settings.rest_functions}
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


def _pick(found: list[_Function], given: set[str], display: str) -> _Function:
    fits = [f for f in found if f.accepts(given)]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise RestProblem(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between several "
            f"overloads of {display} for arguments ({', '.join(sorted(given))})",
        )
    shapes = "; ".join(
        "(" + ", ".join(f"{n} {t}" for n, t in f.args) + ")" for f in found
    )
    raise RestProblem(
        404,
        "PGRST202",
        f"Could not find the function {display}({', '.join(sorted(given))}) "
        f"in the exposed functions; it takes {shapes}",
    )


def _argument(name: str, type_name: str, as_text: bool) -> str:
    """One argument from the JSON object ``$1``, cast by PostgreSQL (from its
    text form for GET's query parameters, as JSON for a POST body)."""
    value = f"($1::jsonb -> {_text(name)})"
    text = f"($1::jsonb ->> {_text(name)})"
    if as_text:
        expr = f"{text}::{type_name}"
    elif type_name in ("json", "jsonb"):
        expr = f"{value}::{type_name}"
    elif type_name.endswith("[]"):
        expr = (
            f"(case jsonb_typeof({value}) when 'array' then array(select "
            f"jsonb_array_elements_text({value}))::{type_name} else "
            f"{text}::{type_name} end)"
        )
    else:
        expr = f"{text}::{type_name}"
    return f"{quote_ident(name)} => {expr}"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _statement(function: _Function, given: set[str], as_text: bool) -> str:
    call_args = ", ".join(
        _argument(name, type_name, as_text)
        for name, type_name in function.args
        if name in given
    )
    call = f"{quote_ident(function.schema)}.{quote_ident(function.name)}({call_args})"
    if function.returns_set:
        return f'SELECT coalesce(json_agg("r"), \'[]\'::json)::text FROM {call} AS "r"'
    if function.returns_row:
        return f'SELECT to_json("r")::text FROM {call} AS "r"'
    if function.returns_void:
        return f"SELECT 'null' FROM {call} AS \"r\""
    return f"SELECT to_json({call})::text"


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
        given = set(args)
        async with gateway.pool.acquire() as conn:
            rows = await conn.fetch(_FUNCTIONS, schema, name)
            if not rows:
                raise RestProblem(
                    404,
                    "PGRST202",
                    f"Could not find the function {schema}.{name}: it is listed "
                    "in rest_functions but does not exist",
                )
            function = _pick(
                [_Function.from_row(r) for r in rows], given, f"{schema}.{name}"
            )
            statement = _statement(function, given, request.method == "GET")
            payload = orjson.dumps(args).decode()
            readonly = request.method == "GET"
            try:
                async with conn.transaction(readonly=readonly):
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
                    bound = [payload] if given else []
                    result = await conn.fetchval(statement, *bound)
            except asyncpg.PostgresError as exc:
                raise DatabaseError.from_asyncpg(exc) from exc
    except (RestProblem, AuthError, DatabaseError) as exc:
        return error_response(exc, authenticated)
    if function.returns_void:
        return Response(None, 204)
    body = result if result is not None else "null"
    return Response(body, 200, media_type="application/json")
