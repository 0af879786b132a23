"""The gateway's HTTP surface: headers, bad input, injection, WebSocket."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import websockets
from websockets.typing import Origin

from pgpulse import capture
from tests.gateway import SSEStream


async def _schema(conn) -> None:
    await conn.execute(
        "create table docs (id int primary key, shipment_id int, title text, "
        "created timestamptz default now())"
    )
    await conn.execute("create table users (id int primary key, name text, pw text)")
    await conn.execute("create table notwatched (id int primary key)")
    await capture.watch(conn, "docs")
    await capture.watch(conn, "users", exclude=["pw"])


async def test_sse_response_has_proxy_friendly_headers_and_retry_hint(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory("--heartbeat", "0.5")
    async with httpx.AsyncClient() as client:
        async with client.stream(
            "GET", gw.url + "/v1/events", params={"sub": "docs"}
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"].startswith("no-cache")
            assert r.headers["x-accel-buffering"] == "no"
            text = ""
            async with asyncio.timeout(5):
                async for chunk in r.aiter_text():
                    text += chunk
                    if ": ping" in text:
                        break
    assert text.startswith("retry: 2000\n\n")
    assert "event: ready" in text


async def test_heartbeats_advance_the_cursor_of_quiet_filtered_clients(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory("--heartbeat", "0.3")
    async with SSEStream(gw.url, ["docs:shipment_id=eq.1"]) as stream:
        ready = await stream.next_event()
        await conn.execute("insert into docs (id, shipment_id) values (1, 2)")
        await asyncio.sleep(1.5)
        assert stream.comments >= 2
        assert stream.last_id != ready.id  # moved past the unrelated change
    await conn.execute("insert into docs (id, shipment_id) values (2, 1)")
    async with SSEStream(gw.url, ["docs:shipment_id=eq.1"], stream.last_id) as again:
        await again.next_event()
        (event,) = await again.changes(1)
        assert event.data["pk"] == {"id": 2}


async def test_bad_subscriptions_are_clear_4xx_and_execute_nothing(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory()
    cases = {
        "": (400, "subscribe to at least one table"),
        "nope": (404, "table 'nope' does not exist"),
        "dcos": (404, "Did you mean 'docs'"),
        "notwatched": (404, "is not watched"),
        "docs:titel=eq.x": (400, "column 'titel' does not exist"),
        "docs:shipment_id=equals.1": (400, "unknown operator 'equals'"),
        "docs:shipment_id": (400, "must look like 'column=op.value'"),
        "docs:shipment_id=eq.abc": (400, 'syntax for type integer: "abc"'),
        "docs:created=lt.someday": (400, "invalid input syntax for type timestamp"),
        "docs:title=like.50\\": (400, "must not end with escape character"),
        "docs:shipment_id=like.4*": (400, "needs a text column"),
        "docs:shipment_id=in.(1,2": (400, "unbalanced"),
        "users:pw=eq.secret": (400, "column 'pw' does not exist"),
        "docs;drop table docs": (404, "does not exist"),
        'docs:"id"=eq.1': (400, "column"),
        "docs:id) or 1=1 --=eq.1": (400, ""),
        "pgpulse.changes": (404, "is not watched"),
    }
    async with httpx.AsyncClient() as client:
        for sub, (status, message) in cases.items():
            params = {"sub": sub} if sub else {}
            r = await client.get(gw.url + "/v1/events", params=params)
            assert r.status_code == status, (sub, r.text)
            assert message in r.json()["error"], (sub, r.json())
    assert await conn.fetchval("select to_regclass('docs') is not null")
    assert await conn.fetchval("select count(*) from pgpulse.changes") == 0


async def test_injection_in_filter_values_is_just_a_value(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory()
    evil = "x'); drop table docs; --"
    async with SSEStream(gw.url, [f'docs:title=eq."{evil}"']) as stream:
        await stream.next_event()
        await conn.execute(
            "insert into docs (id, title) values (1, 'a'), (2, $1)", evil
        )
        (event,) = await stream.changes(1)
        assert event.data["row"]["title"] == evil
    assert await conn.fetchval("select count(*) from docs") == 2


async def test_excluded_columns_never_reach_clients(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory()
    async with SSEStream(gw.url, ["users"]) as stream:
        await stream.next_event()
        await conn.execute("insert into users values (1, 'ann', 'hunter2')")
        (event,) = await stream.changes(1)
    assert event.data["row"] == {"id": 1, "name": "ann"}


async def test_websocket_subscribe_and_unsubscribe_without_reconnecting(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory()
    uri = f"ws://127.0.0.1:{gw.port}/v1/ws?sub=docs"

    async def recv(ws):
        return orjson.loads(await asyncio.wait_for(ws.recv(), 10))

    async with websockets.connect(uri) as ws:
        ready = await recv(ws)
        assert ready["type"] == "ready"
        await ws.send(orjson.dumps({"type": "subscribe", "ref": "u", "sub": "users"}))
        assert (await recv(ws))["type"] == "subscribed"
        await conn.execute("insert into users values (1, 'ann', 'pw')")
        change = await recv(ws)
        assert change["type"] == "change"
        assert change["data"]["table"] == "users"
        await ws.send(orjson.dumps({"type": "unsubscribe", "ref": "u"}))
        assert (await recv(ws))["type"] == "unsubscribed"
        await conn.execute("insert into users values (2, 'bob', 'pw')")
        await conn.execute("insert into docs (id) values (7)")
        change = await recv(ws)
        assert change["data"]["table"] == "docs"  # users no longer delivered
        await ws.send(orjson.dumps({"type": "subscribe", "ref": "x", "sub": "nope"}))
        error = await recv(ws)
        assert error["type"] == "error" and "does not exist" in error["reason"]
        await ws.send(b"not json")
        assert "JSON" in (await recv(ws))["reason"]
        # The handshake's own subscription is ref "0" (docs/websocket.md).
        await ws.send(orjson.dumps({"type": "unsubscribe", "ref": "0"}))
        assert (await recv(ws)) == {"type": "unsubscribed", "ref": "0"}
        await ws.send(
            orjson.dumps({"type": "subscribe", "ref": "z", "sub": "docs:id=eq.9"})
        )
        assert (await recv(ws))["type"] == "subscribed"
        await conn.execute("insert into docs (id) values (8)")
        await conn.execute("insert into docs (id) values (9)")
        change = await recv(ws)  # in commit order: 8 would come first
        assert change["data"]["row"]["id"] == 9


async def test_websocket_from_a_foreign_origin_is_refused(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory()
    uri = f"ws://127.0.0.1:{gw.port}/v1/ws?sub=docs"
    try:
        async with websockets.connect(uri, origin=Origin("http://evil.example")):
            raise AssertionError("foreign origin was accepted")
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code == 403
    # The page's own origin is fine.
    own = Origin(f"http://127.0.0.1:{gw.port}")
    async with websockets.connect(uri, origin=own) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"


async def test_cors_origins_are_configurable(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--cors-origin", "https://app.example")
    async with httpx.AsyncClient() as client:
        async with client.stream(
            "GET",
            gw.url + "/v1/events",
            params={"sub": "docs"},
            headers={"origin": "https://app.example"},
        ) as r:
            assert r.headers["access-control-allow-origin"] == "https://app.example"
        async with client.stream(
            "GET",
            gw.url + "/v1/events",
            params={"sub": "docs"},
            headers={"origin": "https://evil.example"},
        ) as r:
            assert "access-control-allow-origin" not in r.headers


async def test_rest_reads_through_the_real_gateway_only_when_enabled(
    conn, gateway_factory
):
    await _schema(conn)
    await conn.execute("insert into docs (id, shipment_id, title) values (1, 4, 'a')")
    await conn.execute("insert into docs (id, shipment_id, title) values (2, 5, 'b')")
    closed = gateway_factory()
    opened = gateway_factory("--rest")
    async with httpx.AsyncClient() as client:
        r = await client.get(closed.url + "/v1/rest/docs")
        assert r.status_code == 403 and "--rest" in r.json()["message"]
        r = await client.get(
            opened.url + "/v1/rest/docs",
            params={"select": "id,title", "shipment_id": "eq.5"},
        )
        assert r.status_code == 200
        assert r.json() == [{"id": 2, "title": "b"}]
        r = await client.get(opened.url + "/v1/rest/docs", params={"nope": "eq.1"})
        assert r.status_code == 400 and "nope" in r.json()["message"]
