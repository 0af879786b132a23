"""The SSE stream's direct chunk writes engage under the uvicorn pgpulse runs
on, and frame bytes exactly as uvicorn's own ``send`` would (a real server, a
real HTTP client): if uvicorn's internals change, this fails instead of the
gateway silently falling back to the slower path."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn

from pgpulse.embedded import free_port
from pgpulse.routing.outbox import Outbox
from pgpulse.server.sse import DirectStream, chunked_cycle

BIG = b"x" * 30_000_000  # more than the kernel buffers while nobody reads


@pytest.mark.parametrize(("http", "direct"), [("httptools", True), ("h11", False)])
async def test_direct_writes_engage_and_keep_the_stream_intact(
    http: str, direct: bool
) -> None:
    """httptools (what ``uvicorn[standard]`` runs) takes the direct writes;
    h11 keeps the plain ASGI path, and both deliver the same bytes."""
    engaged: list[bool] = []
    queued: list[int] = []
    flushed = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        stream = DirectStream(send, "test", None)
        stream.outbox = outbox = Outbox(10**9)
        outbox.direct = stream.write_now
        stream.cycle = chunked_cycle(send)
        engaged.append(stream.cycle is not None)
        # As the bus does: queue, then flush (written now, or left queued when
        # the transport's flow control has paused after the big chunk).
        for data in (b"event: a\n", b"data: 1\n\n", BIG, b"tail\n"):
            outbox.put_deferred(data)
            outbox.flush()
        leftover = outbox._chunks
        queued.append(len(leftover))
        flushed.set()
        if stream.pending is not None:  # a plain send that suspended: as run() does
            await stream._finish_pending()
        await send(
            {
                "type": "http.response.body",
                "body": b"".join(leftover) + b"end",
                "more_body": False,
            }
        )

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            http=http,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with (
            httpx.AsyncClient() as client,
            client.stream("GET", f"http://127.0.0.1:{port}/") as resp,
        ):
            await flushed.wait()  # the client reads only now: flow control paused
            body = await resp.aread()
        assert resp.headers["transfer-encoding"] == "chunked"
        assert body == b"event: a\ndata: 1\n\n" + BIG + b"tail\nend"
        assert engaged == [direct]
        if direct:
            assert queued == [1], "the chunk after the paused write must stay queued"
    finally:
        server.should_exit = True
        await task


def test_a_changed_uvicorn_is_reported_not_silently_slower(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A response cycle from uvicorn's httptools module without the attributes
    the fast path writes through is named in a warning (once)."""

    class Cycle:
        async def send(self, message: Any) -> None: ...

    Cycle.__module__ = "uvicorn.protocols.http.httptools_impl"
    import pgpulse.server.sse as sse

    sse._contract_warned = False
    with caplog.at_level("WARNING", logger="pgpulse"):
        assert chunked_cycle(Cycle().send) is None
        assert chunked_cycle(Cycle().send) is None
    warnings = [r for r in caplog.records if "uvicorn" in r.getMessage()]
    assert len(warnings) == 1
    assert "pyproject.toml" in warnings[0].getMessage()
