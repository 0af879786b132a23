"""PostgREST's range, overlap and full-text operators, and ``is.not_null``,
over REST, from postgrest-py unmodified, and on the stream: each selects
exactly what the same SQL selects; misuse is a 400 naming the column."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from postgrest import AsyncPostgrestClient

from pgpulse import capture
from tests.gateway import SSEStream

CASES = [
    ("slot=sl.[20,30)", "slot << '[20,30)'"),
    ("slot=sr.[20,30)", "slot >> '[20,30)'"),
    ("slot=nxl.[20,30)", "slot &> '[20,30)'"),
    ("slot=nxr.[20,30)", "slot &< '[20,30)'"),
    ("slot=adj.[20,30)", "slot -|- '[20,30)'"),
    ("slot=ov.[25,35)", "slot && '[25,35)'"),
    ("tags=ov.{red,blue}", "tags && '{red,blue}'"),
    ("tags=ov.(red,green)", "tags && '{red,green}'"),
    ("doc=fts.cat", "doc @@ to_tsquery('cat')"),
    ("doc=fts(english).cats", "doc @@ to_tsquery('english', 'cats')"),
    ("doc=plfts.fat cats", "doc @@ plainto_tsquery('fat cats')"),
    ("doc=phfts(english).fat cat", "doc @@ phraseto_tsquery('english', 'fat cat')"),
    (
        "doc=wfts(english).cat -rat",
        "doc @@ websearch_to_tsquery('english', 'cat -rat')",
    ),
    (
        "body=fts(english).cats",
        "to_tsvector('english', body) @@ to_tsquery('english', 'cats')",
    ),
    ("body=not.plfts.rat", "not (to_tsvector(body) @@ plainto_tsquery('rat'))"),
    ("slot=is.not_null", "slot is not null"),
    ("body=like(any).{*cat*,*rat*}", "body like any('{%cat%,%rat%}')"),
    ("body=like(all).{*fat*,*cat*}", "body like all('{%fat%,%cat%}')"),
    ("body=not.ilike(any).{*CAT*}", "not (body ilike any('{%CAT%}'))"),
    ("id=eq(any).{1,3,5}", "id = any('{1,3,5}')"),
    ("id=gt(all).{2,4}", "id > all('{2,4}')"),
    ("body=match.^[A-Z]", "body ~ '^[A-Z]'"),
    ("body=imatch.CAT", "body ~* 'CAT'"),
    ("body=match(any).{^The,rat$}", "body ~ any('{^The,rat$}')"),
    (
        'or=(slot.sl."[20,30)",doc.fts.rat)',  # inside or=(), quote a range
        "slot << '[20,30)' or doc @@ to_tsquery('rat')",
    ),
]


async def _schema(conn: Any) -> None:
    await conn.execute(
        "create table notes (id int primary key, slot int4range, tags text[], "
        "body text, doc tsvector generated always as (to_tsvector('english', "
        "coalesce(body, ''))) stored)"
    )
    await conn.execute(
        """insert into notes (id, slot, tags, body) values
        (1, '[0,10)', '{red}', 'The fat cat sat'),
        (2, '[10,20)', '{blue,green}', 'Cats and a rat'),
        (3, '[20,30)', '{}', 'A rat ran'),
        (4, '[30,40)', '{red,green}', 'fat cats'),
        (5, null, '{blue}', null),
        (6, '[15,25)', '{green}', 'the cat, the rat')"""
    )
    await capture.watch(conn, "notes")


async def _ids(conn: Any, where: str) -> list[int]:
    return [
        r["id"]
        for r in await conn.fetch(f"select id from notes where {where} order by id")
    ]


async def test_each_operator_selects_what_postgresql_selects(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with httpx.AsyncClient(timeout=10) as client:
        for url, where in CASES:
            key, _, value = url.partition("=")
            response = await client.get(
                gw.url + "/v1/rest/notes",
                params={key: value, "select": "id", "order": "id"},
            )
            assert response.status_code == 200, (url, response.text)
            assert [r["id"] for r in response.json()] == await _ids(conn, where), url


async def test_postgrest_py_range_overlap_and_text_search(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with AsyncPostgrestClient(gw.url + "/v1/rest") as rest:

        def notes() -> Any:
            return rest.from_("notes").select("id").order("id")

        cases = [
            (notes().range_lt("slot", (20, 30)), "slot << '(20,30)'"),
            (notes().range_gt("slot", (20, 30)), "slot >> '(20,30)'"),
            (notes().range_gte("slot", (20, 30)), "slot &> '(20,30)'"),
            (notes().range_lte("slot", (20, 30)), "slot &< '(20,30)'"),
            (notes().range_adjacent("slot", (20, 30)), "slot -|- '(20,30)'"),
            (notes().overlaps("tags", ["red", "blue"]), "tags && '{red,blue}'"),
            (
                notes().like_any_of("body", "*cat*,*rat*"),
                "body like any('{%cat%,%rat%}')",
            ),
            (
                notes().like_all_of("body", "*fat*,*cat*"),
                "body like all('{%fat%,%cat%}')",
            ),
            (notes().ilike_any_of("body", "*CAT*"), "body ilike any('{%CAT%}')"),
            (notes().ilike_all_of("body", "*A*,*T*"), "body ilike all('{%A%,%T%}')"),
            (
                notes().text_search("doc", "cats", options={"config": "english"}),
                "doc @@ to_tsquery('english', 'cats')",
            ),
            (
                notes().text_search("doc", "fat cat", options={"type": "plain"}),
                "doc @@ plainto_tsquery('fat cat')",
            ),
            (
                notes().text_search(
                    "doc",
                    "cat -rat",
                    options={"type": "web_search", "config": "english"},
                ),
                "doc @@ websearch_to_tsquery('english', 'cat -rat')",
            ),
        ]
        for query, where in cases:
            response = await query.execute()
            assert [r["id"] for r in response.data] == await _ids(conn, where), where


@pytest.mark.parametrize(
    "sub", ["notes:doc=fts(english).rats", "notes:id=eq(any).{11,12}"]
)
async def test_the_stream_decides_these_operators_as_postgresql(
    conn, gateway_factory, sub
):
    await _schema(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, [sub]) as stream:
        assert (await stream.next_event()).event == "ready"
        await conn.execute("insert into notes (id, body) values (10, 'no match here')")
        await conn.execute("insert into notes (id, body) values (11, 'two rats')")
        event = await stream.next_event()
        assert event.event == "change" and event.data["pk"] == {"id": 11}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"id": "fts.cat"},
            "needs a tsvector or text column; column 'id' has type integer",
        ),
        ({"body": "sl.[1,2)"}, "needs a range column; column 'body' has type text"),
        ({"body": "ov.{a}"}, "needs an array or range column"),
        ({"body": "eq(english).x"}, "only full-text search operators"),
        ({"slot": "is.maybe"}, "'is' takes null, not_null, true, false or unknown"),
        ({"body": "like(any).*cat*"}, "takes a list like {a,b}"),
        ({"id": "like(any).{1}"}, "needs a text column; column 'id' has type integer"),
        ({"body": "in(any).{a}"}, "take (any) or (all)"),
    ],
)
async def test_misuse_is_a_400_naming_the_column(
    conn, gateway_factory, params, message
):
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(gw.url + "/v1/rest/notes", params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


async def test_an_unknown_text_search_configuration_is_postgresqls_error(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            gw.url + "/v1/rest/notes", params={"doc": "fts(klingon).cat"}
        )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "42704"
    assert "klingon" in body["message"]


async def test_the_builder_has_the_same_operators(conn, database):
    from pgpulse.query import connect

    await _schema(conn)
    async with await connect(database) as db:

        def notes() -> Any:
            return db.table("notes").select("id").order("id")

        cases = [
            (
                notes().like_any_of("body", ["*cat*", "*rat*"]),
                "body like any('{%cat%,%rat%}')",
            ),
            (
                notes().not_.ilike_all_of("body", "*A*,*T*"),
                "not (body ilike all('{%A%,%T%}'))",
            ),
            (notes().range_lt("slot", "[20,30)"), "slot << '[20,30)'"),
            (notes().adj("slot", "[20,30)"), "slot -|- '[20,30)'"),
            (notes().ov("tags", ["red", "green"]), "tags && '{red,green}'"),
            (
                notes().text_search("body", "cats", config="english"),
                "to_tsvector('english', body) @@ to_tsquery('english', 'cats')",
            ),
            (
                notes().text_search("doc", "fat cat", type="phrase"),
                "doc @@ phraseto_tsquery('fat cat')",
            ),
        ]
        for query, where in cases:
            result = await query.execute()
            assert [r["id"] for r in result.data] == await _ids(conn, where), where
