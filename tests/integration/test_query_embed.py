"""Embedded resources: one statement at any depth, relationships from foreign keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgpulse.exceptions import UnknownColumnError, UnknownTableError
from pgpulse.query import (
    QueryClient,
    QueryError,
    RelationshipError,
    SelectError,
    connect,
)
from tests.integration.query_support import seeded_database

DEEP = (
    "id, shipment:shipments(id, port, customs:shipment_customs(*)), "
    "author:users!author_id(name), labels(name), "
    "nodes(id, parent:nodes!parent_id(id), checks(rule, result))"
)

POOL_RESET = {
    "CLOSE ALL",
    "UNLISTEN *",
    "RESET ALL",
    "SELECT pg_advisory_unlock_all()",
}


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=1) as client:
        yield client


async def test_deep_embedding_is_one_statement(db):
    statement, params = (
        db.table("documents").select(DEEP).eq("nodes.status", "ok").sql()
    )
    assert ";" not in statement
    assert statement.count("LEFT JOIN LATERAL") == 7
    assert statement.startswith("SELECT coalesce(json_agg(")
    assert params == ["ok"]


async def test_deep_embedding_runs_one_query_on_the_server_no_n_plus_one(db, dsn):
    stats = await asyncpg.connect(dsn)
    try:
        await stats.execute("select pg_stat_statements_reset()")
        result = await db.table("documents").select(DEEP).execute()
        calls = await stats.fetch(
            "select query, calls from pg_stat_statements s join pg_database d "
            "on d.oid = s.dbid where d.datname = current_database() "
            "and query not ilike '%pg_stat_statements%'"
        )
    finally:
        await stats.close()
    # What asyncpg's pool runs when a connection goes back is not our query.
    ours = [r for r in calls if r["query"] not in POOL_RESET]
    assert len(result.data) == 24
    assert sum(r["calls"] for r in ours) == 1, ours
    assert "LATERAL" in ours[0]["query"]


async def test_embedded_lists_and_objects_have_the_right_shape(db):
    row = await (
        db.table("documents")
        .select(DEEP)
        .eq("id", 2)
        .order("id", foreign_table="nodes")
    ).single()
    assert row.data["shipment"] == {
        "id": 3,
        "port": "USLAX",
        "customs": {"shipment_id": 3, "declaration": "DECL-3", "cleared": True},
    }
    assert row.data["author"] == {"name": "Chen"}
    assert [n["id"] for n in row.data["nodes"]] == [5, 6, 7, 8]
    assert row.data["nodes"][0]["parent"] is None
    assert row.data["nodes"][1]["parent"] == {"id": 5}
    assert all(len(n["checks"]) == 2 for n in row.data["nodes"])


async def test_parent_without_children_gets_an_empty_list_not_null(db):
    row = await db.table("labels").select("id, documents(id)").eq("id", 5).single()
    assert row.data == {"id": 5, "documents": []}


async def test_missing_many_to_one_is_null(db):
    row = await db.table("documents").select("id, shipments(id)").eq("id", 7).single()
    assert row.data == {"id": 7, "shipments": None}


async def test_count_respects_inner_embeds(db, dsn):
    result = await (
        db.table("documents")
        .select("id, nodes!inner(id)", count="exact")
        .eq("nodes.status", "bad")
        .limit(1)
    )
    conn = await asyncpg.connect(dsn)
    try:
        want = await conn.fetchval(
            "select count(*) from documents d where exists (select 1 from nodes n "
            "where n.document_id = d.id and n.status = 'bad')"
        )
    finally:
        await conn.close()
    assert result.count == want
    assert len(result.data) == 1


async def test_two_foreign_keys_to_the_same_table_need_a_hint(db):
    with pytest.raises(RelationshipError) as info:
        db.table("documents").select("id, users(name)").sql()
    message = str(info.value)
    assert "'users' can be embedded from 'documents' in 2 ways" in message
    assert "users!documents_author_id_fkey(*)" in message
    assert "users!documents_reviewer_id_fkey(*)" in message


async def test_self_reference_without_hint_names_both_directions(db):
    with pytest.raises(RelationshipError) as info:
        db.table("nodes").select("id, nodes(id)").sql()
    assert "nodes!parent_id(*)" in str(info.value)
    assert "nodes!nodes_parent_id_fkey(*)" in str(info.value)


async def test_unrelated_tables_list_what_can_be_embedded(db):
    with pytest.raises(RelationshipError) as info:
        db.table("ports").select("code, checks(id)").sql()
    assert str(info.value) == (
        "no foreign key links 'ports' and 'checks'; 'ports' can embed: shipments."
    )


async def test_hint_that_matches_nothing_is_named(db):
    with pytest.raises(RelationshipError, match="matching hint 'nope'"):
        db.table("documents").select("id, users!nope(name)").sql()


async def test_unknown_embedded_table_suggests_close_names(db):
    with pytest.raises(UnknownTableError, match="Did you mean 'nodes'"):
        db.table("documents").select("id, node(id)").sql()


async def test_unknown_embedded_column_names_its_table(db):
    with pytest.raises(UnknownColumnError) as info:
        db.table("documents").select("id, nodes(id, stauts)").sql()
    assert str(info.value) == (
        "column 'stauts' does not exist in table 'nodes'. Did you mean 'status'?"
    )


async def test_filter_on_a_table_that_is_not_embedded_says_how_to_embed_it(db):
    with pytest.raises(QueryError) as info:
        db.table("documents").select("id").eq("nodes.status", "ok").sql()
    assert "'nodes' in 'nodes.status' is neither a column of 'documents' nor" in str(
        info.value
    )
    assert "select('*, nodes(*)')" in str(info.value)


async def test_order_on_embedded_list_needs_foreign_table(db):
    with pytest.raises(QueryError, match="foreign_table='nodes'"):
        db.table("documents").select("id, nodes(id)").order("nodes.id").sql()


async def test_duplicate_output_keys_are_rejected(db):
    with pytest.raises(SelectError, match="key 'id' appears twice"):
        db.table("documents").select("*, id").sql()
    with pytest.raises(SelectError, match="key 'author' appears twice"):
        db.table("documents").select(
            "author:users!author_id(name), author:users!reviewer_id(name)"
        ).sql()


async def test_same_table_embedded_twice_under_aliases(db):
    row = await (
        db.table("documents")
        .select("id, author:users!author_id(id), reviewer:users!reviewer_id(id)")
        .eq("id", 1)
        .single()
    )
    assert row.data == {"id": 1, "author": {"id": 2}, "reviewer": {"id": 4}}


async def test_many_to_many_by_junction_hint(db):
    row = await (
        db.table("documents")
        .select("id, labels!document_labels(id)")
        .eq("id", 1)
        .order("id", foreign_table="labels")
        .single()
    )
    assert row.data == {"id": 1, "labels": [{"id": 2}]}
