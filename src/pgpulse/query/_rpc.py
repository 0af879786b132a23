"""Calling a SQL function by name with named arguments (``rpc``).

Shared by the builder (``db.rpc("add", {"a": 1, "b": 2})``) and the REST
endpoint (``/v1/rest/rpc/add``), which adds its allow-list and the caller's
role.  The overload whose argument names fit is called; every argument is
bound inside one JSON parameter and cast by PostgreSQL to the argument's
type; only names from the catalog reach the SQL text.  A set-returning
function answers a JSON array, one returning a row an object, a scalar its
value, ``void`` null.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from pgpulse.catalog import quote_ident
from pgpulse.exceptions import DatabaseError
from pgpulse.query._errors import QueryError
from pgpulse.query._result import Result
from pgpulse.routing.filter_values import to_literal

__all__ = ["Function", "FunctionNotFound", "RpcCall", "call_function"]


class FunctionNotFound(QueryError):
    """No function (or overload) of that name takes these arguments, or
    several do (``ambiguous``)."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


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
class Function:
    schema: str
    name: str
    returns_set: bool
    returns_row: bool
    returns_void: bool
    args: tuple[tuple[str, str], ...]
    """Input arguments (name, type), in order."""
    required: frozenset[str]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Function:
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


def _pick(found: list[Function], given: set[str], display: str) -> Function:
    fits = [f for f in found if f.accepts(given)]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise FunctionNotFound(
            f"Could not choose the best candidate function between several "
            f"overloads of {display} for arguments ({', '.join(sorted(given))})",
            ambiguous=True,
        )
    shapes = "; ".join(
        "(" + ", ".join(f"{n} {t}" for n, t in f.args) + ")" for f in found
    )
    raise FunctionNotFound(
        f"Could not find the function {display}({', '.join(sorted(given))}) "
        f"in the exposed functions; it takes {shapes}"
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


def _statement(function: Function, given: set[str], as_text: bool) -> str:
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


async def call_function(
    conn: Any,
    schema: str,
    name: str,
    args: Mapping[str, Any],
    *,
    as_text: bool = False,
) -> tuple[Function, str]:
    """Call ``schema.name`` with *args* by name on *conn*: the function and
    its answer as JSON text (``null`` for ``void``).  *as_text* reads every
    argument from its text form (URL query parameters)."""
    rows = await conn.fetch(_FUNCTIONS, schema, name)
    display = f"{schema}.{name}"
    if not rows:
        raise FunctionNotFound(f"Could not find the function {display}")
    given = set(args)
    function = _pick([Function.from_row(r) for r in rows], given, display)
    statement = _statement(function, given, as_text)
    bound = [orjson.dumps(dict(args)).decode()] if given else []
    text = await conn.fetchval(statement, *bound)
    return function, "null" if text is None else text


class RpcCall:
    """``db.rpc("add", {"a": 1, "b": 2})``: awaitable, or ``.execute()``."""

    def __init__(
        self, pool: Any, search_path: list[str], name: str, args: Mapping[str, Any]
    ) -> None:
        if not isinstance(name, str) or not name:
            raise QueryError(f"rpc() takes a function name, got {name!r}")
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise QueryError(
                f"rpc() takes the arguments as a dict of name -> value, got {args!r}"
            )
        schema, dot, function = name.rpartition(".")
        self._pool = pool
        self._schema = schema if dot else (search_path or ["public"])[0]
        self._name = function
        self._args = {k: _jsonable(v) for k, v in args.items()}

    async def execute(self, connection: Any = None) -> Result:
        """Call the function; ``Result.data`` is its answer (rows as dicts)."""
        if connection is not None:
            return await self._call(connection)
        async with self._pool.acquire() as conn:
            return await self._call(conn)

    async def _call(self, conn: Any) -> Result:
        try:
            _, text = await call_function(conn, self._schema, self._name, self._args)
        except asyncpg.PostgresError as exc:
            raise DatabaseError.from_asyncpg(exc) from exc
        return Result(orjson.loads(text), None)

    def __await__(self) -> Generator[Any, None, Result]:
        return self.execute().__await__()


def _jsonable(value: Any) -> Any:
    """Arguments travel as JSON: dates, decimals and UUIDs as their text."""
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return to_literal(value)
