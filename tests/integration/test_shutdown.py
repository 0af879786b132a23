"""Stopping a gateway closes every open stream cleanly: each client is told
to reconnect (and resumes elsewhere with its last id), and the log holds no
traceback (it held an 'Exception in ASGI application ... CancelledError' per
open stream)."""

from __future__ import annotations

import asyncio

from pgpulse import capture
from tests.gateway import SSEStream


async def test_sigint_tells_every_stream_to_reconnect_without_a_traceback(
    conn, gateway_factory
):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    gw = gateway_factory()
    streams = [SSEStream(gw.url, ["docs"]) for _ in range(3)]
    try:
        for stream in streams:
            await stream.__aenter__()
            assert (await stream.next_event()).event == "ready"
        assert gw.proc is not None
        await asyncio.to_thread(gw.stop)
        for stream in streams:
            event = await stream.next_event(timeout=10)
            assert event.event == "error", event
            assert "shutting down" in event.data["reason"]
    finally:
        for stream in streams:
            await stream.close()
    log = gw.log()
    assert gw.proc.returncode == 0, log
    assert "Traceback" not in log and "Exception in ASGI" not in log, log
