"""Random rows and random filters over every column type the grammar meets, and
the SQL PostgreSQL itself runs for each filter (the differential reference).

Why a generator of its own: the stream's matcher, the REST endpoint's SQL and
client.js must select exactly the rows PostgreSQL selects.  The reference here
is built independently of pgpulse's SQL: each condition becomes plain SQL with
its literal as a quoted constant (``col >= '9.99'``), which PostgreSQL types
from the column, as in a hand-written query.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import orjson

Columns: TypeAlias = dict[str, tuple[str, list[str | None]]]

#: Column name → (SQL type, values as PostgreSQL text; None is SQL NULL).
_UUIDS = [str(uuid.UUID(int=random.Random(i).getrandbits(128))) for i in range(6)]

COLUMNS: Columns = {
    "i": ("int4", ["-2147483648", "-1", "0", "1", "5", "42", "2147483647", None]),
    "b": (
        "int8",
        ["-9223372036854775808", "9007199254740993", "9007199254740992", "0", None],
    ),
    "n": (
        "numeric",
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "9.99",
            "9.990",
            "0.1",
            "1e-20",
            "12345678901234567890.123456789012",
            "-0",
            "5",
            "1e400",
            None,
        ],
    ),
    "f": (
        "float8",
        ["NaN", "Infinity", "-Infinity", "0.1", "-0", "1e300", "5e-324", "9.99", None],
    ),
    "r": ("float4", ["0.1", "3.4e38", "NaN", "1.17549435e-38", "16777217", "9.99"]),
    "t": (
        "text",
        [
            "",
            "a",
            "A",
            "ab",
            "a%b",
            "a_b",
            "a*b",
            "a\\b",
            "Ä",
            "ä",
            "ß",
            "İ",
            "zeta",
            "日本",
            " x ",
            "10",
            "9",
            None,
        ],
    ),
    "c": ("char(5)", ["ab", "ab   ", "a", "", "ABC", None]),
    "bo": ("bool", ["true", "false", None]),
    "d": (
        "date",
        [
            "2024-01-01",
            "infinity",
            "-infinity",
            "0044-03-15 BC",
            "0044-03-15",
            "0001-01-01 BC",
            "10000-01-01",
            "1999-12-31",
            None,
        ],
    ),
    "ts": (
        "timestamp",
        [
            "2024-01-01 10:00",
            "infinity",
            "-infinity",
            "0044-03-15 10:00 BC",
            "0044-03-15 09:00",
            "10000-01-01 00:00",
            "2024-01-01 10:00:00.123456",
            None,
        ],
    ),
    "tz": (
        "timestamptz",
        [
            "2024-01-01 10:00+02",
            "2024-01-01 08:00Z",
            "2024-01-01 10:00",
            "1850-01-01 00:00 America/New_York",
            "infinity",
            "-infinity",
            "0044-03-15 10:00+00 BC",
            "0044-03-15 10:00+00",
            None,
        ],
    ),
    "u": ("uuid", [*_UUIDS, None]),
    "j": (
        "jsonb",
        ['{"lang":"de"}', '{"lang":"en","n":1}', "[1,2]", "1", "1.0", '"x"', None],
    ),
    "a": ("int4[]", ["{1,2,3}", "{}", "{NULL}", "{1,NULL}", "{5}", None]),
    "ta": ("text[]", ["{a,b}", '{"a b",c}', "{}", "{A}", None]),
    "e": ("mood", ["sad", "ok", "happy", None]),
}

#: Extra spellings PostgreSQL accepts (or refuses) for literals, per column.
_SPELLINGS: dict[str, list[str]] = {
    "i": ["007", "+5", " 7", "1e2", "4.0", "x", "99999999999"],
    "b": ["9007199254740993", "-1", "1.5"],
    "n": ["NaN", "nan", "Infinity", "-inf", "1e2", "0.10", "9.99", "1e400", "x"],
    "f": ["NaN", "inf", "-Infinity", "1e300", "0.1", "1e-400", "9.99"],
    "r": ["0.1", "3.4e38", "nan", "16777216", "1e39", "9.99"],
    "t": ["a", "A", "ä", "Ä", "%", "a\\%b", "İ", "i", "ß", "SS", "", "a*", "*b*"],
    "c": ["ab", "ab  ", "ABC", "a"],
    "bo": ["true", "t", "yes", "0", "maybe"],
    "d": ["2024-01-01", "infinity", "-infinity", "44-03-15 BC", "10000-1-1", "epoch"],
    "ts": ["2024-01-01T10:00", "infinity", "2024-01-01 10:00+05", "x"],
    "tz": [
        "2024-01-01 10:00",
        "2024-01-01T08:00:00Z",
        "2024-01-01 03:00-05",
        "infinity",
        "2024-01-01 10:00 Asia/Kolkata",
    ],
    "u": [_UUIDS[0].upper(), "{" + _UUIDS[1] + "}", _UUIDS[2].replace("-", ""), "x"],
    "j": ['{"lang":"de"}', "[1]", "1", '"x"', "null", "{"],
    "a": ["{1}", "{1,2}", "{}", "{NULL}", "{5,1}"],
    "ta": ["{a}", '{"a b"}', "{}", "{a,b,c}"],
    "e": ["sad", "ok", "happy", "meh"],
}

_OPERATORS = ["eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is"]
_SQL_OPS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_CONTAINMENT = {"cs": "@>", "cd": "<@"}


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Case:
    """A filter in the grammar and the reference SQL for it."""

    text: str
    sql: str
    leaves: list[str]
    """Each condition alone: a filter is valid when PostgreSQL can evaluate
    every one of them (its literal is a value of the column's type, its
    operator applies), whatever the rows and the evaluation order."""


class Generator:
    def __init__(self, seed: int, columns: dict[str, tuple[str, list[str | None]]]):
        self.random = random.Random(seed)
        self.columns = columns

    def row(self) -> dict[str, str | None]:
        return {
            name: self.random.choice(values)
            for name, (_type, values) in self.columns.items()
        }

    def _literal(self, column: str) -> str:
        pool = [v for v in self.columns[column][1] if v is not None]
        pool += _SPELLINGS.get(column, [])
        return self.random.choice(pool)

    def condition(self, nested: bool) -> Case:
        r = self.random
        column = r.choice(list(self.columns))
        ops = _OPERATORS + (["cs", "cd"] if column in ("j", "a", "ta") else [])
        op = r.choice(ops)
        negate = r.random() < 0.25
        ref = f'"{column}"'
        sep = "." if nested else "="
        if op == "is":
            value = r.choice(["null", "true", "false", "unknown", "null"])
            keyword = value.upper()
            sql = f"{ref} IS {'NOT ' if negate else ''}{keyword}"
            text = f"{column}{sep}{'not.' if negate else ''}is.{value}"
            return Case(text, sql, [sql])
        if op == "in":
            items = [self._literal(column) for _ in range(r.randint(0, 3))]
            grammar = "(" + ",".join(_quote_item(i) for i in items) + ")"
            array = "ARRAY[" + ",".join(sql_literal(i) for i in items) + "]::text[]"
            sql = f"{ref} = ANY({array}::{self._array_type(column)})"
        elif op in ("like", "ilike"):
            value = self._pattern(column)
            grammar = _quote_scalar(value)
            pattern = value.replace("*", "%")
            sql = f"{ref} {op.upper()} {sql_literal(pattern)}"
        elif op in _CONTAINMENT:
            value = self._literal(column)
            grammar = _quote_scalar(value)
            sql = f"{ref} {_CONTAINMENT[op]} {sql_literal(value)}"
        else:
            value = self._literal(column)
            grammar = _quote_scalar(value)
            sql = f"{ref} {_SQL_OPS[op]} {sql_literal(value)}"
        text = f"{column}{sep}{'not.' if negate else ''}{op}.{grammar}"
        if op in ("like", "ilike"):
            # A bad pattern fails only on a value.
            return Case(
                text,
                f"NOT ({sql})" if negate else sql,
                [sql, f"coalesce({ref}, '') {op} {sql_literal(pattern)}"],
            )
        return Case(text, f"NOT ({sql})" if negate else sql, [sql])

    def _array_type(self, column: str) -> str:
        kind = self.columns[column][0].split(" collate")[0]
        if kind.startswith("char("):
            return "bpchar[]"
        return kind + "[]"

    def _pattern(self, column: str) -> str:
        r = self.random
        base = self._literal(column)
        choices = [
            base,
            base[:1] + "*",
            "*" + base[-1:],
            "*",
            base.replace("a", "_"),
            "a\\%b",
            "a\\*b",
            "%",
            "",
            base.upper(),
        ]
        return r.choice(choices)

    def tree(self, depth: int = 0) -> Case:
        r = self.random
        if depth >= 2 or r.random() < 0.55:
            return self.condition(nested=depth > 0)
        kind = r.choice(["or", "and"])
        items = [self.tree(depth + 1) for _ in range(r.randint(1, 3))]
        negate = depth > 0 and r.random() < 0.2
        inner = ",".join(_nested(i.text) for i in items)
        joiner = " OR " if kind == "or" else " AND "
        sql = "(" + joiner.join(f"({i.sql})" for i in items) + ")"
        prefix = "not." if negate else ""
        leaves = [leaf for i in items for leaf in i.leaves]
        if depth == 0:
            negate_top = r.random() < 0.2
            key = f"{'not.' if negate_top else ''}{kind}"
            return Case(f"{key}=({inner})", f"NOT {sql}" if negate_top else sql, leaves)
        return Case(f"{prefix}{kind}({inner})", f"NOT {sql}" if negate else sql, leaves)

    def filter(self) -> Case:
        """A single condition (half the time: each type and operator meets
        many values), or one or two trees joined by ``;`` (ANDed)."""
        if self.random.random() < 0.5:
            return self.condition(nested=False)
        parts = [self.tree() for _ in range(self.random.randint(1, 2))]
        return Case(
            ";".join(p.text for p in parts),
            " AND ".join(f"({p.sql})" for p in parts),
            [leaf for p in parts for leaf in p.leaves],
        )


def _nested(text: str) -> str:
    """A top-level ``col=op.v`` as an item inside or=(...): ``col.op.v``."""
    if "=" in text.split(".", 1)[0]:
        column, _, rest = text.partition("=")
        return f"{column}.{rest}"
    return text


_SPECIAL = set(',()"\\.;=')


def _quote_scalar(value: str) -> str:
    if value == "" or any(ch in _SPECIAL for ch in value) or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _quote_item(value: str) -> str:
    if value == "" or any(ch in ',()"\\' for ch in value) or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


# -- the table and its writes ------------------------------------------------


async def _collations(conn: asyncpg.Connection) -> Columns:
    """Text columns under an ICU collation and a nondeterministic one (servers
    built with ICU), and under the builtin provider (PostgreSQL 17+)."""
    extra: Columns = {}
    values = COLUMNS["t"][1]
    try:
        await conn.execute(
            "create collation ci (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        )
        await conn.execute(
            "create collation linguistic (provider = icu, locale = 'de')"
        )
    except asyncpg.FeatureNotSupportedError:
        pass  # this server has no ICU; the other one of the suite does
    else:
        extra["ti"] = ('text collate "linguistic"', values)
        extra["tc"] = ("text collate ci", values)
    if await conn.fetchval(
        "select count(*) from pg_collation where collname = 'pg_c_utf8'"
    ):
        extra["tb"] = ('text collate "pg_c_utf8"', values)
    return extra


async def create_table(conn: asyncpg.Connection, json: bool = True) -> Columns:
    """The table ``diff`` with a column of every type (and collation) this server
    has; the database's time zone becomes America/New_York."""
    await conn.execute("create type mood as enum ('sad', 'ok', 'happy')")
    columns = {**COLUMNS, **await _collations(conn)}
    if not json:
        columns.pop("j")
    body = ", ".join(f'"{name}" {kind}' for name, (kind, _v) in columns.items())
    await conn.execute(f"create table diff (id int primary key, {body})")
    # Not UTC, and not the writers' zone either.
    statement = await conn.fetchval(
        "select format('alter database %I set timezone = %L', current_database(), "
        "'America/New_York')"
    )
    await conn.execute(statement)
    return columns


async def write(
    dsn: str, sql: str, args: list[Any] | None = None, zone: str = "Asia/Kolkata"
) -> None:
    writer = await asyncpg.connect(dsn, server_settings={"timezone": zone})
    try:
        await writer.execute(sql, *(args or []))
    finally:
        await writer.close()


def insert_sql(columns: Columns) -> str:
    names = ", ".join(f'"{n}"' for n in columns)
    casts = ", ".join(
        f"(src->>'{n}')::{kind.split(' collate')[0]}"
        for n, (kind, _v) in columns.items()
    )
    return (
        f"insert into diff (id, {names}) "
        f"select (src->>'id')::int, {casts} from jsonb_array_elements($1::jsonb) src"
    )


def update_sql(columns: Columns) -> str:
    sets = ", ".join(
        f"\"{n}\" = (src->>'{n}')::{kind.split(' collate')[0]}"
        for n, (kind, _v) in columns.items()
    )
    return (
        f"update diff set {sets} from jsonb_array_elements($1::jsonb) src "
        "where diff.id = (src->>'id')::int"
    )


async def refused(conn: asyncpg.Connection, case: Case) -> str | None:
    """Why PostgreSQL refuses the filter (a condition it cannot evaluate on a
    row of the table), or None."""
    columns = ", ".join(f"({leaf})" for leaf in case.leaves)
    try:
        await conn.fetch(f"select {columns} from (select (null::diff).*) as diff")
    except asyncpg.PostgresError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def selected(conn: asyncpg.Connection, case: Case) -> set[int] | str:
    """The ids PostgreSQL selects, or its error message."""
    try:
        rows = await conn.fetch(f"select id from diff where {case.sql}")
    except asyncpg.PostgresError as exc:
        return f"{type(exc).__name__}: {exc}"
    return {r["id"] for r in rows}


async def write_and_follow(
    dsn: str,
    conn: asyncpg.Connection,
    generator: Generator,
    columns: Columns,
    cases: Sequence[Case],
    rows: int,
) -> list[list[tuple[str, int, bool]]]:
    """Insert *rows* random rows, update every one to new random values (in
    another time zone), delete the even ones; return, per case, the events a
    subscriber with that filter must receive: (op, id, moved), sorted."""
    ids = list(range(1, rows + 1))
    before = [{"id": i, **generator.row()} for i in ids]
    after = [{"id": i, **generator.row()} for i in ids]
    states: list[list[set[int]]] = []

    async def snapshot() -> None:
        sets = []
        for case in cases:
            found = await selected(conn, case)
            assert not isinstance(found, str), (case.text, found)
            sets.append(found)
        states.append(sets)

    await write(dsn, insert_sql(columns), [orjson.dumps(before).decode()])
    await snapshot()
    await write(dsn, update_sql(columns), [orjson.dumps(after).decode()], "UTC")
    await snapshot()
    await write(dsn, "delete from diff where id % 2 = 0")
    inserted, updated = states
    expected: list[list[tuple[str, int, bool]]] = []
    for k in range(len(cases)):
        exp = [("INSERT", i, False) for i in ids if i in inserted[k]]
        for i in ids:
            was, now = i in inserted[k], i in updated[k]
            if was and now:
                exp.append(("UPDATE", i, False))
            elif now:
                exp.append(("INSERT", i, True))  # moved into the filter
            elif was:
                exp.append(("DELETE", i, True))  # moved out: the old row only
        exp += [("DELETE", i, False) for i in ids if i % 2 == 0 and i in updated[k]]
        expected.append(sorted(exp))
    return expected
