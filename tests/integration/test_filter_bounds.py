"""Filters are bounded: a 500-deep or=(or(...)) within the 4,096-character limit
was a 500 with ~3,000 lines of RecursionError per request; now it is a 400
naming the limit, on SSE, WebSocket, REST and the query builder."""

from __future__ import annotations

import httpx
import orjson
import pytest
import websockets

from pgpulse import capture
from pgpulse.exceptions import FilterError
from pgpulse.routing.filters import MAX_DEPTH, parse_filters


def _deep(levels: int) -> str:
    return "or=" + "(or" * (levels - 1) + "(id.eq.1" + ")" * levels


def test_the_grammar_bounds_depth_and_terms():
    parse_filters(_deep(MAX_DEPTH))
    with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} levels"):
        parse_filters(_deep(MAX_DEPTH + 1))
    with pytest.raises(FilterError, match="more than 1024 conditions and list items"):
        parse_filters("id=in.(" + ",".join(map(str, range(1100))) + ")")


async def test_deep_filters_are_a_400_everywhere(conn, gateway_factory):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    gw = gateway_factory("--rest")
    deep = _deep(500)
    assert len(deep) < 4096
    events = httpx.get(gw.url + "/v1/events", params={"sub": f"docs:{deep}"})
    assert events.status_code == 400 and "levels deep" in events.json()["error"]
    rest = httpx.get(gw.url + "/v1/rest/docs?" + deep)
    assert rest.status_code == 400 and "levels deep" in rest.json()["message"]
    async with websockets.connect(f"ws://127.0.0.1:{gw.port}/v1/ws") as ws:
        await ws.send(
            orjson.dumps({"type": "subscribe", "ref": "a", "sub": f"docs:{deep}"})
        )
        reply = orjson.loads(await ws.recv())
        assert reply["type"] in ("ready", "error")
        if reply["type"] == "ready":
            reply = orjson.loads(await ws.recv())
        assert reply["type"] == "error" and "levels deep" in reply["reason"]
    assert "Traceback" not in gw.log() and "RecursionError" not in gw.log()
