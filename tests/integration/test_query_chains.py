"""Builder chains return exactly what a hand-written SQL query returns.

Each case is a builder chain and the SQL a person would write for it, run on the
same seeded data (tests/integration/query_schema.sql).  The hand-written SQL uses
correlated subqueries, not the builder's lateral joins, so the two are
independent ways of asking the same question.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest

from pgpulse.query import QueryBuilder, QueryClient, connect
from tests.integration.query_support import canon, hand, seeded_database


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def db(dsn) -> AsyncIterator[QueryClient]:
    async with connect(dsn, min_size=1, max_size=2) as client:
        yield client


@pytest.fixture(scope="module")
async def ref(dsn) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[QueryClient], QueryBuilder]
    sql: str
    ordered: bool = True
    single: bool = False
    count_sql: str | None = None


def docs(db: QueryClient) -> QueryBuilder:
    return db.table("documents")


# Correlated json_agg helpers for the hand-written side.
def agg(inner: str, order: str = "x.id") -> str:
    return f"(select coalesce(json_agg(x order by {order}), '[]') from ({inner}) x)"


CASES = [
    # -- columns ---------------------------------------------------------------
    Case(
        "star",
        lambda db: docs(db).select("*").order("id"),
        "select * from documents order by id",
    ),
    Case(
        "default_select_is_star",
        lambda db: docs(db).select().order("id"),
        "select * from documents order by id",
    ),
    Case(
        "columns",
        lambda db: docs(db).select("id, title").order("id"),
        "select id, title from documents order by id",
    ),
    Case(
        "alias",
        lambda db: docs(db).select("name:title,id").order("id"),
        "select title as name, id from documents order by id",
    ),
    Case(
        "casts",
        lambda db: docs(db).select("id::text, pages::text").order("id"),
        "select id::text as id, pages::text as pages from documents d order by d.id",
    ),
    Case(
        "schema_qualified_table",
        lambda db: db.table("public.documents").select("id").lt("id", 4).order("id"),
        "select id from documents where id < 4 order by id",
    ),
    Case(
        "from_is_table",
        lambda db: db.from_("users").select("name").order("id"),
        "select name from users order by id",
    ),
    # -- comparison filters ----------------------------------------------------------
    Case(
        "eq_enum",
        lambda db: docs(db).select("id").eq("status", "final").order("id"),
        "select id from documents where status = 'final' order by id",
    ),
    Case(
        "neq",
        lambda db: docs(db).select("id").neq("status", "draft").order("id"),
        "select id from documents where status <> 'draft' order by id",
    ),
    Case(
        "gt",
        lambda db: docs(db).select("id, pages").gt("pages", 20).order("id"),
        "select id, pages from documents where pages > 20 order by id",
    ),
    Case(
        "gte_string_value",
        lambda db: docs(db).select("id").gte("pages", "20").order("id"),
        "select id from documents where pages >= 20 order by id",
    ),
    Case(
        "lt",
        lambda db: docs(db).select("id").lt("pages", 10).order("id"),
        "select id from documents where pages < 10 order by id",
    ),
    Case(
        "lte",
        lambda db: docs(db).select("id").lte("pages", 10).order("id"),
        "select id from documents where pages <= 10 order by id",
    ),
    Case(
        "like_star",
        lambda db: docs(db).select("id").like("title", "Invoice*").order("id"),
        "select id from documents where title like 'Invoice%' order by id",
    ),
    Case(
        "like_percent",
        lambda db: docs(db).select("id").like("title", "%list%").order("id"),
        "select id from documents where title like '%list%' order by id",
    ),
    Case(
        "ilike",
        lambda db: docs(db).select("id").ilike("title", "*LADING*").order("id"),
        "select id from documents where title ilike '%lading%' order by id",
    ),
    Case(
        "is_null",
        lambda db: docs(db).select("id").is_("reviewer_id", None).order("id"),
        "select id from documents where reviewer_id is null order by id",
    ),
    Case(
        "not_is_null",
        lambda db: docs(db).select("id").not_.is_("reviewer_id", None).order("id"),
        "select id from documents where reviewer_id is not null order by id",
    ),
    Case(
        "is_true",
        lambda db: (
            db.table("shipments").select("id").is_("hazardous", True).order("id")
        ),
        "select id from shipments where hazardous is true order by id",
    ),
    Case(
        "in_ints",
        lambda db: docs(db).select("id").in_("id", [1, 2, 3, 99]).order("id"),
        "select id from documents where id in (1, 2, 3, 99) order by id",
    ),
    Case(
        "in_enum",
        lambda db: docs(db).select("id").in_("status", ["draft", "final"]).order("id"),
        "select id from documents where status in ('draft', 'final') order by id",
    ),
    Case(
        "in_empty_matches_nothing",
        lambda db: docs(db).select("id").in_("id", []),
        "select id from documents where false",
    ),
    Case(
        "not_in",
        lambda db: docs(db).select("id").not_.in_("id", [1, 2]).order("id"),
        "select id from documents where id not in (1, 2) order by id",
    ),
    Case(
        "contains_array",
        lambda db: docs(db).select("id").contains("tags", ["urgent"]).order("id"),
        "select id from documents where tags @> array['urgent'] order by id",
    ),
    Case(
        "contained_by_array",
        lambda db: (
            docs(db).select("id").contained_by("tags", ["urgent", "export"]).order("id")
        ),
        "select id from documents where tags <@ array['urgent', 'export'] order by id",
    ),
    Case(
        "contains_jsonb",
        lambda db: docs(db).select("id").contains("meta", {"lang": "de"}).order("id"),
        """select id from documents where meta @> '{"lang": "de"}' order by id""",
    ),
    Case(
        "not_eq",
        lambda db: docs(db).select("id").not_.eq("status", "final").order("id"),
        "select id from documents where not (status = 'final') order by id",
    ),
    Case(
        "timestamp_string",
        lambda db: docs(db).select("id").gte("created_at", "2024-01-10").order("id"),
        "select id from documents where created_at >= '2024-01-10' order by id",
    ),
    Case(
        "timestamp_datetime",
        lambda db: (
            docs(db)
            .select("id")
            .lt("created_at", dt.datetime(2024, 1, 5, tzinfo=dt.UTC))
            .order("id")
        ),
        "select id from documents where created_at < '2024-01-05T00:00:00Z' order"
        " by id",
    ),
    Case(
        "numeric_decimal",
        lambda db: (
            db.table("shipments")
            .select("id, weight_kg")
            .gt("weight_kg", Decimal("5000"))
            .order("id")
        ),
        "select id, weight_kg from shipments where weight_kg > 5000 order by id",
    ),
    Case(
        "text_fk_in",
        lambda db: (
            db.table("shipments")
            .select("id")
            .in_("port", ["NLRTM", "DEHAM"])
            .order("id")
        ),
        "select id from shipments where port in ('NLRTM', 'DEHAM') order by id",
    ),
    Case(
        "value_with_quote",
        lambda db: db.table("samples").select("id").eq("name", "o'neil").order("id"),
        "select id from samples where name = 'o''neil' order by id",
    ),
    Case(
        "value_with_comma",
        lambda db: db.table("samples").select("id").eq("name", "a,b").order("id"),
        "select id from samples where name = 'a,b' order by id",
    ),
    # -- logic ---------------------------------------------------------------------
    Case(
        "or",
        lambda db: docs(db).select("id").or_("status.eq.final,pages.gt.30").order("id"),
        "select id from documents where status = 'final' or pages > 30 order by id",
    ),
    Case(
        "or_nested_and",
        lambda db: (
            docs(db)
            .select("id")
            .or_("status.eq.final,and(pages.lt.10,author_id.eq.2)")
            .order("id")
        ),
        "select id from documents where status = 'final' or (pages < 10 and"
        " author_id = 2)"
        " order by id",
    ),
    Case(
        "not_or",
        lambda db: (
            docs(db).select("id").not_.or_("status.eq.final,pages.gt.30").order("id")
        ),
        "select id from documents where not (status = 'final' or pages > 30) order"
        " by id",
    ),
    Case(
        "or_with_in_and_is",
        lambda db: (
            docs(db).select("id").or_("id.in.(1,2),reviewer_id.is.null").order("id")
        ),
        "select id from documents where id in (1, 2) or reviewer_id is null order"
        " by id",
    ),
    Case(
        "filters_and_together",
        lambda db: (
            docs(db).select("id").eq("status", "review").gt("pages", 5).order("id")
        ),
        "select id from documents where status = 'review' and pages > 5 order by id",
    ),
    Case(
        "match",
        lambda db: (
            docs(db)
            .select("id")
            .match({"status": "review", "author_id": 3})
            .order("id")
        ),
        "select id from documents where status = 'review' and author_id = 3 order"
        " by id",
    ),
    Case(
        "filter_raw_gt",
        lambda db: docs(db).select("id").filter("pages", "gt", "20").order("id"),
        "select id from documents where pages > 20 order by id",
    ),
    Case(
        "filter_raw_in",
        lambda db: docs(db).select("id").filter("id", "in", "(1,2,3)").order("id"),
        "select id from documents where id in (1, 2, 3) order by id",
    ),
    Case(
        "filter_raw_not",
        lambda db: (
            docs(db).select("id").filter("status", "not.eq", "draft").order("id")
        ),
        "select id from documents where status <> 'draft' order by id",
    ),
    Case(
        "not_call_js_style",
        lambda db: docs(db).select("id").not_("status", "eq", "draft").order("id"),
        "select id from documents where status <> 'draft' order by id",
    ),
    # -- order, limit, range, single
    Case(
        "order_desc_nulls_first",
        lambda db: (
            docs(db)
            .select("id, pages")
            .order("pages", desc=True, nulls_first=True)
            .order("id")
        ),
        "select id, pages from documents order by pages desc nulls first, id",
    ),
    Case(
        "order_asc_nulls_first",
        lambda db: (
            docs(db).select("id, pages").order("pages", nulls_first=True).order("id")
        ),
        "select id, pages from documents order by pages nulls first, id",
    ),
    Case(
        "order_two_keys",
        lambda db: (
            docs(db).select("id, author_id").order("author_id").order("id", desc=True)
        ),
        "select id, author_id from documents order by author_id, id desc",
    ),
    Case(
        "limit",
        lambda db: docs(db).select("id").order("id").limit(5),
        "select id from documents order by id limit 5",
    ),
    Case(
        "range",
        lambda db: docs(db).select("id").order("id").range(3, 7),
        "select id from documents order by id offset 3 limit 5",
    ),
    Case(
        "offset_past_end",
        lambda db: docs(db).select("id").order("id").offset(20).limit(10),
        "select id from documents order by id offset 20 limit 10",
    ),
    Case(
        "single",
        lambda db: docs(db).select("id, title").eq("id", 7).single(),
        "select id, title from documents where id = 7",
        single=True,
    ),
    Case(
        "maybe_single_none",
        lambda db: docs(db).select("id").eq("id", 999).maybe_single(),
        "select id from documents where id = 999",
        single=True,
    ),
    Case(
        "count_with_limit",
        lambda db: (
            docs(db)
            .select("id", count="exact")
            .eq("status", "final")
            .order("id")
            .limit(2)
        ),
        "select id from documents where status = 'final' order by id limit 2",
        count_sql="select count(*) from documents where status = 'final'",
    ),
    Case(
        "head_count_only",
        lambda db: docs(db).select("*", count="exact", head=True).gt("pages", 10),
        "select 1 where false",
        count_sql="select count(*) from documents where pages > 10",
    ),
    # -- embedding
    Case(
        "many_to_one",
        lambda db: (
            docs(db).select("id, shipment:shipments(reference, port)").order("id")
        ),
        "select d.id, (select row_to_json(x) from (select s.reference, s.port from"
        " shipments s"
        " where s.id = d.shipment_id) x) as shipment from documents d order by d.id",
    ),
    Case(
        "one_to_many_ordered",
        lambda db: (
            db.table("shipments")
            .select("id, documents(id, title)")
            .order("id")
            .order("id", foreign_table="documents")
        ),
        "select s.id, "
        + agg("select id, title from documents d where d.shipment_id = s.id")
        + " as documents from shipments s order by s.id",
    ),
    Case(
        "nested_two_levels",
        lambda db: (
            docs(db)
            .select("id, nodes(id, checks(id, result))")
            .lt("id", 4)
            .order("id")
            .order("id", foreign_table="nodes")
            .order("id", foreign_table="nodes.checks")
        ),
        "select d.id, "
        + agg(
            "select n.id, "
            + agg("select c.id, c.result from checks c where c.node_id = n.id")
            + " as checks from nodes n where n.document_id = d.id"
        )
        + " as nodes from documents d where d.id < 4 order by d.id",
    ),
    Case(
        "nested_three_levels_unordered",
        lambda db: (
            db.table("shipments")
            .select("id, documents(id, nodes(id, checks(rule)))")
            .lt("id", 4)
        ),
        "select s.id, "
        + agg(
            "select d.id, "
            + agg(
                "select n.id, "
                + agg("select c.rule from checks c where c.node_id = n.id", "x.rule")
                + " as checks from nodes n where n.document_id = d.id"
            )
            + " as nodes from documents d where d.shipment_id = s.id"
        )
        + " as documents from shipments s where s.id < 4",
        ordered=False,
    ),
    Case(
        "one_to_one_is_object",
        lambda db: (
            db.table("shipments").select("id, customs:shipment_customs(*)").order("id")
        ),
        "select s.id, (select row_to_json(c) from shipment_customs c where"
        " c.shipment_id = s.id)"
        " as customs from shipments s order by s.id",
    ),
    Case(
        "hint_by_column",
        lambda db: (
            docs(db)
            .select(
                "id, author:users!author_id(name), reviewer:users!reviewer_id(name)"
            )
            .order("id")
        ),
        "select d.id, (select row_to_json(x) from (select u.name from users u where"
        " u.id = d.author_id) x)"
        " as author, (select row_to_json(x) from (select u.name from users u"
        " where u.id = d.reviewer_id) x) as reviewer from documents d order by d.id",
    ),
    Case(
        "hint_by_constraint_name",
        lambda db: (
            docs(db).select("id, users!documents_author_id_fkey(email)").order("id")
        ),
        "select d.id, (select row_to_json(x) from (select u.email from users u"
        " where u.id = d.author_id) x) as users from documents d order by d.id",
    ),
    Case(
        "many_to_many",
        lambda db: (
            docs(db)
            .select("id, labels(name)")
            .order("id")
            .order("name", foreign_table="labels")
        ),
        "select d.id, "
        + agg(
            "select l.name from labels l join document_labels dl on dl.label_id = l.id"
            " where dl.document_id = d.id",
            "x.name",
        )
        + " as labels from documents d order by d.id",
    ),
    Case(
        "many_to_many_reverse",
        lambda db: (
            db.table("labels")
            .select("name, documents(id)")
            .order("id")
            .order("id", foreign_table="documents")
        ),
        "select l.name, "
        + agg(
            "select d.id from documents d join document_labels dl"
            " on dl.document_id = d.id where dl.label_id = l.id"
        )
        + " as documents from labels l order by l.id",
    ),
    Case(
        "self_reference_parent",
        lambda db: (
            db.table("nodes")
            .select("id, parent:nodes!parent_id(id, kind)")
            .lt("id", 9)
            .order("id")
        ),
        "select n.id, (select row_to_json(x) from (select p.id, p.kind from nodes p"
        " where p.id = n.parent_id) x) as parent from nodes n where n.id < 9 order"
        " by n.id",
    ),
    Case(
        "self_reference_children",
        lambda db: (
            db.table("nodes")
            .select("id, children:nodes!nodes_parent_id_fkey(id)")
            .lt("id", 9)
            .order("id")
            .order("id", foreign_table="children")
        ),
        "select n.id, "
        + agg("select c.id from nodes c where c.parent_id = n.id")
        + " as children from nodes n where n.id < 9 order by n.id",
    ),
    Case(
        "embedded_filter_filters_the_list",
        lambda db: (
            docs(db)
            .select("id, nodes(id, status)")
            .eq("nodes.status", "bad")
            .order("id")
            .order("id", foreign_table="nodes")
        ),
        "select d.id, "
        + agg(
            "select n.id, n.status from nodes n where n.document_id = d.id"
            " and n.status = 'bad'"
        )
        + " as nodes from documents d order by d.id",
    ),
    Case(
        "inner_filters_parents",
        lambda db: (
            docs(db)
            .select("id, nodes!inner(id)")
            .eq("nodes.status", "bad")
            .order("id")
            .order("id", foreign_table="nodes")
        ),
        "select d.id, "
        + agg(
            "select n.id from nodes n where n.document_id = d.id and n.status = 'bad'"
        )
        + " as nodes from documents d where exists (select 1 from nodes n"
        " where n.document_id = d.id and n.status = 'bad') order by d.id",
    ),
    Case(
        "inner_many_to_one",
        lambda db: (
            docs(db)
            .select("id, shipment:shipments!inner(port)")
            .eq("shipment.port", "NLRTM")
            .order("id")
        ),
        "select d.id, json_build_object('port', s.port) as shipment from documents d"
        " join shipments s on s.id = d.shipment_id where s.port = 'NLRTM' order by"
        " d.id",
    ),
    Case(
        "to_one_filter_without_inner_nulls_it",
        lambda db: (
            docs(db)
            .select("id, shipment:shipments(port)")
            .eq("shipment.port", "NLRTM")
            .order("id")
        ),
        "select d.id, (select row_to_json(x) from (select s.port from shipments s"
        " where s.id = d.shipment_id and s.port = 'NLRTM') x) as shipment"
        " from documents d order by d.id",
    ),
    Case(
        "empty_inner_embed_only_filters",
        lambda db: (
            docs(db)
            .select("id, nodes!inner()")
            .eq("nodes.kind", "signature")
            .eq("nodes.status", "bad")
            .order("id")
        ),
        "select d.id from documents d where exists (select 1 from nodes n where"
        " n.document_id = d.id and n.kind = 'signature' and n.status = 'bad') order"
        " by d.id",
    ),
    Case(
        "embedded_limit",
        lambda db: (
            db.table("shipments")
            .select("id, documents(id)")
            .order("id")
            .order("id", foreign_table="documents")
            .limit(2, foreign_table="documents")
        ),
        "select s.id, (select coalesce(json_agg(x order by x.id), '[]') from (select"
        " d.id"
        " from documents d where d.shipment_id = s.id order by d.id limit 2) x) as"
        " documents"
        " from shipments s order by s.id",
    ),
    Case(
        "embedded_range",
        lambda db: (
            docs(db)
            .select("id, nodes(id)")
            .lt("id", 5)
            .order("id")
            .order("id", foreign_table="nodes")
            .range(1, 2, foreign_table="nodes")
        ),
        "select d.id, (select coalesce(json_agg(x order by x.id), '[]') from (select"
        " n.id"
        " from nodes n where n.document_id = d.id order by n.id offset 1 limit 2) x)"
        " as nodes"
        " from documents d where d.id < 5 order by d.id",
    ),
    Case(
        "embedded_order_desc",
        lambda db: (
            docs(db)
            .select("id, nodes(id, position)")
            .lt("id", 4)
            .order("id")
            .order("position", desc=True, foreign_table="nodes")
        ),
        "select d.id, "
        + agg(
            "select n.id, n.position from nodes n where n.document_id = d.id",
            "x.position desc",
        )
        + " as nodes from documents d where d.id < 4 order by d.id",
    ),
    Case(
        "embedded_or",
        lambda db: (
            docs(db)
            .select("id, nodes(id)")
            .lt("id", 6)
            .order("id")
            .order("id", foreign_table="nodes")
            .or_("status.eq.bad,status.is.null", reference_table="nodes")
        ),
        "select d.id, "
        + agg(
            "select n.id from nodes n where n.document_id = d.id"
            " and (n.status = 'bad' or n.status is null)"
        )
        + " as nodes from documents d where d.id < 6 order by d.id",
    ),
    Case(
        "nested_path_filter",
        lambda db: (
            docs(db)
            .select("id, nodes(id, checks(id))")
            .lt("id", 4)
            .eq("nodes.checks.result", "fail")
            .order("id")
            .order("id", foreign_table="nodes")
            .order("id", foreign_table="nodes.checks")
        ),
        "select d.id, "
        + agg(
            "select n.id, "
            + agg(
                "select c.id from checks c where c.node_id = n.id and c.result = 'fail'"
            )
            + " as checks from nodes n where n.document_id = d.id"
        )
        + " as nodes from documents d where d.id < 4 order by d.id",
    ),
    Case(
        "quoted_identifiers",
        lambda db: (
            db.table("Audit Log")
            .select('"Entry Id", note:"Note"')
            .eq("Note", 'system "note"')
        ),
        """select "Entry Id", "Note" as note from "Audit Log" where "Note" ="""
        """ 'system "note"'""",
    ),
    Case(
        "quoted_table_embeds_documents",
        lambda db: (
            db.table("Audit Log")
            .select('"Entry Id", documents(title)')
            .order("Entry Id")
        ),
        """select a."Entry Id", (select row_to_json(x) from (select d.title from"""
        """ documents d"""
        """ where d.id = a."Document") x) as documents from "Audit Log" a order"""
        """ by a."Entry Id\"""",
    ),
    Case(
        "ilike_case_insensitive",
        lambda db: (
            db.table("samples").select("id, name").ilike("name", "B*").order("id")
        ),
        "select id, name from samples where name ilike 'b%' order by id",
    ),
    Case(
        "like_literal_percent",
        lambda db: db.table("samples").select("id").like("name", "x%y").order("id"),
        "select id from samples where name like 'x%y' order by id",
    ),
    Case(
        "boolean_eq_false",
        lambda db: db.table("samples").select("id").eq("flag", False).order("id"),
        "select id from samples where flag = false order by id",
    ),
    Case(
        "is_false",
        lambda db: db.table("samples").select("id").is_("flag", False).order("id"),
        "select id from samples where flag is false order by id",
    ),
    Case(
        "not_is_true",
        lambda db: db.table("samples").select("id").not_.is_("flag", True).order("id"),
        "select id from samples where flag is not true order by id",
    ),
    Case(
        "negative_numbers",
        lambda db: db.table("samples").select("id, n").lt("n", -3).order("id"),
        "select id, n from samples where n < -3 order by id",
    ),
    Case(
        "numeric_float_value",
        lambda db: db.table("samples").select("id").gte("amount", 12.5).order("id"),
        "select id from samples where amount >= 12.5 order by id",
    ),
]


def test_there_are_at_least_sixty_chains():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_builder_chain_returns_the_rows_of_hand_written_sql(db, ref, case):
    builder = case.build(db)
    result = await builder.execute()
    want = await hand(ref, case.sql)
    if case.single:
        assert len(want) <= 1
        assert result.data == (want[0] if want else None)
    elif case.ordered:
        assert result.data == want
    else:
        assert canon(result.data) == canon(want)
    if case.count_sql is not None:
        assert result.count == await ref.fetchval(case.count_sql)
    else:
        assert result.count is None
    statement, _ = builder.sql()
    assert ";" not in statement
