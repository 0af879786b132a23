"""Bad input gets a clear error naming the problem; injection never executes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from pgpulse.exceptions import (
    DatabaseError,
    FilterError,
    UnknownColumnError,
    UnknownTableError,
    ValidationError,
)
from pgpulse.query import QueryBuilder, QueryClient, QueryError, SelectError, connect
from tests.integration.query_support import seeded_database, table_counts


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=2) as client:
        yield client


def docs(db: QueryClient) -> QueryBuilder:
    return db.table("documents")


MESSAGES: list[tuple[str, Callable[[QueryClient], Any], type[Exception], str]] = [
    (
        "unknown_table",
        lambda db: db.table("document").sql(),
        UnknownTableError,
        "table 'document' does not exist. Did you mean 'documents', 'document_labels'?",
    ),
    (
        "unknown_column_in_filter",
        lambda db: docs(db).eq("titel", "x").sql(),
        UnknownColumnError,
        "column 'titel' does not exist in table 'documents'. Did you mean 'title'?",
    ),
    (
        "unknown_column_in_order",
        lambda db: docs(db).order("create_at").sql(),
        UnknownColumnError,
        "column 'create_at' does not exist in table 'documents'. "
        "Did you mean 'created_at'?",
    ),
    (
        "unknown_column_in_select",
        lambda db: docs(db).select("id, titl").sql(),
        UnknownColumnError,
        "column 'titl' does not exist in table 'documents'. Did you mean 'title'?",
    ),
    (
        "unbalanced_select",
        lambda db: docs(db).select("id, nodes(id"),
        SelectError,
        "missing ')' after the columns of 'nodes' at position 12 of select "
        "'id, nodes(id'; expected e.g. 'id, title, nodes(id, status)'.",
    ),
    (
        "stray_paren_in_select",
        lambda db: docs(db).select("id)"),
        SelectError,
        "unexpected ')' at position 2 of select 'id)'; expected e.g. "
        "'id, title, nodes(id, status)'.",
    ),
    (
        "empty_item_in_select",
        lambda db: docs(db).select("id,,title"),
        SelectError,
        "expected a column or table name, got ',' at position 3 of select "
        "'id,,title'; expected e.g. 'id, title, nodes(id, status)'.",
    ),
    (
        "cast_not_allowed",
        lambda db: docs(db).select("id::regclass"),
        SelectError,
        "cast to 'regclass' is not allowed; use one of",
    ),
    (
        "hint_on_a_column",
        lambda db: docs(db).select("title!inner"),
        SelectError,
        "hint '!inner' only applies to embedded tables, like 'title!inner(*)'",
    ),
    (
        "json_path_into_text",
        lambda db: docs(db).select("title->>lang").sql(),
        FilterError,
        "JSON path 'title->>lang' needs a json or jsonb column; 'title' has type text.",
    ),
    (
        "like_on_integer",
        lambda db: docs(db).like("pages", "1*").sql(),
        FilterError,
        "'like' needs a text column; column 'pages' has type integer "
        "(in filter 'pages=like.1*').",
    ),
    (
        "is_true_on_text",
        lambda db: docs(db).is_("title", True).sql(),
        FilterError,
        "'is' needs a boolean column; column 'title' has type text "
        "(in filter 'title=is.true').",
    ),
    (
        "contains_on_text",
        lambda db: docs(db).contains("title", ["a"]).sql(),
        FilterError,
        "'cs' needs an array, jsonb or range column; column 'title' has type text",
    ),
    (
        "none_value",
        lambda db: docs(db).eq("reviewer_id", None),
        FilterError,
        "None is not a filter value: NULL never equals anything in SQL; "
        "use is_(column, None) to match NULL.",
    ),
    (
        "in_with_a_string",
        lambda db: docs(db).in_("status", "draft"),
        FilterError,
        "in_ takes a list of values for column 'status', got 'draft'; "
        "e.g. in_('status', ['new', 'done']).",
    ),
    (
        "is_with_a_number",
        lambda db: docs(db).is_("pages", 3),  # type: ignore[arg-type]
        FilterError,
        "is_ takes None, True, False or 'unknown' for column 'pages', got 3.",
    ),
    (
        "bad_or_string",
        lambda db: docs(db).or_("status=final"),
        FilterError,
        "expected 'column.op.value' inside 'or=(status=final)', got 'status=final'",
    ),
    (
        "unknown_operator",
        lambda db: docs(db).filter("id", "equals", "1"),
        FilterError,
        "unknown operator 'equals' in filter 'id=equals.1'; use one of",
    ),
    (
        "negative_limit",
        lambda db: docs(db).limit(-1),
        QueryError,
        "limit() takes a non-negative integer, got -1",
    ),
    (
        "range_backwards",
        lambda db: docs(db).range(5, 2),
        QueryError,
        "range() end 2 is before start 5",
    ),
    (
        "unknown_count",
        lambda db: docs(db).select("*", count="guessed"),
        QueryError,
        "count must be 'exact', 'planned', 'estimated' or None, got 'guessed'.",
    ),
    (
        "bad_foreign_table",
        lambda db: docs(db).order("id", foreign_table="nodes..x"),
        FilterError,
        "foreign_table must name an embedded table like 'nodes'",
    ),
    (
        "embedded_or_needs_reference_table",
        lambda db: (
            docs(db).select("id, nodes(id)").or_("nodes.status.eq.ok,id.eq.1").sql()
        ),
        QueryError,
        "or/and filters apply to one table, but 'nodes.status' names the embedded "
        "'nodes'; pass reference_table='nodes' and name its columns without the"
        " prefix.",
    ),
    (
        "limit_on_table_not_embedded",
        lambda db: docs(db).limit(1, foreign_table="nodes").sql(),
        QueryError,
        "'nodes' is not an embedded table in select('*'); embed it first, "
        "e.g. select('*, nodes(*)').",
    ),
    (
        "table_name_not_a_string",
        lambda db: db.table(""),
        QueryError,
        "table() takes a table name, got ''",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "message"), MESSAGES, ids=[m[0] for m in MESSAGES]
)
async def test_bad_input_gets_a_clear_message(db, name, call, error, message):
    with pytest.raises(error) as info:
        call(db)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValidationError)


async def test_bad_value_for_the_column_type_is_a_database_error_with_sqlstate(db):
    with pytest.raises(DatabaseError) as info:
        await docs(db).eq("id", "abc").execute()
    assert info.value.sqlstate == "22P02"
    assert str(info.value) == 'invalid input syntax for type integer: "abc"'


INJECTIONS: list[tuple[str, Callable[[QueryClient], QueryBuilder]]] = [
    ("value", lambda db: docs(db).eq("title", "'; drop table documents; --")),
    ("value_in_list", lambda db: docs(db).in_("title", ["a'); drop table users; --"])),
    ("value_in_int_list", lambda db: docs(db).in_("id", ["1); drop table users; --"])),
    ("like_pattern", lambda db: docs(db).like("title", "%'; delete from nodes; --")),
    ("json_value", lambda db: docs(db).contains("meta", {"'; drop table x; --": 1})),
    ("column", lambda db: docs(db).eq("id; drop table documents; --", 1)),
    ("quoted_column", lambda db: docs(db).eq('id"; drop table documents; --', 1)),
    ("table", lambda db: db.table("documents; drop table users")),
    ("table_quote", lambda db: db.table('documents"; drop table users; --')),
    ("select_subquery", lambda db: docs(db).select("id, (select 1)")),
    ("select_semicolon", lambda db: docs(db).select("id; drop table documents")),
    ("select_quoted", lambda db: docs(db).select('"id""; drop table users; --"')),
    ("select_cast", lambda db: docs(db).select("id::text; drop table users")),
    ("select_alias", lambda db: docs(db).select('"x; drop table users":id')),
    ("select_hint", lambda db: docs(db).select("users!author_id;drop(name)")),
    ("order", lambda db: docs(db).order("id desc; drop table documents")),
    ("order_table", lambda db: docs(db).order("id", foreign_table="x;drop table y")),
    ("or_string", lambda db: docs(db).or_("id.eq.1);drop table documents;--")),
    ("or_value", lambda db: docs(db).or_("title.eq.'; drop table users; --")),
    (
        "update_value",
        lambda db: (
            db.table("labels")
            .update({"name": "'; drop table labels; --"})
            .eq("id", 999)
        ),
    ),
    (
        "update_key",
        lambda db: db.table("labels").update({"name = 'x'; --": "y"}).eq("id", 1),
    ),
    (
        "insert_key",
        lambda db: db.table("labels").insert(
            {"id) values (1); drop table labels; --": 1}
        ),
    ),
    (
        "on_conflict",
        lambda db: db.table("labels").upsert(
            {"id": 999}, on_conflict="id) do nothing; drop table labels; --"
        ),
    ),
    ("delete_filter", lambda db: db.table("labels").delete().eq("id", "1 or 1=1")),
]


@pytest.mark.parametrize(("name", "build"), INJECTIONS, ids=[i[0] for i in INJECTIONS])
async def test_injection_attempts_are_rejected_or_bound_never_executed(
    db, dsn, name, build
):
    conn = await asyncpg.connect(dsn)
    try:
        before = await table_counts(conn)
        try:
            builder = build(db)
            await builder.execute()
        except ValidationError:
            pass
        except DatabaseError as exc:
            # Only "this value is not valid for the type": the value was bound.
            assert exc.sqlstate is not None and exc.sqlstate.startswith("22"), exc
        assert await table_counts(conn) == before
    finally:
        await conn.close()
