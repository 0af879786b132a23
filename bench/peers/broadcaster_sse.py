"""Peer (c): ``broadcaster`` (postgres backend) + ``sse-starlette``.

One asyncpg connection LISTENs on ``docs`` (broadcaster's PostgresBackend);
each SSE client subscribes to the channel and gets every notification through
its own (unbounded) queue.

    python -m bench.peers.broadcaster_sse --database-url DSN --port 8003
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import uvicorn
from broadcaster import Broadcast  # type: ignore[import-not-found, unused-ignore]
from sse_starlette.sse import (  # type: ignore[import-not-found, unused-ignore]
    EventSourceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.peers._cli import parse


def create_app(dsn: str) -> Starlette:
    broadcast = Broadcast(dsn)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        try:
            yield
        finally:
            await broadcast.disconnect()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # broadcaster 0.3.1 loses subscribers when several subscribe to a channel
    # before its first LISTEN completes (KeyError 'docs' on the way out), which
    # a burst of connecting clients triggers; entering subscribe() one at a
    # time avoids that without changing anything else.
    first = asyncio.Lock()

    async def events(request: Request) -> Any:
        async def stream() -> AsyncIterator[dict[str, str]]:
            async with AsyncExitStack() as stack:
                async with first:
                    subscriber = await stack.enter_async_context(
                        broadcast.subscribe(channel="docs")
                    )
                yield {"event": "ready", "data": "1"}
                while True:
                    event = await subscriber.get()
                    yield {"event": "change", "data": event.message}

        return EventSourceResponse(stream(), ping=15)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/events", events)],
        lifespan=lifespan,
    )


def main() -> None:
    args = parse(__doc__ or "")
    uvicorn.run(
        create_app(args.database_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
