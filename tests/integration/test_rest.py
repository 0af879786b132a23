"""GET /v1/rest/{table}: PostgREST URL syntax over HTTP, on a real uvicorn server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from pgpulse.auth.access import OPEN, Access
from pgpulse.auth.config import AuthSettings
from pgpulse.catalog import Catalog
from pgpulse.server.rest import rest_read
from tests.integration.query_support import hand, seeded_database, table_counts


@dataclass
class Settings:
    rest_enabled: bool = True
    rest_writes: bool = False
    rest_schemas: list[str] = field(default_factory=lambda: ["public"])
    rest_tables: list[str] = field(default_factory=list)
    rest_functions: list[str] = field(default_factory=list)


@dataclass
class GatewayStub:
    """What the endpoint reads from the real gateway: its pool and catalog,
    auth off, every seeded table opened for REST (exposure has its own test,
    test_rest_exposure.py, on a real gateway)."""

    pool: asyncpg.Pool
    catalog: Catalog
    settings: Settings = field(default_factory=Settings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    authenticate: None = None
    watched: dict[str, Any] = field(default_factory=dict)

    async def identify(self, request: Any) -> Access:
        return OPEN

    async def refresh_catalog(self, min_age: float = 0.0) -> None:
        async with self.pool.acquire() as conn:
            await self.catalog.refresh(conn)


@pytest.fixture(scope="module")
async def dsn(pg_server, template_db) -> AsyncIterator[str]:
    async with seeded_database(pg_server, template_db) as value:
        yield value


@pytest.fixture(scope="module")
async def gateway(dsn) -> AsyncIterator[GatewayStub]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            catalog = await Catalog.load(conn)
        stub = GatewayStub(pool, catalog)
        stub.settings.rest_tables = list(catalog.tables)
        yield stub
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def client(gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/v1/rest/{table}", rest_read, methods=["GET"])])
    app.state.gateway = gateway
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}/v1/rest/"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def ref(dsn) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


async def get(client: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return await client.get(url, headers=named)


async def test_select_filter_order_and_limit_in_postgrest_syntax(client, ref):
    response = await get(
        client,
        "documents?select=id,title&status=eq.final&pages=gt.5&order=pages.desc.nullslast,id"
        "&limit=3",
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == await hand(
        ref,
        "select id, title from documents where status = 'final' and pages > 5 "
        "order by pages desc nulls last, id limit 3",
    )
    assert response.headers["content-range"] == "0-2/*"


async def test_embedded_resources_with_their_own_filters_order_and_limit(client, ref):
    response = await get(
        client,
        "documents?select=id,shipment:shipments(port),nodes!inner(id,status)"
        "&nodes.status=eq.bad&nodes.order=id.desc&nodes.limit=1&id=lt.6&order=id",
    )
    assert response.status_code == 200
    assert response.json() == await hand(
        ref,
        "select d.id, (select row_to_json(x) from (select s.port from shipments s "
        "where s.id = d.shipment_id) x) as shipment, (select json_agg(x) from ("
        "select n.id, n.status from nodes n where n.document_id = d.id and "
        "n.status = 'bad' order by n.id desc limit 1) x) as nodes from documents d "
        "where d.id < 6 and exists (select 1 from nodes n where n.document_id = d.id "
        "and n.status = 'bad') order by d.id",
    )


async def test_or_and_not_and_in_filters(client, ref):
    response = await get(
        client,
        "documents?select=id&or=(status.eq.final,and(pages.lt.10,author_id.eq.2))"
        "&id=not.in.(2,5)&reviewer_id=not.is.null&order=id",
    )
    assert response.json() == await hand(
        ref,
        "select id from documents where (status = 'final' or (pages < 10 and "
        "author_id = 2)) and id not in (2, 5) and reviewer_id is not null order by id",
    )


async def test_embedded_or_filter(client, ref):
    response = await get(
        client,
        "documents?select=id,nodes(id)&id=eq.3&nodes.or=(status.eq.bad,status.is.null)"
        "&nodes.order=id",
    )
    assert response.json() == await hand(
        ref,
        "select d.id, (select json_agg(x) from (select n.id from nodes n where "
        "n.document_id = d.id and (n.status = 'bad' or n.status is null) order by n.id"
        ") x) as nodes from documents d where d.id = 3",
    )


async def test_range_header_and_exact_count(client):
    response = await get(
        client,
        "documents?select=id&order=id",
        range="5-9",
        **{"range-unit": "items", "prefer": "count=exact"},
    )
    assert response.status_code == 206
    assert response.headers["content-range"] == "5-9/24"
    assert [r["id"] for r in response.json()] == [6, 7, 8, 9, 10]


async def test_count_with_everything_returned_is_200(client):
    response = await get(client, "labels?select=id", prefer="count=exact")
    assert response.status_code == 200
    assert response.headers["content-range"] == "0-4/5"


async def test_empty_result_content_range(client):
    response = await get(client, "labels?id=gt.100", prefer="count=exact")
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["content-range"] == "*/0"


async def test_offset_param_shifts_content_range(client):
    response = await get(client, "labels?select=id&order=id&offset=2&limit=2")
    assert response.json() == [{"id": 3}, {"id": 4}]
    assert response.headers["content-range"] == "2-3/*"


async def test_head_returns_headers_only(client):
    response = await client.head(
        "documents?status=eq.final", headers={"prefer": "count=exact"}
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-range"] == "*/8"


async def test_single_object_accept_header(client):
    one = await get(client, "users?id=eq.3", accept="application/vnd.pgrst.object+json")
    assert one.status_code == 200
    assert one.json() == {"id": 3, "name": "Chen", "email": "chen@example.com"}
    many = await get(client, "users", accept="application/vnd.pgrst.object+json")
    assert many.status_code == 406
    body = many.json()
    assert body["code"] == "PGRST116"
    assert body["message"] == "Cannot coerce the result to a single JSON object"
    assert body["details"] == "The result contains more than 1 row"
    assert body["hint"].startswith("expected exactly one row, got more than one")
    none = await get(
        client, "users?id=eq.999", accept="application/vnd.pgrst.object+json"
    )
    assert none.status_code == 406
    # What postgrest-py's maybe_single() looks for to return None.
    assert none.json()["details"] == "The result contains 0 rows"


async def test_unknown_table_is_404_with_suggestions(client):
    response = await get(client, "document")
    assert response.status_code == 404
    assert response.json() == {
        "code": "PGRST205",
        "message": "table 'document' does not exist. Did you mean 'documents', "
        "'document_labels'?",
        "details": None,
        "hint": None,
    }


async def test_pgpulse_schema_is_never_exposed(client):
    response = await get(client, "pgpulse.changes")
    assert response.status_code == 404
    assert response.json()["message"].startswith(
        "table 'pgpulse.changes' does not exist"
    )


BAD_REQUESTS = [
    (
        "documents?titel=eq.x",
        "42703",
        "column 'titel' does not exist in table 'documents'. Did you mean 'title'?",
    ),
    (
        "documents?select=id,nodes(id",
        "PGRST100",
        "missing ')' after the columns of 'nodes'",
    ),
    (
        "documents?id=equals.1",
        "PGRST100",
        "unknown operator 'equals' in filter 'id=equals.1'",
    ),
    ("documents?id=1", "PGRST100", "filter 'id=1' has no operator"),
    (
        "documents?limit=ten",
        "PGRST100",
        "limit must be a non-negative integer, got 'ten'",
    ),
    (
        "documents?order=id.sideways",
        "PGRST100",
        "unknown order modifier 'sideways' in order='id.sideways'",
    ),
    (
        "documents?select=id,shipments(port)&shipments.nope=eq.1",
        "42703",
        "column 'nope' does not exist",
    ),
    (
        "documents?nodes.limit=1",
        "PGRST100",
        "'nodes' is not an embedded table in select('*')",
    ),
    ("documents?id=eq.abc", "22P02", 'invalid input syntax for type integer: "abc"'),
    (
        "documents?pages=like.1*",
        "PGRST100",
        "'like' needs a text column; column 'pages' has type",
    ),
]


@pytest.mark.parametrize(
    ("url", "code", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_requests_are_400_with_a_message_naming_the_problem(
    client, url, code, message
):
    """PostgREST's status and body: ``{code, message, details, hint}``, the
    code PostgREST gives the same mistake (or PostgreSQL's SQLSTATE)."""
    response = await get(client, url)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "details", "hint"}
    assert body["code"] == code, body
    assert body["message"].startswith(message)


async def test_ambiguous_and_missing_embeds_answer_as_postgrest(client):
    ambiguous = await get(client, "documents?select=id,users(name)")
    assert ambiguous.status_code == 300
    assert ambiguous.json()["code"] == "PGRST201"
    assert (
        "'users' can be embedded from 'documents' in 2 ways"
        in (ambiguous.json()["message"])
    )
    missing = await get(client, "documents?select=id,labels_nope(name)")
    assert missing.status_code == 400
    assert missing.json()["code"] == "PGRST200", missing.json()


async def test_database_errors_keep_their_code(client):
    response = await get(client, "documents?id=eq.abc")
    body = response.json()
    assert body["code"] == "22P02"
    assert set(body) == {"code", "message", "details", "hint"}


async def test_counts_ranges_and_profiles_answer_as_postgrest(client):
    for prefer in ("count=exact", "count=planned", "count=estimated"):
        counted = await get(client, "documents?limit=2", prefer=prefer)
        assert counted.status_code == 206, prefer
        total = counted.headers["content-range"].split("/")[1]
        assert total.isdigit() and int(total) > 2, prefer
    unknown = await get(client, "documents", prefer="count=guessed")
    assert unknown.status_code == 400 and unknown.json()["code"] == "PGRST100"
    both = await get(client, "documents?limit=2", range="0-1")
    assert both.status_code == 400
    assert "either the Range header or limit/offset" in both.json()["message"]
    backwards = await get(client, "documents", range="5-2")
    assert backwards.status_code == 416 and backwards.json()["code"] == "PGRST103"
    garbage = await get(client, "documents", range="bytes=0-1")
    assert garbage.status_code == 400
    profiled = await get(client, "documents?select=id&limit=1", accept_profile="public")
    assert profiled.status_code == 200 and len(profiled.json()) == 1
    hidden = await get(client, "changes", accept_profile="pgpulse")
    assert hidden.status_code == 406
    assert hidden.json()["code"] == "PGRST106"
    assert hidden.json()["message"] == (
        "The schema must be one of the following: public"
    )


async def test_disabled_endpoint_says_how_to_enable_it(client, gateway):
    gateway.settings.rest_enabled = False
    try:
        response = await get(client, "documents")
    finally:
        gateway.settings.rest_enabled = True
    assert response.status_code == 403
    message = response.json()["message"]
    assert "--rest" in message
    assert "PGPULSE_REST=1" in message


INJECTIONS = [
    "documents?title=eq.';drop table documents;--",
    "documents?select=id,(select 1)",
    "documents?select=id;drop table users",
    "documents?order=id;drop table documents",
    "documents?or=(id.eq.1);drop table documents;--)",
    "documents;drop table users",
    'documents?"id";drop table users=eq.1',
    "documents?id=in.(1);drop table users;--)",
    "documents?select=*,users!author_id;drop(name)",
]


@pytest.mark.parametrize("url", INJECTIONS)
async def test_injection_through_the_url_never_executes(client, ref, url):
    before = await table_counts(ref)
    response = await get(client, url)
    assert response.status_code in (200, 400, 404)
    assert await table_counts(ref) == before


async def test_response_is_the_builders_json(client, gateway, ref):
    response = await get(client, "shipments?select=id,weight_kg,eta,hazardous&id=eq.1")
    want: list[dict[str, Any]] = await hand(
        ref, "select id, weight_kg, eta, hazardous from shipments where id = 1"
    )
    assert response.json() == want


async def test_jsonb_containment_with_an_object_as_postgrest_clients_send_it(
    client, ref
):
    # postgrest-py's contains("meta", {"lang": "de"}) sends cs.{"lang":"de"}: a
    # JSON object for a jsonb column, never an array literal.
    for value, sql in [
        ('{"lang":"de"}', """meta @> '{"lang":"de"}'"""),
        ('{"lang":"de","priority":1}', """meta @> '{"lang":"de","priority":1}'"""),
        # json.dumps spacing, as postgrest-py sends it
        ('{"lang": "de", "priority": 1}', """meta @> '{"lang":"de","priority":1}'"""),
        ("{}", "meta @> '{}'"),
    ]:
        response = await get(client, f"documents?select=id&meta=cs.{value}&order=id")
        assert response.status_code == 200, response.text
        expected = await hand(ref, f"select id from documents where {sql} order by id")
        assert response.json() == expected, value
        assert expected, "the seed has rows of each"
    contained = await get(
        client, 'documents?select=id&meta=cd.{"lang":"de","priority":1,"x":2}&order=id'
    )
    assert contained.status_code == 200, contained.text
    assert contained.json() == await hand(
        ref,
        """select id from documents where meta <@ '{"lang":"de","priority":1,"x":2}'"""
        " order by id",
    )


async def test_embedding_by_foreign_key_column_or_constraint_name(client, ref):
    """PostgREST's other ways to name an embed: the parent's foreign key
    column (``author_id(name)``: it also picks one of two keys to users), or
    a foreign key constraint's name, in either direction; the key in the
    rows is the name as written."""
    by_column = await get(
        client, "documents?select=id,author_id(name)&id=lte.3&order=id"
    )
    assert by_column.status_code == 200, by_column.text
    want = await hand(
        ref,
        "select d.id, json_build_object('name', u.name) as author_id from documents d "
        "join users u on u.id = d.author_id where d.id <= 3 order by d.id",
    )
    assert by_column.json() == want
    by_name = await get(
        client, "documents?select=id,documents_reviewer_id_fkey(name)&id=eq.2"
    )
    assert by_name.status_code == 200, by_name.text
    reviewer = await ref.fetchval(
        "select u.name from documents d left join users u on u.id = d.reviewer_id "
        "where d.id = 2"
    )
    (row,) = by_name.json()
    embedded = row["documents_reviewer_id_fkey"]
    assert (embedded or {}).get("name") == reviewer
    incoming = await get(
        client, "shipments?select=id,documents_shipment_id_fkey(id)&id=eq.1"
    )
    assert incoming.status_code == 200, incoming.text
    ids = [r["id"] for r in incoming.json()[0]["documents_shipment_id_fkey"]]
    expected = await ref.fetch("select id from documents where shipment_id = 1")
    assert sorted(ids) == sorted(r["id"] for r in expected)


async def test_filtering_parents_by_the_presence_of_an_embed(client, ref):
    """``reviewer=not.is.null`` keeps parents that have the embedded row,
    ``is.null`` those that have none (PostgREST), counted alike."""
    for filt, where in [
        ("not.is.null", "d.reviewer_id is not null"),
        ("is.null", "d.reviewer_id is null"),
    ]:
        response = await get(
            client,
            f"documents?select=id,reviewer:users!reviewer_id(name)&reviewer={filt}"
            "&order=id",
            prefer="count=exact",
        )
        assert response.status_code in (200, 206), response.text
        want = [
            r["id"]
            for r in await ref.fetch(
                f"select d.id from documents d where {where} order by d.id"
            )
        ]
        assert [r["id"] for r in response.json()] == want, filt
        assert response.headers["content-range"].endswith(f"/{len(want)}")
    nodes = await get(client, "documents?select=id,nodes()&nodes=is.null&order=id")
    assert nodes.status_code == 200, nodes.text
    want = [
        r["id"]
        for r in await ref.fetch(
            "select d.id from documents d where not exists "
            "(select 1 from nodes n where n.document_id = d.id) order by d.id"
        )
    ]
    assert [r["id"] for r in nodes.json()] == want
