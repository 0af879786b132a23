"""Peer (a): the common tutorial implementation.

FastAPI + asyncpg; every SSE client opens its own database connection and
LISTENs on ``docs``, fed by a per-row trigger that ``pg_notify``s the row as
JSON (``bench/env.py`` ``NOTIFY_DDL``).  This is what most "real-time with
PostgreSQL" posts show; it needs one PostgreSQL connection per browser, so it
stops at ``max_connections``.

    python -m bench.peers.tutorial_fastapi --database-url DSN --port 8002
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI  # type: ignore[import-not-found, unused-ignore]
from fastapi.responses import (  # type: ignore[import-not-found, unused-ignore]
    JSONResponse,
    StreamingResponse,
)

from bench.peers._cli import parse


def create_app(dsn: str) -> Any:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/events")
    async def events() -> Any:
        try:
            conn = await asyncpg.connect(
                dsn, server_settings={"application_name": "tutorial-sse"}
            )
        except (asyncpg.PostgresError, OSError) as exc:
            # The tutorial would answer 500; say why, so the benchmark can record it.
            return JSONResponse({"error": str(exc)}, status_code=503)
        queue: asyncio.Queue[object] = asyncio.Queue()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            queue.put_nowait(payload)

        await conn.add_listener("docs", on_notify)

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": ready\n\n"
                while True:
                    payload = await queue.get()
                    yield f"event: change\ndata: {payload}\n\n"
            finally:
                await conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


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
