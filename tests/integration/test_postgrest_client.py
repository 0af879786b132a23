"""postgrest-py, unmodified, pointed at a real gateway's ``/v1/rest``.

Why: "drop-in for PostgREST clients" is only true if their own client library
works with nothing changed but the URL: its headers (``Accept-Profile``,
``Prefer: count=exact``, the object media type), its error parsing
(``{code, message, details, hint}``) and what ``maybe_single()`` reads to
return ``None``, the ``columns=`` it adds to bulk inserts).  Each answer is
compared with the SQL PostgreSQL runs, or the rows a write left.
"""

from __future__ import annotations

from typing import Any

import pytest
from postgrest import APIError, AsyncPostgrestClient, CountMethod

from pgpulse import capture


async def _schema(conn: Any) -> None:
    await conn.execute("create table shipments (id int primary key, port text)")
    await conn.execute(
        "create table docs (id int primary key, "
        "shipment_id int references shipments, title text not null, pages int, "
        "tags text[] not null default '{}', meta jsonb not null default '{}')"
    )
    await conn.execute(
        "insert into shipments values (1, 'Rotterdam'), (2, 'Hamburg'), (3, 'Oslo')"
    )
    await conn.execute(
        """insert into docs values
        (1, 1, 'bill of lading', 3, '{urgent}', '{"lang": "en", "v": 1}'),
        (2, 1, 'invoice', 12, '{}', '{"lang": "de"}'),
        (3, 2, 'Packing list', null, '{urgent,fragile}', '{"lang": "en"}'),
        (4, 3, 'customs form', 40, '{fragile}', '{}'),
        (5, null, 'draft', 1, '{}', '{"lang": "en", "v": 2}')"""
    )
    await capture.watch(conn, "shipments")
    await capture.watch(conn, "docs")


@pytest.fixture
async def rest(conn, gateway_factory) -> Any:
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with AsyncPostgrestClient(gw.url + "/v1/rest") as client:
        yield client


def _rows(data: Any) -> list[dict[str, Any]]:
    """postgrest-py types ``data`` as any JSON; these answers are rows."""
    assert isinstance(data, list)
    return data


async def _ids(conn: Any, where: str) -> list[int]:
    rows = await conn.fetch(f"select id from docs where {where} order by id")
    return [r["id"] for r in rows]


async def test_filters_from_postgrest_py_select_what_postgresql_selects(conn, rest):
    docs = lambda: rest.from_("docs").select("id").order("id")  # noqa: E731
    cases = [
        (docs().eq("shipment_id", 1), "shipment_id = 1"),
        (docs().neq("shipment_id", 1), "shipment_id <> 1"),
        (docs().gt("pages", 3), "pages > 3"),
        (docs().lte("pages", 3), "pages <= 3"),
        (docs().in_("id", [1, 3, 5]), "id in (1, 3, 5)"),
        (docs().like("title", "%in%"), "title like '%in%'"),
        (docs().ilike("title", "p%"), "title ilike 'p%'"),
        (docs().is_("pages", "null"), "pages is null"),
        (docs().not_.is_("shipment_id", "null"), "shipment_id is not null"),
        (docs().contains("tags", ["urgent"]), "tags @> '{urgent}'"),
        (
            docs().contained_by("tags", ["urgent", "fragile"]),
            "tags <@ '{urgent,fragile}'",
        ),
        (docs().contains("meta", {"lang": "en"}), 'meta @> \'{"lang": "en"}\''),
        (docs().or_("pages.gt.20,title.eq.invoice"), "pages > 20 or title = 'invoice'"),
    ]
    for query, where in cases:
        response = await query.execute()
        assert [r["id"] for r in response.data] == await _ids(conn, where), where


async def test_embeds_order_ranges_and_counts(rest):
    embedded = await (
        rest.from_("docs").select("id,title,shipments(port)").eq("id", 2).execute()
    )
    assert embedded.data == [
        {"id": 2, "title": "invoice", "shipments": {"port": "Rotterdam"}}
    ]
    counted = await (
        rest.from_("docs")
        .select("id", count="exact")
        .order("id", desc=True)
        .range(0, 1)
        .execute()
    )
    assert [r["id"] for r in counted.data] == [5, 4]
    assert counted.count == 5
    limited = await rest.from_("docs").select("id").order("id").limit(2).execute()
    assert [r["id"] for r in limited.data] == [1, 2]


async def test_csv(rest):
    answer = (
        await rest.from_("docs")
        .select("id,title,tags")
        .order("id")
        .limit(3)
        .csv()
        .execute()
    )
    assert answer.data == (
        'id,title,tags\n1,"bill of lading",{urgent}\n2,invoice,{}\n'
        '3,"Packing list","{urgent,fragile}"'
    )


async def test_single_and_maybe_single(rest):
    one = await rest.from_("docs").select("id,title").eq("id", 3).single().execute()
    assert one.data == {"id": 3, "title": "Packing list"}
    found = await rest.from_("docs").select("id").eq("id", 4).maybe_single().execute()
    assert found is not None and found.data == {"id": 4}
    none = await rest.from_("docs").select("id").eq("id", 99).maybe_single().execute()
    assert none is None
    with pytest.raises(APIError) as missing:
        await rest.from_("docs").select("id").eq("id", 99).single().execute()
    assert missing.value.code == "PGRST116"
    assert missing.value.details == "The result contains 0 rows"


async def test_errors_arrive_as_postgrest_errors(rest):
    with pytest.raises(APIError) as table:
        await rest.from_("doc").select("*").execute()
    assert table.value.code == "PGRST205"
    assert "Did you mean 'public.docs'" in (table.value.message or "")
    with pytest.raises(APIError) as column:
        await rest.from_("docs").select("id,titel").execute()
    assert column.value.code == "42703"
    assert "Did you mean 'title'" in (column.value.message or "")
    with pytest.raises(APIError) as value:
        await rest.from_("docs").select("id").eq("pages", "many").execute()
    assert value.value.code == "22P02"


async def test_writes_through_postgrest_py(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--rest-writes")
    async with AsyncPostgrestClient(gw.url + "/v1/rest") as rest:
        made = await rest.from_("docs").insert({"id": 10, "title": "new"}).execute()
        assert made.data == [
            {
                "id": 10,
                "shipment_id": None,
                "title": "new",
                "pages": None,
                "tags": [],
                "meta": {},
            }
        ]
        # Bulk rows with different keys: postgrest-py names them in ?columns.
        bulk = await (
            rest.from_("docs")
            .insert(
                [{"id": 11, "title": "a"}, {"id": 12, "title": "b", "pages": 5}],
                default_to_null=False,
                count=CountMethod.exact,
            )
            .execute()
        )
        assert bulk.count == 2 and [r["pages"] for r in _rows(bulk.data)] == [None, 5]
        merged = await (
            rest.from_("docs")
            .upsert([{"id": 10, "title": "newer"}, {"id": 13, "title": "c"}])
            .execute()
        )
        assert [(r["id"], r["title"]) for r in _rows(merged.data)] == [
            (10, "newer"),
            (13, "c"),
        ]
        kept = await (
            rest.from_("docs")
            .upsert({"id": 10, "title": "ignored"}, ignore_duplicates=True)
            .execute()
        )
        assert kept.data == []
        changed = await (
            rest.from_("docs").update({"pages": 7}).in_("id", [11, 13]).execute()
        )
        assert sorted(r["id"] for r in _rows(changed.data)) == [11, 13]
        gone = await rest.from_("docs").delete().eq("id", 13).execute()
        assert [r["id"] for r in _rows(gone.data)] == [13]
        with pytest.raises(APIError) as duplicate:
            await rest.from_("docs").insert({"id": 10, "title": "dup"}).execute()
        assert duplicate.value.code == "23505"
        # max_affected(): handling=strict + max-affected, as PostgREST 13 reads it.
        with pytest.raises(APIError) as too_many:
            await (
                rest.from_("docs")
                .update({"pages": 8})
                .gte("id", 10)
                .max_affected(2)
                .execute()
            )
        assert too_many.value.code == "PGRST124"
        assert too_many.value.details == "The query affects 3 rows"
        fits = await (
            rest.from_("docs")
            .update({"pages": 7})
            .eq("id", 11)
            .max_affected(1)
            .execute()
        )
        assert [r["id"] for r in _rows(fits.data)] == [11]
    left = await conn.fetch("select id, title, pages from docs where id >= 10")
    assert sorted(tuple(r) for r in left) == [
        (10, "newer", None),
        (11, "a", 7),
        (12, "b", 5),
    ]
