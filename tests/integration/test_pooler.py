"""Through PgBouncer in transaction mode: the pool works (catch-up, REST), the
listener refuses it with a message naming --listener-url, and a direct
listener URL makes the whole gateway work."""

from __future__ import annotations

import httpx
import pytest

from pgpulse import capture
from tests.gateway import SSEStream
from tests.pooler import pgbouncer


async def test_a_listener_behind_a_transaction_pooler_is_refused(
    conn, database, gateway_factory
):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    with pgbouncer(database) as pooled:
        with pytest.raises(RuntimeError) as refused:
            gateway_factory(dsn=pooled)
    assert "--listener-url" in str(refused.value)
    assert "transaction mode" in str(refused.value)


async def test_pool_through_the_pooler_listener_direct(conn, database, gateway_factory):
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs")
    with pgbouncer(database) as pooled:
        gw = gateway_factory("--listener-url", database, "--rest", dsn=pooled)
        async with SSEStream(gw.url, ["docs"]) as stream:
            cursor = (await stream.next_event()).id
            await conn.execute("insert into docs values (1, 'a')")
            (live,) = await stream.changes(1)
            assert live.data["pk"] == {"id": 1}
        await conn.execute(
            "insert into docs select g, 'b' from generate_series(2, 50) g"
        )
        # The resume's catch-up runs on the pool, through the pooler.
        async with SSEStream(gw.url, ["docs:title=eq.b"], last_event_id=cursor) as s:
            await s.next_event()
            got = [e.data["pk"]["id"] for e in await s.changes(49)]
            assert got == list(range(2, 51))
        for _ in range(3):  # several statements on rotating server connections
            response = httpx.get(gw.url + "/v1/rest/docs?title=eq.b&select=id")
            assert response.status_code == 200, response.text
            assert len(response.json()) == 49
