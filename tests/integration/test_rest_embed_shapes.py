"""Embeds shaped as PostgREST shapes them: one-to-one through a UNIQUE foreign
key (an object, not a list), spread embeds (``...countries(name)``: the
embed's columns join the parent row), and parents ordered by a to-one embed's
column (``order=countries(name).desc``).  Each compared with SQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgpulse import capture


async def _schema(conn: Any) -> None:
    await conn.execute("create table countries (id int primary key, name text)")
    await conn.execute(
        "create table capitals (id int primary key, "
        "country_id int unique references countries, name text)"
    )
    await conn.execute(
        "create table cities (id int primary key, "
        "country_id int references countries, name text, pop int)"
    )
    await conn.execute(
        "insert into countries values (1, 'Norway'), (2, 'Chile'), (3, 'Mali')"
    )
    await conn.execute(
        "insert into capitals values (10, 1, 'Oslo'), (20, 2, 'Santiago')"
    )
    await conn.execute(
        """insert into cities values (1, 1, 'Bergen', 290), (2, 2, 'Valparaiso', 300),
        (3, 3, 'Timbuktu', 33), (4, 1, 'Tromso', 77), (5, null, 'Nowhere', 0),
        (6, 2, 'Arica', 240)"""
    )
    for table in ("countries", "capitals", "cities"):
        await capture.watch(conn, table)


@pytest.fixture
async def gw(conn, gateway_factory) -> Any:
    await _schema(conn)
    return gateway_factory("--rest")


def _get(gw: Any, path: str) -> tuple[int, Any]:
    answer = httpx.get(gw.url + "/v1/rest/" + path, timeout=10)
    return answer.status_code, answer.json()


async def test_one_to_one_through_a_unique_key_is_an_object(gw):
    assert _get(gw, "countries?select=name,capitals(name)&order=id") == (
        200,
        [
            {"name": "Norway", "capitals": {"name": "Oslo"}},
            {"name": "Chile", "capitals": {"name": "Santiago"}},
            {"name": "Mali", "capitals": None},
        ],
    )
    # The other direction was always one (many-to-one).
    assert _get(gw, "capitals?select=name,countries(name)&order=id") == (
        200,
        [
            {"name": "Oslo", "countries": {"name": "Norway"}},
            {"name": "Santiago", "countries": {"name": "Chile"}},
        ],
    )
    # Not unique: a list.
    _status, rows = _get(gw, "countries?select=name,cities(name)&id=eq.3")
    assert rows == [{"name": "Mali", "cities": [{"name": "Timbuktu"}]}]


async def test_spread_embeds(gw):
    assert _get(
        gw, "capitals?select=name,...countries(country:name,country_id:id)&order=id"
    ) == (
        200,
        [
            {"name": "Oslo", "country": "Norway", "country_id": 1},
            {"name": "Santiago", "country": "Chile", "country_id": 2},
        ],
    )
    # A missing parent gives NULLs; !inner drops the row instead.
    left = _get(gw, "cities?select=id,...countries(country:name)&id=in.(1,5)&order=id")
    assert left == (200, [{"id": 1, "country": "Norway"}, {"id": 5, "country": None}])
    inner = _get(
        gw, "cities?select=id,...countries!inner(country:name)&id=in.(1,5)&order=id"
    )
    assert inner == (200, [{"id": 1, "country": "Norway"}])
    # Nested: a spread inside a spread, and an embed inside a spread.
    nested = _get(
        gw,
        "cities?select=id,...countries(country:name,...capitals(capital:name))&id=eq.4",
    )
    assert nested == (200, [{"id": 4, "country": "Norway", "capital": "Oslo"}])
    with_list = _get(gw, "capitals?select=id,...countries(cities(name))&id=eq.20")
    assert with_list[0] == 200
    assert sorted(c["name"] for c in with_list[1][0]["cities"]) == [
        "Arica",
        "Valparaiso",
    ]
    for path, says in [
        ("countries?select=name,...cities(name)", "spreads a list"),
        ("capitals?select=name,...countries(name)", "appears twice"),
        ("capitals?select=name,x:...countries(name)", "'...'"),
        ("capitals?select=name,...name", "'...'"),
    ]:
        status, body = _get(gw, path)
        assert status in (300, 400) and says in body["message"], (path, body)


async def test_parents_ordered_by_an_embedded_column(conn, gw):
    for order, sql in [
        ("countries(name).desc,id", "k.name desc, c.id"),
        (
            "countries(name).asc.nullsfirst,pop.desc",
            "k.name asc nulls first, c.pop desc",
        ),
        ("countries(id).desc.nullslast,name", "k.id desc nulls last, c.name"),
    ]:
        rows = await conn.fetch(
            "select c.id from cities c left join countries k on k.id = c.country_id "
            f"order by {sql}"
        )
        status, body = _get(gw, f"cities?select=id,countries(name)&order={order}")
        assert status == 200 and [r["id"] for r in body] == [r["id"] for r in rows], (
            order
        )
    # Without selecting the embed's own columns it still orders.
    status, body = _get(gw, "capitals?select=id,countries()&order=countries(name)")
    assert (status, [r["id"] for r in body]) == (200, [20, 10])
    for path, says in [
        ("countries?select=id,cities(name)&order=cities(name)", "is a list"),
        ("cities?select=id&order=countries(name)", "not embedded"),
        ("cities?select=id,countries(name)&order=countries(nope)", "'nope'"),
    ]:
        status, body = _get(gw, path)
        assert status == 400 and says in body["message"], (path, body)


async def test_csv_is_postgresqls_own_text(conn, gateway_factory):
    await _schema(conn)
    await conn.execute(
        "create table samples (id int primary key, label text, at timestamptz, "
        "tags text[], ok boolean, meta jsonb)"
    )
    await conn.execute(
        """insert into samples values
        (1, 'plain', '2026-01-02 03:04:05+00', '{a,b}', true, '{"k": 1}'),
        (2, 'with, comma "and" quotes', null, '{}', false, null),
        (3, null, null, null, null, '[]')"""
    )
    await capture.watch(conn, "samples")
    gw = gateway_factory("--rest")  # after the table exists: no catalog race
    answer = httpx.get(
        gw.url + "/v1/rest/samples?order=id&select=id,label,at,tags,ok,meta",
        headers={"Accept": "text/csv", "Prefer": "count=exact"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-range"] == "0-2/3"
    # Each line is PostgreSQL's own record output for the row.
    expected = await conn.fetch(
        "select substring(r::text, 2, length(r::text) - 2) as line from "
        "(select id, label, at, tags, ok, meta from samples order by id) r"
    )
    lines = answer.text.split("\n")
    assert lines[0] == "id,label,at,tags,ok,meta"
    assert lines[1:] == [r["line"] for r in expected]
    assert lines[2].startswith('2,"with, comma ""and"" quotes",')
    embedded = httpx.get(
        gw.url + "/v1/rest/cities?select=id,...countries(country:name)&id=eq.1",
        headers={"Accept": "text/csv"},
    )
    assert embedded.text == "id,country\n1,Norway"
    empty = httpx.get(
        gw.url + "/v1/rest/cities?id=eq.99&select=id,name",
        headers={"Accept": "text/csv"},
    )
    assert empty.text == "id,name"


async def test_embeds_through_views(conn, gateway_factory):
    await _schema(conn)
    # Views rename and reorder columns, join, nest, and hide some: keys are
    # followed through the columns that show a table's column as it is.
    await conn.execute(
        "create view big_cities as select name as city, id as city_id, "
        "country_id as nation from cities where pop > 100"
    )
    await conn.execute(
        "create view nations as select k.id, k.name, (select count(*) from cities c "
        "where c.country_id = k.id) as n_cities from countries k"
    )
    await conn.execute("create view nations_again as select * from nations")
    gw = gateway_factory(
        "--rest", *[a for v in ("big_cities", "nations", "nations_again")
                    for a in ("--rest-table", v)]
    )  # fmt: skip
    # View -> table (a key of cities, through big_cities.nation).
    assert _get(gw, "big_cities?select=city,countries(name)&order=city") == (
        200,
        [
            {"city": "Arica", "countries": {"name": "Chile"}},
            {"city": "Bergen", "countries": {"name": "Norway"}},
            {"city": "Valparaiso", "countries": {"name": "Chile"}},
        ],
    )
    # Table -> view (a key to countries, onto nations.id), and view -> view.
    status, body = _get(gw, "cities?select=name,nations(name,n_cities)&id=eq.1")
    assert body == [{"name": "Bergen", "nations": {"name": "Norway", "n_cities": 2}}]
    status, body = _get(gw, "big_cities?select=city,nations_again(name)&city=eq.Arica")
    assert body == [{"city": "Arica", "nations_again": {"name": "Chile"}}]
    # The other direction: a view's rows from a table, as a list.
    status, body = _get(gw, "nations?select=name,big_cities(city)&id=eq.2")
    assert status == 200
    assert sorted(c["city"] for c in body[0]["big_cities"]) == ["Arica", "Valparaiso"]
    # A view column computed from a table's is no key.
    status, body = _get(gw, "nations?select=name,capitals(name)&id=eq.1")
    assert body == [{"name": "Norway", "capitals": {"name": "Oslo"}}]
    no_key = _get(gw, "big_cities?select=city,capitals(name)")
    assert no_key[0] == 400 and "no foreign key" in no_key[1]["message"]


async def test_computed_columns_and_relationships(conn, gateway_factory):
    await _schema(conn)
    await conn.execute(
        "create function label(cities) returns text language sql stable as "
        "$$ select $1.name || ' (' || $1.pop || ')' $$"
    )
    await conn.execute(
        "create function big_neighbours(cities) returns setof cities language sql "
        "stable as $$ select * from cities c where c.country_id = $1.country_id "
        "and c.id <> $1.id and c.pop > 100 $$"
    )
    await conn.execute(
        "create function home(cities) returns countries language sql stable as "
        "$$ select * from countries where id = $1.country_id $$"
    )
    await conn.execute(
        "create function secret_label(cities) returns text language sql as "
        "$$ select 'not listed' $$"
    )
    gw = gateway_factory(
        "--rest",
        *("--rest-function", "label"),
        *("--rest-function", "big_neighbours"),
        *("--rest-function", "home"),
    )
    # A computed column: selected, filtered, ordered; never part of '*'.
    status, body = _get(gw, "cities?select=id,label&label=like.B*&order=label")
    assert body == [{"id": 1, "label": "Bergen (290)"}]
    status, body = _get(gw, "cities?select=*&id=eq.3")
    assert "label" not in body[0]
    expected = await conn.fetch(
        "select c.id from cities c order by label(c) desc limit 3"
    )
    status, body = _get(gw, "cities?select=id&order=label.desc&limit=3")
    assert [r["id"] for r in body] == [r["id"] for r in expected]
    # Computed relationships: a list (setof) and an object (one row).
    status, body = _get(
        gw, "cities?select=name,big_neighbours(name),home(name)&id=in.(2,4)&order=id"
    )
    assert body == [
        {"name": "Valparaiso", "big_neighbours": [{"name": "Arica"}],
         "home": {"name": "Chile"}},
        {"name": "Tromso", "big_neighbours": [{"name": "Bergen"}],
         "home": {"name": "Norway"}},
    ]  # fmt: skip
    status, body = _get(gw, "cities?select=name,...home(country:name)&id=eq.3")
    assert body == [{"name": "Timbuktu", "country": "Mali"}]
    # Not listed in rest_functions: unknown, like a missing column or table.
    for path, says in [
        ("cities?select=id,secret_label", "'secret_label' does not exist"),
        ("cities?secret_label=eq.x", "'secret_label' does not exist"),
        ("cities?select=id,pg_size_pretty(*)", "pg_size_pretty"),
    ]:
        status, body = _get(gw, path)
        assert status == 400 and says in body["message"], (path, body)
