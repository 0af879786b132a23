"""``GET /v1/live``: a query's rows as a ``snapshot``, then patches (SSE).

The request is the REST grammar plus ``table=`` (``/v1/live?table=documents&
select=id,title,shipment:shipments(port)&status=eq.final&order=title&limit=50``)
and runs through the same builder, exposure rules and row-level security as
``/v1/rest`` (:mod:`pgpulse.server.rest`), so a live query shows exactly what
a REST read would.  Clients of one query share its state
(:mod:`pgpulse.live`); ``Last-Event-ID`` resumes its patches, or gets a fresh
``snapshot`` when they are no longer kept.  Errors before the stream starts
are JSON ``{"error": ...}`` with a 4xx, as for ``/v1/events``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from pgpulse.auth.streams import expire_at
from pgpulse.exceptions import AuthError, PgPulseError, UnknownTableError
from pgpulse.gateway import Gateway
from pgpulse.live.query import LiveQuery
from pgpulse.live.shared import SharedQuery
from pgpulse.routing.outbox import Outbox
from pgpulse.server.live_plan import plan_live
from pgpulse.server.sse import (
    SSE_HEADERS,
    DirectStream,
    chunked_cycle,
    client_label,
    cors_headers,
    json_error,
    watch_disconnect,
)

__all__ = ["live_endpoint"]

log = logging.getLogger("pgpulse.live")


async def live_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    gateway: Gateway = scope["app"].state.gateway
    request = Request(scope)
    cors = cors_headers(request, gateway.settings.cors_origins)
    if scope["method"] != "GET":
        await json_error(send, 405, "use GET /v1/live?table=TABLE", cors)
        return
    settings = gateway.settings
    auth_on = gateway.auth.enabled or gateway.authenticate is not None
    if not settings.rest_enabled and not auth_on:
        await json_error(
            send,
            403,
            "live queries read like the REST endpoint, which is disabled; start "
            "the gateway with --rest or set PGPULSE_REST=1",
            cors,
        )
        return
    raw_id = request.query_params.get("last_event_id") or request.headers.get(
        "last-event-id"
    )
    if raw_id and len(raw_id) > settings.max_cursor_bytes:
        await json_error(send, 400, "the event id is too long", cors)
        return
    try:
        access = await gateway.identify(request)
        query = LiveQuery.from_params(request.query_params.multi_items())
        plan = await plan_live(gateway, access, query)
        release = gateway.admit(access)
    except AuthError as exc:
        await json_error(send, exc.status, str(exc), cors)
        return
    except UnknownTableError as exc:
        await json_error(send, 404, str(exc), cors)
        return
    except (PgPulseError, ValueError) as exc:
        await json_error(send, 400, str(exc), cors)
        return

    label = f"{client_label(scope, [query.table])} live"
    if access.claims.subject is not None:
        label = f"{label} user {access.claims.subject}"
    stream = DirectStream(send, label, asyncio.current_task())
    outbox = Outbox(settings.outbox_limit, stream.on_close)
    stream.outbox = outbox
    outbox.put(f"retry: {settings.retry_ms}\n\n".encode())
    try:
        # Join (a new query is read first) before answering: a query that
        # cannot be read is an HTTP error with the reason, not a stream.
        shared = await gateway.live.join(plan.query_id, plan.create, outbox)
    except BaseException:
        release()
        raise
    if shared.failed is not None:
        gateway.live.leave(shared, outbox)
        release()
        await json_error(send, shared.failed_status, shared.failed, cors)
        return
    # Queued before anything can be sent: patches that come meanwhile follow.
    for data in _opening(shared, raw_id):
        outbox.put(data)
    await send(
        {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + cors}
    )
    stream.cycle = chunked_cycle(send)
    outbox.direct = stream.write_now
    watcher = asyncio.create_task(watch_disconnect(receive, outbox))
    expiry = expire_at(outbox, access.claims.expires_at)
    try:
        await stream.serve(None)  # joined already: nothing left to attach
    finally:
        release()
        if expiry is not None:
            expiry.cancel()
        stream.discard()
        gateway.live.leave(shared, outbox)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _opening(shared: SharedQuery, raw_id: str | None) -> list[bytes]:
    """What a client gets first: the patches it missed, or a snapshot."""
    if raw_id:
        missed = shared.resumes(raw_id)
        if missed is not None:
            return missed
    return [shared.snapshot()]
