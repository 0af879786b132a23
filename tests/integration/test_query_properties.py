"""Property-based tests: random filter chains agree with a reference evaluation.

The reference evaluates the same grammar trees in Python with SQL's three-valued
logic (NULL compared to anything is unknown; NOT unknown is unknown) over rows
fetched with a plain ``SELECT *``.  A second property throws arbitrary text at
every place a user can type and checks that nothing but validation errors or
"bad value for this type" errors from PostgreSQL come back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgpulse.exceptions import DatabaseError, ValidationError
from pgpulse.query import QueryBuilder, QueryClient, connect
from pgpulse.routing.filter_values import condition
from pgpulse.routing.filters import (
    OPERATORS,
    And,
    Condition,
    Filter,
    Or,
    parse_filter,
)
from tests.integration.query_support import seeded_database, table_counts

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=2) as client:
        yield client


@pytest.fixture(scope="module")
async def rows(dsn) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch("select * from samples order by id")]
    finally:
        await conn.close()


# -- the reference: three-valued evaluation in Python ----------------------------------

COERCE: dict[str, Callable[[str], Any]] = {
    "n": int,
    "amount": Decimal,
    "name": str,
    "flag": lambda v: v == "true",
    "at": dt.datetime.fromisoformat,
    "tags": str,
}


def _like(pattern: str, value: str, insensitive: bool) -> bool:
    regex = "".join(
        ".*" if ch in "%*" else "." if ch == "_" else re.escape(ch) for ch in pattern
    )
    flags = re.S | (re.I if insensitive else 0)
    return re.fullmatch(regex, value, flags) is not None


def _not(value: bool | None) -> bool | None:
    return None if value is None else not value


def evaluate(filt: Filter, row: dict[str, Any]) -> bool | None:
    if isinstance(filt, Or | And):
        results = [evaluate(item, row) for item in filt.items]
        if isinstance(filt, Or):
            out = True if True in results else (None if None in results else False)
        else:
            out = False if False in results else (None if None in results else True)
        return _not(out) if filt.negate else out
    value = row[filt.column]
    if filt.op == "is":
        want = {None: None, "true": True, "false": False, "unknown": None}[
            None if filt.value is None else str(filt.value)
        ]
        hit = value is want
        return not hit if filt.negate else hit
    if filt.op == "in" and not filt.value:
        # x = ANY('{}') is false even for NULL x (there is nothing to compare).
        return filt.negate
    if value is None:
        return None
    convert = COERCE[filt.column]
    result: bool
    if filt.op == "in":
        assert isinstance(filt.value, tuple)
        result = value in {convert(v) for v in filt.value}
    elif filt.op in ("like", "ilike"):
        result = _like(str(filt.value), value, filt.op == "ilike")
    elif filt.op in ("cs", "cd"):
        assert isinstance(filt.value, tuple)
        items = set(filt.value)
        result = items <= set(value) if filt.op == "cs" else set(value) <= items
    else:
        other = convert(str(filt.value))
        result = {
            "eq": value == other,
            "neq": value != other,
            "lt": value < other,
            "lte": value <= other,
            "gt": value > other,
            "gte": value >= other,
        }[filt.op]
    return not result if filt.negate else result


# -- strategies --------------------------------------------------------------------

NAMES = ["alpha", "Beta", "gamma", "delta", "a,b", "o'neil", "x%y", "under_score"]
ORDERED = ["eq", "neq", "lt", "lte", "gt", "gte"]
COLUMN_OPS = {
    "n": [*ORDERED, "in", "is"],
    "amount": [*ORDERED, "in", "is"],
    "at": [*ORDERED, "in", "is"],
    "name": [*ORDERED, "like", "ilike", "in", "is"],
    "flag": ["eq", "neq", "is"],
    "tags": ["cs", "cd", "is"],
}
START = dt.datetime(2023, 12, 25, tzinfo=dt.UTC)


def scalar(column: str) -> st.SearchStrategy[Any]:
    if column == "n":
        return st.integers(-12, 12)
    if column == "amount":
        return st.integers(-240, 240).map(lambda q: Decimal(q) / 4)
    if column == "at":
        return st.integers(0, 60).map(lambda d: START + dt.timedelta(days=d))
    if column == "flag":
        return st.booleans()
    return st.sampled_from(NAMES) | st.text("abgxyo'%_,B", max_size=6)


def pattern() -> st.SearchStrategy[str]:
    piece = st.sampled_from(["a", "l", "B", "ph", "gam", "%", "*", "_", "o'", ",", "x"])
    return st.lists(piece, min_size=1, max_size=4).map("".join)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    column = draw(st.sampled_from(sorted(COLUMN_OPS)))
    op = draw(st.sampled_from(COLUMN_OPS[column]))
    negate = draw(st.booleans())
    value: Any
    if op == "is":
        value = draw(
            st.sampled_from([None, True, False] if column == "flag" else [None])
        )
    elif op == "in":
        value = draw(st.lists(scalar(column), max_size=4))
    elif op in ("like", "ilike"):
        value = draw(pattern())
    elif op in ("cs", "cd"):
        value = draw(st.lists(st.sampled_from("abcd"), max_size=3, unique=True))
    else:
        value = draw(scalar(column))
    return condition(column, op, value, negate)


def grammar_value(value: str | tuple[str, ...] | None) -> str:
    """A condition's value as or_() text, always double-quoted."""

    def quote(item: str) -> str:
        return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'

    if value is None:
        return "null"
    if isinstance(value, tuple):
        return "(" + ",".join(quote(v) for v in value) + ")"
    return value if value in ("true", "false") else quote(value)


def or_text(cond: Condition) -> str:
    op = cond.op
    value = cond.value
    if op == "is":
        text = "null" if value is None else str(value)
    elif op in ("cs", "cd"):
        # Inside or=(...) the grammar takes (a,b), not {a,b} (split_top only
        # knows parentheses).
        assert isinstance(value, tuple)
        text = "(" + ",".join(value) + ")"
    else:
        text = grammar_value(value)
    return f"{cond.column}.{'not.' if cond.negate else ''}{op}.{text}"


@st.composite
def or_groups(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:
            inner = draw(st.lists(conditions(), min_size=1, max_size=2))
            parts.append("and(" + ",".join(or_text(c) for c in inner) + ")")
        else:
            parts.append(or_text(draw(conditions())))
    return ",".join(parts)


def apply(builder: QueryBuilder, cond: Condition) -> QueryBuilder:
    target: Any = builder.not_ if cond.negate else builder
    value: Any = cond.value
    if cond.op == "is":
        value = {None: None, "true": True, "false": False}[value]
        built: QueryBuilder = target.is_(cond.column, value)
        return built
    method = {"cs": "contains", "cd": "contained_by", "in": "in_"}.get(cond.op, cond.op)
    built = getattr(target, method)(cond.column, value)
    return built


# -- properties ----------------------------------------------------------------------


@SETTINGS
@given(
    chain=st.lists(st.one_of(conditions(), or_groups()), min_size=1, max_size=4),
    limit=st.none() | st.integers(0, 10),
)
async def test_random_filter_chains_match_the_reference_evaluation(
    db, rows, chain, limit
):
    builder = db.table("samples").select("id").order("id")
    trees: list[Filter] = []
    for item in chain:
        if isinstance(item, Condition):
            builder = apply(builder, item)
            trees.append(item)
        else:
            builder = builder.or_(item)
            trees.append(parse_filter("or", f"({item})"))
    if limit is not None:
        builder = builder.limit(limit)
    want = [r["id"] for r in rows if all(evaluate(t, r) is True for t in trees)]
    if limit is not None:
        want = want[:limit]
    result = await builder.execute()
    assert [r["id"] for r in result.data] == want, builder.sql()


JUNK = st.text(max_size=30) | st.sampled_from(
    [
        "id",
        "name",
        "tags",
        "id; drop table samples",
        '"id"',
        "id)",
        "(select 1)",
        "n::text",
        "x:id",
        "documents(id)",
        "users!inner(*)",
        "*",
        "id.desc",
        "nodes.status",
        "1=1",
        "'",
        "--",
        "\\",
        "a,b",
    ]
)
OPS = st.sampled_from([*OPERATORS, "not.eq", "not.in", "equals", "", "."])


@SETTINGS
@given(
    select=JUNK,
    column=JUNK,
    op=OPS,
    value=JUNK,
    order=JUNK,
    or_filter=JUNK,
    reference=st.none() | JUNK,
)
async def test_arbitrary_input_is_validated_or_bound_never_run_as_sql(
    db, dsn, select, column, op, value, order, or_filter, reference
):
    attempts = [
        lambda: db.table("samples").select(select),
        lambda: db.table(select).select("id"),
        lambda: db.table("samples").select("id").filter(column, op, value),
        lambda: db.table("samples").select("id").eq("name", value),
        lambda: db.table("samples").select("id").in_("n", [value]),
        lambda: db.table("samples").select("id").order(order),
        lambda: db.table("samples").select("id").or_(or_filter),
        lambda: (
            db.table("documents")
            .select("id, nodes(id)")
            .order("id", foreign_table=reference)
            .or_(or_filter, reference_table=reference)
        ),
        lambda: db.table("labels").update({column: value}).eq("id", -1),
    ]
    for attempt in attempts:
        try:
            builder = attempt()
            await builder.execute()
        except ValidationError:
            continue
        except DatabaseError as exc:
            # Only data errors: a bound value that does not fit its type.
            assert exc.sqlstate is not None and exc.sqlstate.startswith("22"), exc


async def test_arbitrary_input_left_every_table_intact(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        counts = await table_counts(conn)
    finally:
        await conn.close()
    assert counts["samples"] == 48
    assert counts["labels"] == 5
    assert counts["documents"] == 24
