"""JSON paths (``data->a->>b``) in select, filters and order, as PostgREST.

Expected values are PostgREST's own (its JsonOperatorSpec cases, on the same
data), and every filter is compared with the SQL PostgreSQL runs.  Keys and
indexes are bound values; only json/jsonb columns take a path.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgpulse import capture


async def _schema(conn: Any) -> None:
    await conn.execute("create table json_arr (id int primary key, data jsonb)")
    await conn.execute(
        """insert into json_arr values
        (1, '[1, 2, 3]'), (2, '[4, 5, 6]'),
        (3, '[[9, 8, 7], [11, 12, 13]]'), (4, '[[[5, 6], 7]]'),
        (5, '[{"a": "A"}, {"b": "B"}]'), (6, '[{"a": [1,2,3]}, {"b": [4,5]}]'),
        (7, '{"c": [1,2,3]}'), (8, '{"c": [{"d": [4,5,6,7,8]}]}'),
        (9, '[{"0xy1": [1, {"23-xy-45": [1, {"xy-6": [3]}]}]}]')"""
    )
    await conn.execute(
        "create table json_table (id int primary key, data json, label text)"
    )
    await conn.execute(
        """insert into json_table values (1, '{"id": 1, "foo": {"bar": "baz"}}', 'a'),
        (2, '{"id": 3}', 'b'), (3, '{"id": 0}', 'c')"""
    )
    await capture.watch(conn, "json_arr")
    await capture.watch(conn, "json_table")


@pytest.fixture
async def gw(conn, gateway_factory) -> Any:
    await _schema(conn)
    return gateway_factory("--rest-writes")


def _get(gw: Any, path: str) -> Any:
    answer = httpx.get(gw.url + "/v1/rest/" + path, timeout=10)
    return answer.status_code, answer.json()


async def test_select_paths_answer_like_postgrest(gw):
    cases = [
        ("json_arr?select=data->>0::int&id=in.(1,2)&order=id",
         [{"data": 1}, {"data": 4}]),
        ("json_arr?select=idx0:data->>0::int,idx1:data->>1::int&id=in.(1,2)&order=id",
         [{"idx0": 1, "idx1": 2}, {"idx0": 4, "idx1": 5}]),
        ("json_arr?select=data->0->>1::int&id=in.(3,4)&order=id",
         [{"data": 8}, {"data": 7}]),
        ("json_arr?select=data->0->0->>1::int&id=in.(3,4)&order=id",
         [{"data": None}, {"data": 6}]),
        ("json_arr?select=data->0->>a&id=in.(5,6)&order=id",
         [{"a": "A"}, {"a": "[1, 2, 3]"}]),
        ("json_arr?select=data->0->a->>2&id=in.(5,6)&order=id",
         [{"a": None}, {"a": "3"}]),
        ("json_arr?select=data->c->>0::json&id=in.(7,8)&order=id",
         [{"c": 1}, {"c": {"d": [4, 5, 6, 7, 8]}}]),
        ("json_arr?select=data->c&id=in.(7,8)&order=id",
         [{"c": [1, 2, 3]}, {"c": [{"d": [4, 5, 6, 7, 8]}]}]),
        ("json_arr?select=data->0->0xy1->1->23-xy-45->1->xy-6->>0::int&id=eq.9",
         [{"xy-6": 3}]),
        ("json_arr?select=data->>-1::int&id=in.(1,2)&order=id",
         [{"data": 3}, {"data": 6}]),
        ("json_table?select=data->foo->>bar&id=eq.1", [{"bar": "baz"}]),
        ("json_table?select=myBar:data->foo->>bar&id=eq.1", [{"myBar": "baz"}]),
    ]  # fmt: skip
    for path, expected in cases:
        assert _get(gw, path) == (200, expected), path


async def test_filters_and_order_on_paths_match_postgresql(conn, gw):
    cases = [
        ("json_table?data->foo->>bar=eq.baz", "data->'foo'->>'bar' = 'baz'"),
        ("json_table?data->foo->>bar=not.eq.baz",
         "not (data->'foo'->>'bar' = 'baz')"),
        ("json_table?data->>id=eq.1", "data->>'id' = '1'"),
        ("json_table?or=(data->foo->>bar.eq.baz,data->>id.eq.0)",
         "data->'foo'->>'bar' = 'baz' or data->>'id' = '0'"),
        ("json_arr?data->>0=eq.1", "data->>0 = '1'"),
        ("json_arr?data->1->>2=eq.13", "data->1->>2 = '13'"),
        ("json_arr?data->-1->>b=eq.B", "data->-1->>'b' = 'B'"),
        ("json_arr?data->c=eq.[1,2,3]", """data->'c' = '[1,2,3]'::jsonb"""),
        ("json_arr?data->0=eq.{\"a\":\"A\"}", """data->0 = '{"a":"A"}'::jsonb"""),
        ("json_arr?data->>0=like.*1*", "data->>0 like '%1%'"),
        ("json_arr?data->>0=in.(1,4)", "data->>0 in ('1', '4')"),
    ]  # fmt: skip
    for path, where in cases:
        table = path.split("?")[0]
        rows = await conn.fetch(f"select id from {table} where {where} order by id")
        expected = [{"id": r["id"]} for r in rows]
        status, body = _get(gw, path + "&select=id&order=id")
        assert status == 200 and body == expected, (path, body)
        assert expected or "not" in path or "like" in path, path
    ordered = _get(gw, "json_table?select=id&order=data->>id.asc")
    assert ordered == (200, [{"id": 3}, {"id": 1}, {"id": 2}])
    nulls = _get(gw, "json_table?select=id&order=data->foo->>bar.nullsfirst,id")
    assert nulls == (200, [{"id": 2}, {"id": 3}, {"id": 1}])


async def test_paths_in_writes_embeds_and_bad_paths(conn, gw):
    patched = httpx.patch(
        gw.url + "/v1/rest/json_table?data->>id=eq.3&select=id,label",
        json={"label": "three"},
        headers={"Prefer": "return=representation"},
    )
    assert patched.json() == [{"id": 2, "label": "three"}]
    for path, status, says in [
        ("json_table?select=label->a", 400, "json or jsonb"),
        ("json_table?select=data->>a->b", 400, "only the last step"),
        ("json_table?select=data->", 400, "empty"),
        ("json_table?nope->>a=eq.1", 400, "'nope'"),
        ("json_table?order=label->>x", 400, "json or jsonb"),
    ]:
        got_status, body = _get(gw, path)
        assert got_status == status and says in body["message"], (path, body)
    # A key is a value, never SQL.
    hostile = _get(gw, "json_table?select=id&data->>id'||'=eq.1")
    assert hostile == (200, [])
    quoted = _get(gw, "json_table?select=x:data->>id'--&id=eq.1")
    assert quoted == (200, [{"x": None}])
