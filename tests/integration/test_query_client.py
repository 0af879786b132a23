"""The client: pool, catalog cache, builder values, errors from PostgreSQL."""

from __future__ import annotations

import inspect

import asyncpg
import pytest

import pgpulse.query
from pgpulse.exceptions import DatabaseError, UnknownTableError
from pgpulse.query import (
    APPLICATION_NAME,
    QueryBuilder,
    QueryClient,
    Result,
    SingleRowError,
)
from tests.integration.query_support import load_schema


async def test_connect_sets_application_name_and_close_closes_the_pool(database):
    db = await pgpulse.query.connect(database, min_size=1, max_size=1)
    try:
        name = await db.pool.fetchval("select current_setting('application_name')")
        assert name == APPLICATION_NAME == "pgpulse-query"
    finally:
        await db.close()
    assert db.pool.is_closing()


async def test_connect_as_context_manager_merges_server_settings(database):
    async with pgpulse.query.connect(
        database, min_size=1, max_size=1, server_settings={"search_path": "pgpulse"}
    ) as db:
        settings = await db.pool.fetchrow(
            "select current_setting('application_name') as app, "
            "current_setting('search_path') as path"
        )
        assert settings is not None
        assert dict(settings) == {"app": "pgpulse-query", "path": "pgpulse"}
    assert db.pool.is_closing()


async def test_client_from_an_existing_pool_leaves_it_open(database):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        async with await QueryClient.from_pool(pool) as db:
            assert (await db.table("pgpulse.changes").select("id")).data == []
        assert not pool.is_closing()
    finally:
        await pool.close()


async def test_catalog_is_cached_until_refresh(database):
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        await load_schema(database)
        with pytest.raises(UnknownTableError):
            db.table("documents").sql()
        await db.refresh_catalog()
        result = await db.table("documents").select("id").eq("id", 3).single()
        assert result.data == {"id": 3}


async def test_builders_are_immutable_values(database):
    await load_schema(database)
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        base = db.table("documents").select("id").order("id")
        finals = base.eq("status", "final")
        drafts = base.eq("status", "draft")
        assert base.sql()[1] == []
        assert finals.sql()[1] == ["final"]
        assert drafts.sql()[1] == ["draft"]
        assert repr(finals) == "<QueryBuilder select 'documents'>"
        assert isinstance(finals, QueryBuilder)


async def test_awaiting_a_builder_executes_it_and_execute_takes_a_connection(
    database, conn
):
    await load_schema(database)
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        builder = db.table("users").select("name").eq("id", 1)
        assert await builder == Result([{"name": "Ada"}], None)
        async with conn.transaction():
            await conn.execute("update users set name = 'Ada L.' where id = 1")
            seen = await builder.execute(conn)
            assert seen.data == [{"name": "Ada L."}]
            assert (await builder).data == [{"name": "Ada"}]


async def test_single_and_maybe_single_count_rows(database):
    await load_schema(database)
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        users = db.table("users").select("id")
        with pytest.raises(SingleRowError) as none:
            await users.eq("id", 99).single()
        assert str(none.value) == (
            "expected exactly one row, got no rows; add filters that pick one row "
            "(e.g. .eq('id', 1)), or drop single()/maybe_single() to get a list."
        )
        with pytest.raises(SingleRowError, match="at most one row, got more than one"):
            await users.maybe_single()
        assert "LIMIT $1" in users.single().sql()[0]
        assert users.single().sql()[1] == [2]
        assert (await users.eq("id", 2).maybe_single()).data == {"id": 2}


async def test_database_errors_are_wrapped_with_sqlstate_detail_and_hint(database):
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        await db.pool.execute(
            "create table guarded (id int primary key); "
            "create function refuse() returns trigger language plpgsql as $$ begin "
            "raise exception 'not today' using detail = 'closed', hint = 'come back',"
            " errcode = 'P0001'; end $$; "
            "create trigger refuse before insert on guarded "
            "for each row execute function refuse();"
        )
        await db.refresh_catalog()
        with pytest.raises(DatabaseError) as info:
            await db.table("guarded").insert({"id": 1})
        error = info.value
        assert (error.sqlstate, error.detail, error.hint) == (
            "P0001",
            "closed",
            "come back",
        )
        assert str(error) == "not today\nDETAIL: closed\nHINT: come back"
        assert isinstance(error.__cause__, asyncpg.PostgresError)


def test_public_api_is_exported_completely():
    public = {
        name
        for name, value in vars(pgpulse.query).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name != "annotations"
    }
    assert public == set(pgpulse.query.__all__)


async def test_rpc_calls_functions_by_argument_names(database):
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        await db.pool.execute(
            "create function add_days(d date, n int default 1) returns date "
            "language sql immutable as $$ select d + n $$"
        )
        await db.pool.execute(
            "create function pairs(n int) returns table (i int, sq int) "
            "language sql immutable as $$ select g, g * g from "
            "generate_series(1, n) g $$"
        )
        import datetime

        day = await db.rpc("add_days", {"d": datetime.date(2026, 12, 31)})
        assert day.data == "2027-01-01"
        later = await db.rpc("public.add_days", {"d": "2026-01-01", "n": 40}).execute()
        assert later.data == "2026-02-10"
        assert (await db.rpc("pairs", {"n": 3})).data == [
            {"i": 1, "sq": 1},
            {"i": 2, "sq": 4},
            {"i": 3, "sq": 9},
        ]
        with pytest.raises(pgpulse.query.QueryError, match="add_days\\(x\\)"):
            await db.rpc("add_days", {"x": 1})
        with pytest.raises(pgpulse.query.QueryError, match="rpc\\(\\) takes"):
            db.rpc("add_days", ["d"])  # type: ignore[arg-type]


async def test_explain_returns_the_plan_and_undoes_analyzed_writes(database):
    async with pgpulse.query.connect(database, min_size=1, max_size=1) as db:
        await db.pool.execute("create table ex (id int primary key, v int)")
        await db.refresh_catalog()
        text = await db.table("ex").select("id").eq("v", 1).explain()
        assert isinstance(text.data, str) and "Seq Scan" in text.data
        plan = await db.table("ex").select("id").explain(analyze=True, format="json")
        assert plan.data[0]["Plan"]["Actual Loops"] == 1
        write = db.table("ex").insert({"id": 1, "v": 2}).explain(analyze=True)
        analyzed = await write
        assert "Insert on" in analyzed.data
        assert await db.pool.fetchval("select count(*) from ex") == 0
        with pytest.raises(pgpulse.query.QueryError, match="needs analyze"):
            db.table("ex").explain(wal=True)
