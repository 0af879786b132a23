"""Auth attack matrix: real gateway process, real HTTP and WebSocket, real tokens.

Two tenants share ``docs``; a policy binds each caller to their tenant and cuts
``secret`` from ordinary roles.  Every way in (SSE, WebSocket, resume) is tried
with every bad token and every overreach; each is denied with the right status
or bounded, and no event of the other tenant ever arrives.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.datastructures import Headers

from tests.gateway import SSEStream
from tests.integration.auth_support import (
    SECRET,
    token,
    two_tenants,
    unsigned,
    write_config,
)

ENV = {"PGPULSE_JWT_SECRET": SECRET}


@pytest.fixture
async def secured(conn, gateway_factory, tmp_path: Path) -> Any:
    await two_tenants(conn)
    config = write_config(tmp_path)
    return gateway_factory("--config", config, env=ENV)


def _events_url(gw: Any, *subs: str, **params: str) -> httpx.URL:
    query = [("sub", s) for s in subs] + list(params.items())
    return httpx.URL(gw.url + "/v1/events", params=query)


async def _status(
    url: httpx.URL, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 200:
                return 200, ""
            body = orjson.loads(await response.aread())
            # The stream's errors are {"error"}, REST's PostgREST's {"message"}.
            return response.status_code, body.get("error") or body["message"]


def _raw_get(port: int, target: str, headers: str = "") -> int:
    """The status of a GET sent as raw bytes (no client-side limits)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = ["Host: x", *([headers] if headers else [])]
        head = "".join(f"{line}\r\n" for line in lines)
        sock.sendall(f"GET {target} HTTP/1.1\r\n{head}\r\n".encode())
        return int(sock.recv(64).split()[1])


def _t(**overrides: Any) -> str:
    claims = {"tenant_id": 1}
    claims.update({k: v for k, v in overrides.items() if k in ("tenant_id", "sub")})
    rest = {k: v for k, v in overrides.items() if k not in ("tenant_id", "sub")}
    return token(claims, **rest)


#: (case, token or None, extra headers, status, part of the message)
BAD: list[tuple[str, str | None, dict[str, str], int, str]] = [
    ("no token", None, {}, 401, "needs a token"),
    ("forged signature", _t(secret="x" * 64), {}, 401, "invalid"),
    ("expired", _t(expires_in=-60), {}, 401, "expired"),
    ("alg none", unsigned({"tenant_id": 1}), {}, 401, "not accepted"),
    ("HS512 not HS256", _t(algorithm="HS512"), {}, 200, ""),
    ("wrong audience", _t(aud="elsewhere"), {}, 401, "audience"),
    ("wrong issuer", _t(iss="https://evil"), {}, 401, "issuer"),
    ("no exp", _t(exp=None), {}, 401, "'exp'"),
    ("not yet valid", _t(nbf=9_999_999_999), {}, 401, "not valid yet"),
    ("garbage", "not.a.jwt", {}, 401, "not a JWT"),
    ("basic auth", None, {"authorization": "Basic dTpw"}, 401, "Bearer"),
    ("role without policy", _t(role="anon"), {}, 403, "may not read"),
    ("no role", _t(role=None), {}, 403, "may not read"),
    ("missing claim", token({"sub": "u1"}), {}, 403, "claims.tenant_id"),
    ("claim injection", _t(tenant_id="1) or (1=1"), {}, 400, "integer"),
    ("list claim for eq", _t(tenant_id=[1, 2]), {}, 403, "single value"),
]


async def test_bad_tokens_and_overreach_are_denied_with_the_right_status(secured):
    gw = secured
    tenant1 = token({"tenant_id": 1, "sub": "u1"})
    for name, bad, headers, status, message in BAD:
        params = {} if bad is None else {"access_token": bad}
        got, error = await _status(_events_url(gw, "docs", **params), headers)
        assert (got, message in error) == (status, True), (name, got, error)
    # A table without a policy is unreadable (and named); unknown ones are 404.
    for sub, status, message in [
        ("open_data", 403, "table 'open_data' has no policy"),
        ("nothing", 404, "does not exist"),
        ("docs:secret=eq.x", 400, "'secret' does not exist"),
        ("docs:tenant_id=eq.2", 200, ""),  # allowed, and empty (policy ANDed)
    ]:
        got, error = await _status(_events_url(gw, sub, access_token=tenant1))
        assert (got, message in error) == (status, True), (sub, got, error)
    # A token in each place works.
    for params, headers, cookies in [
        ({"access_token": tenant1}, {}, {}),
        ({}, {"authorization": f"Bearer {tenant1}"}, {}),
        ({}, {}, {"pgpulse_token": tenant1}),
    ]:
        async with httpx.AsyncClient(timeout=10, cookies=cookies) as client:
            async with client.stream(
                "GET", _events_url(gw, "docs", **params), headers=headers
            ) as response:
                assert response.status_code == 200
    # Abuse bounds: each a 4xx naming the bound.
    many = "&".join(f"sub=docs:id=eq.{i}" for i in range(10_000))
    assert _raw_get(gw.port, f"/v1/events?{many}&access_token={tenant1}") in (400, 414)
    some = "&".join(f"sub=docs:id=eq.{i}" for i in range(500))
    assert _raw_get(gw.port, f"/v1/events?{some}&access_token={tenant1}") == 414
    assert _raw_get(gw.port, "/v1/events?sub=docs", "x-big: " + "a" * 20_000) == 431
    async with httpx.AsyncClient(timeout=10) as client:
        too_many: list[tuple[str, str | int | float | bool | None]] = [
            ("sub", f"docs:id=eq.{i}") for i in range(101)
        ]
        too_many.append(("access_token", tenant1))
        response = await client.get(gw.url + "/v1/events", params=too_many)
        assert response.status_code == 400 and "at most 100" in response.text
        response = await client.get(
            gw.url + "/v1/events",
            params={"sub": "docs", "access_token": tenant1},
            headers={"last-event-id": "1:1:" + ",".join(["1"] * 6000)},
        )
        assert response.status_code == 400 and "at most 8192" in response.text
    # Operational pages are not public.
    assert httpx.get(gw.url + "/metrics").status_code == 401
    assert httpx.get(gw.url + "/").status_code == 401
    assert httpx.get(gw.url + "/healthz").status_code == 200


async def test_websocket_applies_the_same_rules(secured, conn):
    gw = secured
    base = f"ws://127.0.0.1:{gw.port}/v1/ws"

    async def refused(uri: str, **kwargs: Any) -> int:
        try:
            async with websockets.connect(uri, **kwargs):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert await refused(base + "?sub=docs") == 403
    assert (
        await refused(base + f"?sub=docs&access_token={unsigned({'tenant_id': 1})}")
        == 403
    )
    tenant1 = token({"tenant_id": 1, "sub": "u1"})
    # Cross-origin sockets are refused even with a valid token.
    assert (
        await refused(
            base + f"?sub=docs&access_token={tenant1}",
            origin=websockets.typing.Origin("http://evil.example"),
        )
        == 403
    )
    headers = Headers({"authorization": f"Bearer {tenant1}"})
    async with websockets.connect(base + "?sub=docs", additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.send(
            orjson.dumps({"type": "subscribe", "ref": "o", "sub": "open_data"})
        )
        reply = orjson.loads(await ws.recv())
        assert reply["type"] == "error" and "no policy" in reply["reason"]
        await conn.execute("insert into docs values (1, 2, 'other tenant', 's')")
        await conn.execute("insert into docs values (2, 1, 'mine', 's')")
        change = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert change["data"]["row"] == {"id": 2, "tenant_id": 1, "title": "mine"}
        await ws.send(b"x" * 70_000)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)


async def test_no_row_of_another_tenant_ever_arrives(secured, conn):
    """Thousands of random writes (updates moving rows between tenants,
    deletes); clients of both tenants with and without their own filters,
    live and resuming: zero rows of the other tenant, and each client's
    replayed view equals its tenant's rows."""
    gw = secured
    rng = random.Random(4)
    start = None
    probe = SSEStream(gw.url, ["docs"], token=token({"tenant_id": 1, "sub": "p"}))
    async with probe:
        start = (await probe.next_event()).id
    clients: list[tuple[int, SSEStream, str]] = []
    for tenant in (1, 2):
        t = token({"tenant_id": tenant, "sub": f"user{tenant}"})
        for sub in ("docs", "docs:title=like.*a*", "docs:tenant_id=eq.1"):
            clients.append((tenant, SSEStream(gw.url, [sub], token=t), sub))
    admin = SSEStream(
        gw.url, ["docs"], token=token({"tenant_id": 1, "sub": "boss"}, role="admin")
    )
    try:
        for _tenant, stream, _sub in clients:
            await stream.__aenter__()
            assert (await stream.next_event()).event == "ready"
        await admin.__aenter__()
        await admin.next_event()
        ids = list(range(1, 200))
        for _ in range(40):
            async with conn.transaction():
                for _ in range(50):
                    i = rng.choice(ids)
                    roll = rng.random()
                    tenant = rng.choice((1, 2))
                    title = rng.choice(["a", "b", "ab", "zz"])
                    if roll < 0.5:
                        await conn.execute(
                            "insert into docs values ($1, $2, $3, 'pw') "
                            "on conflict (id) do update set tenant_id = $2, title = $3",
                            i,
                            tenant,
                            title,
                        )
                    elif roll < 0.8:
                        await conn.execute(
                            "update docs set tenant_id = $2 where id = $1", i, tenant
                        )
                    else:
                        await conn.execute("delete from docs where id = $1", i)
        await conn.execute("insert into docs values (100000, 1, 'end-a', 'pw')")
        await conn.execute("insert into docs values (100001, 2, 'end-a', 'pw')")
        # Resuming from before the writes, as tenant 2: its own rows only.
        t2 = token({"tenant_id": 2, "sub": "user2"})
        clients.append((2, SSEStream(gw.url, ["docs"], start, token=t2), "resume"))
        await clients[-1][1].__aenter__()
        for tenant, stream, sub in clients:
            if sub.endswith("eq.1") and tenant == 2:
                await stream.expect_nothing(1.0)
                continue
            view = await _replay(stream, tenant, 100000 if tenant == 1 else 100001)
            where = "tenant_id = $1" + (
                " and title like '%a%'" if "like" in sub else ""
            )
            expected = {
                r["id"]: {
                    "id": r["id"],
                    "tenant_id": r["tenant_id"],
                    "title": r["title"],
                }
                for r in await conn.fetch(f"select * from docs where {where}", tenant)
            }
            assert view == expected, sub
        # The admin role reads every column (of its own tenant).
        event = await admin.next_event()
        while event.event != "change":
            event = await admin.next_event()
        row = event.data["row"] or event.data["old"]
        assert row["tenant_id"] == 1 and "secret" in row
    finally:
        for _t, stream, _s in clients:
            await stream.close()
        await admin.close()


async def _replay(stream: SSEStream, tenant: int, marker: int) -> dict[int, Any]:
    """Apply a client's events until *marker* arrives; no foreign row allowed."""
    view: dict[int, Any] = {}
    async with asyncio.timeout(60):
        while marker not in view:
            event = await stream.next_event()
            if event.event != "change":
                continue
            data = event.data
            for row in (data["row"], data["old"]):
                assert row is None or row["tenant_id"] == tenant, data
                assert row is None or "secret" not in row, data
            if data["op"] == "DELETE":
                view.pop(data["pk"]["id"], None)
            else:
                view[data["pk"]["id"]] = data["row"]
    return view
