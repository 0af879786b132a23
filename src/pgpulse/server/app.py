"""The gateway ASGI application: routes, lifespan, CORS.

One :class:`~pgpulse.gateway.Gateway` per process (created in the lifespan), so
``serve --workers N`` gives N processes each with its own listener connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pgpulse.config import Settings
from pgpulse.gateway import Gateway
from pgpulse.server.sse import events_endpoint
from pgpulse.server.ws import websocket_endpoint

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("pgpulse.server")

STATIC_DIR = Path(str(resources.files("pgpulse").joinpath("static")))


async def healthz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    listener = gateway.listener
    ok = listener.connected.is_set() and gateway.bus.position is not None
    return JSONResponse(
        {
            "status": "ok" if ok else "degraded",
            "listener": "connected" if listener.connected.is_set() else "reconnecting",
            "clients": len(gateway.bus.subscribers),
            "position": str(gateway.bus.position) if gateway.bus.position else None,
        },
        status_code=200 if ok else 503,
    )


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    bus = gateway.bus
    lines = [
        "# TYPE pgpulse_clients gauge",
        f"pgpulse_clients {len(bus.subscribers)}",
        "# TYPE pgpulse_changes_total counter",
        f"pgpulse_changes_total {bus.changes}",
        "# TYPE pgpulse_deliveries_total counter",
        f"pgpulse_deliveries_total {bus.delivered}",
        "# HELP pgpulse_filter_errors_total Rows skipped for a subscriber whose "
        "filter could not evaluate them.",
        "# TYPE pgpulse_filter_errors_total counter",
        f"pgpulse_filter_errors_total {bus.errors.total}",
        "# TYPE pgpulse_listener_reads_total counter",
        f"pgpulse_listener_reads_total {gateway.listener.reads}",
        "# TYPE pgpulse_listener_connected gauge",
        f"pgpulse_listener_connected {int(gateway.listener.connected.is_set())}",
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain")


async def client_js(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "client.js",
        media_type="text/javascript",
        headers={"cache-control": "no-cache"},
    )


async def index(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.settings.demo and (STATIC_DIR / "demo.html").exists():
        return FileResponse(STATIC_DIR / "demo.html", media_type="text/html")
    return JSONResponse(
        {
            "service": "pgpulse",
            "events": "/v1/events?sub=TABLE[:FILTERS]",
            "websocket": "/v1/ws",
            "client": "/v1/client.js",
            "watched": sorted(gateway.watched),
        }
    )


def _rest_routes() -> list[BaseRoute]:
    try:
        from pgpulse.server.rest import rest_read
    except ImportError:  # pragma: no cover - the REST module ships with pgpulse
        return []
    return [Route("/v1/rest/{table}", rest_read, methods=["GET"])]


class GatewayApp:
    """Top-level ASGI app: SSE streams go straight to their endpoint.

    Why: every event a client receives passes through ``send``; Starlette's
    error and exception middleware each wrap ``send`` in another coroutine.  The
    SSE endpoint handles its own errors and CORS, so it skips that stack; all
    other routes (and the lifespan) are plain Starlette.
    """

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette

    @property
    def state(self) -> Any:
        return self.starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events":
            scope["app"] = self.starlette
            await events_endpoint(scope, receive, send)
            return
        await self.starlette(scope, receive, send)


def create_app(settings: Settings) -> GatewayApp:
    """The gateway application for *settings*."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = Gateway(settings)
        app.state.gateway = gateway
        await gateway.start()
        log.info(
            "pgpulse gateway ready; watching %s",
            ", ".join(sorted(gateway.watched)) or "no tables yet",
        )
        try:
            yield
        finally:
            await gateway.stop()

    routes: list[BaseRoute] = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/v1/client.js", client_js),
        WebSocketRoute("/v1/ws", websocket_endpoint),
        *_rest_routes(),
        Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False)),
    ]
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET"],
                allow_headers=["last-event-id", "range", "prefer", "authorization"],
                expose_headers=["content-range"],
            )
        )
    return GatewayApp(
        Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    )


def app_from_env() -> GatewayApp:
    """Factory for ``uvicorn --factory`` worker processes (settings from env)."""
    return create_app(Settings.from_env())
