"""The gateway ASGI application: routes, lifespan, CORS.

One :class:`~pgpulse.gateway.Gateway` per process (created in the lifespan), so
``serve --workers N`` gives N processes each with its own listener connection.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pgpulse.auth.config import AuthSettings, load_auth
from pgpulse.auth.identity import Authenticate
from pgpulse.config import Settings
from pgpulse.gateway import Gateway
from pgpulse.server.limits import oversized
from pgpulse.server.live import live_endpoint
from pgpulse.server.metrics import CONTENT_TYPE, exposition
from pgpulse.server.sse import events_endpoint, json_error
from pgpulse.server.ws import websocket_endpoint

__all__ = ["GatewayServer", "app_from_env", "create_app"]

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


def _private(request: Request, gateway: Gateway) -> Response | None:
    """Once auth is on, /metrics and the list of watched tables are only for
    holders of PGPULSE_METRICS_TOKEN (a bearer token), not the public."""
    if not gateway.auth.enabled and gateway.authenticate is None:
        return None
    token = gateway.settings.metrics_token
    if token and request.headers.get("authorization") == f"Bearer {token}":
        return None
    return JSONResponse(
        {
            "error": "not public while auth is on; send "
            "'Authorization: Bearer <PGPULSE_METRICS_TOKEN>'"
        },
        status_code=401,
    )


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    refused = _private(request, gateway)
    if refused is not None:
        return refused
    return Response(await exposition(gateway), media_type=CONTENT_TYPE)


async def client_js(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "client.js",
        media_type="text/javascript",
        headers={"cache-control": "no-cache"},
    )


async def client_types(request: Request) -> Response:
    """TypeScript declarations of client.js, served beside it."""
    return FileResponse(
        STATIC_DIR / "client.d.ts",
        media_type="application/typescript",
        headers={"cache-control": "no-cache"},
    )


async def index(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.settings.demo and (STATIC_DIR / "demo.html").exists():
        return FileResponse(STATIC_DIR / "demo.html", media_type="text/html")
    refused = _private(request, gateway)
    if refused is not None:
        return refused
    return JSONResponse(
        {
            "service": "pgpulse",
            "events": "/v1/events?sub=TABLE[:FILTERS]",
            "websocket": "/v1/ws",
            "client": "/v1/client.js",
            "live": "/v1/live?table=TABLE[&select=&FILTERS&order=&limit=]",
            "watched": sorted(gateway.watched),
        }
    )


def _rest_routes() -> list[BaseRoute]:
    try:
        from pgpulse.server.rest import rest_read
        from pgpulse.server.rest_rpc import rest_rpc
        from pgpulse.server.rest_write import rest_write
    except ImportError:  # pragma: no cover - the REST module ships with pgpulse
        return []
    writes = ["POST", "PATCH", "PUT", "DELETE"]
    routes: list[BaseRoute] = []
    # /rest/v1 is where supabase-js looks (createClient(gatewayUrl, key)), so
    # its code moves over by changing the URL only.
    for base in ("/v1/rest", "/rest/v1"):
        routes += [
            Route(base + "/rpc/{function}", rest_rpc, methods=["GET", "POST"]),
            Route(base + "/{table}", rest_read, methods=["GET"]),
            Route(base + "/{table}", rest_write, methods=writes),
        ]
    return routes


class GatewayApp:
    """Top-level ASGI app: SSE streams go straight to their endpoint.

    Why: every event a client receives passes through ``send``; Starlette's
    error and exception middleware each wrap ``send`` in another coroutine.  The
    SSE endpoint handles its own errors and CORS, so it skips that stack; all
    other routes (and the lifespan) are plain Starlette.
    """

    def __init__(self, starlette: Starlette, settings: Settings) -> None:
        self.starlette = starlette
        self.settings = settings

    @property
    def state(self) -> Any:
        return self.starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = oversized(scope, self.settings)
            if refusal is not None:
                status, message = refusal
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                else:
                    await json_error(send, status, message)
                return
        if scope["type"] == "http" and scope["path"] == "/v1/events":
            scope["app"] = self.starlette
            await events_endpoint(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == "/v1/live":
            scope["app"] = self.starlette
            await live_endpoint(scope, receive, send)
            return
        await self.starlette(scope, receive, send)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which first tells open streams to reconnect.

    Why: uvicorn waits for open responses before its lifespan shutdown, and
    an SSE stream never finishes by itself, so each would run into the grace
    period and be cancelled.  Ending them first lets every client hear why
    and resume elsewhere at once.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app
        state = getattr(getattr(app, "app", app), "state", None)
        gateway = getattr(state, "gateway", None)
        if gateway is not None:
            gateway.close_streams()
        await super().shutdown(sockets)


def create_app(
    settings: Settings,
    *,
    auth: AuthSettings | None = None,
    authenticate: Authenticate | None = None,
) -> GatewayApp:
    """The gateway application for *settings*.

    *auth* defaults to ``[auth]``/``[policies]`` of the configuration file
    (``settings.config_file``, else ``pgpulse.toml`` in the working
    directory); *authenticate* is an application's own identity hook (see
    :class:`~pgpulse.gateway.Gateway`).  Both are checked before the first
    request: a bad policy stops the start with a message naming it.
    """
    auth = auth if auth is not None else load_auth(settings.config_file)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = Gateway(settings, auth=auth, authenticate=authenticate)
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
        Route("/v1/client.d.ts", client_types),
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
        Starlette(routes=routes, middleware=middleware, lifespan=lifespan), settings
    )


def app_from_env() -> GatewayApp:
    """Factory for ``uvicorn --factory`` worker processes (settings from env)."""
    return create_app(Settings.from_env())
