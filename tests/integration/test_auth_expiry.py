"""Token lifetime: at ``exp`` the stream ends with ``auth_expired``; a client
with a token function renews it and resumes from its last event id, losing
and repeating nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pgpulse
from tests.gateway import SSEStream
from tests.integration.auth_support import SECRET, token, two_tenants, write_config

ENV = {"PGPULSE_JWT_SECRET": SECRET}


async def test_stream_ends_with_auth_expired_at_the_tokens_exp(
    conn, gateway_factory, tmp_path: Path
):
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    short = token({"tenant_id": 1, "sub": "u"}, expires_in=2)
    async with SSEStream(gw.url, ["docs"], token=short) as stream:
        assert (await stream.next_event()).event == "ready"
        await conn.execute("insert into docs values (1, 1, 'a', 's')")
        (change,) = await stream.changes(1)
        event = await stream.next_event(timeout=10)
        assert event.event == "auth_expired", event
        assert "expired" in event.data["reason"]
        assert stream.last_id == change.id  # nothing after it


async def test_python_client_renews_its_token_and_loses_nothing(
    conn, gateway_factory, tmp_path: Path
):
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    issued: list[str] = []

    def fresh() -> str:
        issued.append(token({"tenant_id": 1, "sub": "u"}, expires_in=1.5))
        return issued[-1]

    async def write() -> None:
        for i in range(1, 121):
            await conn.execute(
                "insert into docs values ($1, $2, 'x', 's')", i, 1 if i % 3 else 2
            )
            await asyncio.sleep(0.04)

    seen: list[int] = []
    start = await conn.fetchval("select pg_current_snapshot()::text")
    writer = asyncio.create_task(write())
    async with pgpulse.Client(gw.url, token=fresh) as client:
        async with asyncio.timeout(60):
            async for event in client.subscribe("docs", last_event_id=start):
                if event.kind == "change":
                    seen.append(event.pk["id"])  # type: ignore[index]
                if seen and seen[-1] == 119:
                    break
    await writer
    assert seen == [i for i in range(1, 121) if i % 3]
    assert len(issued) >= 3  # renewed at least twice along the way
