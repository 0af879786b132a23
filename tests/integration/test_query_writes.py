"""insert, upsert, update, delete: SQL, returned rows, counts and guard rails.

Most tests run on one connection inside a transaction that is rolled back, so
they share a seeded database and stay independent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from pgpulse.exceptions import DatabaseError, UnknownColumnError
from pgpulse.query import QueryClient, QueryError, SingleRowError, connect
from tests.integration.query_support import seeded_database


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=2) as client:
        yield client


@pytest.fixture
async def tx(dsn) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def test_insert_one_row_returns_it_with_defaults(db, tx):
    result = await (
        db.table("documents")
        .insert({"title": "New", "author_id": 1, "tags": ["a", "b"]})
        .execute(tx)
    )
    [row] = result.data
    assert row["id"] == 25
    assert row["title"] == "New"
    assert row["status"] == "draft"
    assert row["tags"] == ["a", "b"]
    assert row["meta"] == {}


async def test_insert_many_rows_is_one_statement_with_one_json_parameter(db, tx):
    rows = [
        {"id": 100 + i, "name": f"n{i}", "amount": Decimal("1.25") * i}
        for i in range(50)
    ]
    builder = db.table("samples").insert(rows, count="exact").select("id, amount")
    statement, params = builder.sql()
    assert len(params) == 1
    assert "json_to_recordset($1::json)" in statement
    result = await builder.execute(tx)
    assert result.count == 50
    assert result.data[3] == {"id": 103, "amount": 3.75}


async def test_insert_missing_keys_become_null(db, tx):
    result = await (
        db.table("samples")
        .insert([{"id": 200, "n": 1}, {"id": 201, "name": "x"}])
        .select("id, n, name")
        .execute(tx)
    )
    assert result.data == [
        {"id": 200, "n": 1, "name": None},
        {"id": 201, "n": None, "name": "x"},
    ]


async def test_insert_python_types_round_trip(db, tx):
    when = dt.datetime(2024, 5, 1, 12, 30)
    result = await (
        db.table("samples")
        .insert({"id": 300, "flag": True, "at": when, "amount": Decimal("-4.50")})
        .select("flag, at, amount")
        .single()
        .execute(tx)
    )
    # Naive datetimes are UTC; PostgreSQL writes the instant in the server's
    # time zone (America/New_York on one of the suite's servers).
    data = dict(result.data)
    at = dt.datetime.fromisoformat(data.pop("at"))
    assert at == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert data == {"flag": True, "amount": -4.5}


async def test_insert_returning_minimal_returns_no_rows(db, tx):
    builder = db.table("samples").insert(
        {"id": 400}, returning="minimal", count="exact"
    )
    statement, _ = builder.sql()
    assert statement.startswith('INSERT INTO "public"."samples"')
    assert "RETURNING" not in statement
    result = await builder.execute(tx)
    assert result.data == []
    assert result.count == 1
    assert await tx.fetchval("select count(*) from samples where id = 400") == 1


async def test_insert_can_embed_related_rows_in_what_it_returns(db, tx):
    result = await (
        db.table("documents")
        .insert({"title": "Embedded", "author_id": 3, "shipment_id": 2})
        .select("title, author:users!author_id(name), shipment:shipments(reference)")
        .single()
        .execute(tx)
    )
    assert result.data == {
        "title": "Embedded",
        "author": {"name": "Chen"},
        "shipment": {"reference": "SHP-0002"},
    }


async def test_upsert_updates_existing_rows_on_the_primary_key(db, tx):
    result = await (
        db.table("labels")
        .upsert([{"id": 1, "name": "urgent!"}, {"id": 9, "name": "fresh"}])
        .select("id, name, color")
        .execute(tx)
    )
    assert result.data == [
        {"id": 1, "name": "urgent!", "color": "red"},
        {"id": 9, "name": "fresh", "color": None},
    ]


async def test_upsert_on_another_unique_column_and_ignore_duplicates(db, tx):
    builder = db.table("labels").upsert(
        [{"id": 50, "name": "audit"}, {"id": 51, "name": "brand new"}],
        on_conflict="name",
        ignore_duplicates=True,
    )
    assert 'ON CONFLICT ("name") DO NOTHING' in builder.sql()[0]
    result = await builder.select("id, name").execute(tx)
    assert result.data == [{"id": 51, "name": "brand new"}]
    assert await tx.fetchval("select id from labels where name = 'audit'") == 2


async def test_upsert_sql_updates_every_sent_column_except_the_key(db):
    statement, _ = db.table("labels").upsert({"id": 1, "name": "x", "color": "y"}).sql()
    assert (
        'ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", '
        '"color" = EXCLUDED."color"'
    ) in statement


async def test_update_sets_values_on_filtered_rows(db, tx):
    builder = (
        db.table("documents")
        .update({"status": "final", "pages": 3})
        .lt("id", 4)
        .select("id, status, pages")
    )
    statement, params = builder.sql()
    assert 'SET "status" = $1::text::doc_status, "pages" = $2::text::int4' in statement
    assert params == ["final", "3", "4"]
    result = await builder.execute(tx)
    assert result.data == [{"id": i, "status": "final", "pages": 3} for i in (1, 2, 3)]


async def test_update_to_null_and_arrays_and_json(db, tx):
    result = await (
        db.table("documents")
        .update({"reviewer_id": None, "tags": ["x", "y"], "meta": {"k": [1, 2]}})
        .eq("id", 1)
        .select("reviewer_id, tags, meta")
        .single()
        .execute(tx)
    )
    assert result.data == {
        "reviewer_id": None,
        "tags": ["x", "y"],
        "meta": {"k": [1, 2]},
    }


async def test_update_and_delete_without_filters_are_refused(db):
    with pytest.raises(QueryError) as info:
        db.table("documents").update({"title": "x"}).sql()
    assert str(info.value) == (
        "update() without filters would change every row of 'documents'; "
        "add a filter such as .eq('id', 1)."
    )
    with pytest.raises(QueryError, match=r"delete\(\) without filters"):
        db.table("documents").delete().sql()
    # A filter on an embedded table does not count: it does not limit the write.
    with pytest.raises(QueryError, match="without filters"):
        db.table("documents").delete().select("id, nodes(id)").eq("nodes.id", 1).sql()


async def test_delete_returns_deleted_rows_and_count(db, tx):
    result = await (
        db.table("checks")
        .delete(count="exact")
        .eq("result", "fail")
        .lt("node_id", 5)
        .select("id")
        .execute(tx)
    )
    assert result.count == len(result.data) > 0
    assert (
        await tx.fetchval(
            "select count(*) from checks where result = 'fail' and node_id < 5"
        )
        == 0
    )


async def test_single_write_touching_several_rows_is_rolled_back(db, dsn):
    with pytest.raises(SingleRowError) as info:
        await db.table("labels").update({"color": "black"}).lt("id", 3).single()
    assert str(info.value).startswith("expected exactly one row, got 2 rows;")
    conn = await asyncpg.connect(dsn)
    try:
        assert (
            await conn.fetchval("select count(*) from labels where color = 'black'")
            == 0
        )
    finally:
        await conn.close()


async def test_single_minimal_write_is_checked_too(db, tx):
    result = await (
        db.table("labels")
        .update({"color": "x"}, returning="minimal")
        .eq("id", 1)
        .single()
    ).execute(tx)
    assert result.data is None
    with pytest.raises(SingleRowError, match="got no rows"):
        await (
            db.table("labels")
            .delete(returning="minimal")
            .eq("id", 999)
            .single()
            .execute(tx)
        )


async def test_write_errors_keep_postgres_fields(db, tx):
    with pytest.raises(DatabaseError) as info:
        await db.table("documents").insert({"title": "x", "author_id": 999}).execute(tx)
    assert info.value.sqlstate == "23503"
    assert "documents_author_id_fkey" in str(info.value)
    assert info.value.detail == 'Key (author_id)=(999) is not present in table "users".'


async def test_bad_writes_are_rejected_before_running(db):
    with pytest.raises(UnknownColumnError, match="'titel' does not exist in table"):
        db.table("documents").insert({"titel": "x"}).sql()
    with pytest.raises(QueryError, match="at least one row"):
        db.table("documents").insert([])
    with pytest.raises(QueryError, match="rows must be dicts"):
        db.table("documents").insert(["title"])
    with pytest.raises(QueryError, match="takes no filters"):
        db.table("documents").insert({"title": "x"}).eq("id", 1).sql()
    with pytest.raises(QueryError, match="apply to reads"):
        db.table("documents").update({"title": "x"}).eq("id", 1).limit(1).sql()
    with pytest.raises(QueryError, match="already an insert"):
        db.table("documents").insert({"title": "x"}).delete()
    with pytest.raises(QueryError, match="returning must be"):
        db.table("documents").delete(returning="everything")
    with pytest.raises(QueryError, match="at least one column"):
        db.table("documents").update({}).eq("id", 1).sql()
