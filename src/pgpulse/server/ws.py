"""``/v1/ws``: the same subscriptions over WebSocket, changeable without reconnecting.

Client → server (JSON text frames)::

    {"type": "subscribe", "ref": "a", "sub": "documents:shipment_id=eq.42"}
    {"type": "live", "ref": "q", "table": "documents", "select": "id,title",
     "filters": {"status": "eq.final"}, "order": "id", "limit": 50,
     "last_event_id": "..."}
    {"type": "unsubscribe", "ref": "a"}

A ``live`` query (:mod:`pgpulse.server.live`) is answered with ``{"type":
"live", "ref", "query"}`` (the query's id, which its frames carry), then a
``snapshot`` frame and a ``patch`` frame (``ops``) per change; many live
queries and subscriptions share one connection.

Server → client: ``ready``, ``change`` (``{"type":"change","id":...,"data":{...}}``),
``subscribed``/``unsubscribed`` acknowledgements, ``reset`` and ``error``.  Initial
subscriptions and ``last_event_id`` may be given as query parameters exactly as for
SSE.  A subscription added later starts with the next batch of changes.
Cross-origin sockets are refused unless the origin is configured (browsers do
not apply CORS to WebSockets, so the server must).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from pgpulse.auth.access import Access
from pgpulse.exceptions import AuthError, PgPulseError
from pgpulse.gateway import AUTH_EXPIRED, Gateway
from pgpulse.live.query import LiveQuery
from pgpulse.live.shared import SharedQuery
from pgpulse.log.cursor import Cursor
from pgpulse.routing.bus import Subscriber, Subscription
from pgpulse.routing.outbox import Outbox
from pgpulse.server.live_plan import plan_live

__all__ = ["websocket_endpoint"]

log = logging.getLogger("pgpulse.ws")


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def websocket_endpoint(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    if not origin_allowed(websocket, gateway.settings.cors_origins):
        log.warning("refused WebSocket from origin %s", websocket.headers.get("origin"))
        await websocket.close(code=1008, reason="origin not allowed")
        return
    params = websocket.query_params
    subs = params.getlist("sub")
    raw_cursor = params.get("last_event_id")
    try:
        access = await gateway.identify(websocket)
        release = gateway.admit(access)
    except AuthError as exc:
        # Refused before the handshake completes: the client sees a 403.
        log.info("refused WebSocket: %s", exc)
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    try:
        await _serve(websocket, gateway, access, subs, raw_cursor)
    finally:
        release()


async def _serve(
    websocket: WebSocket,
    gateway: Gateway,
    access: Access,
    subs: list[str],
    raw_cursor: str | None,
) -> None:
    settings = gateway.settings
    await websocket.accept()
    if len(subs) > settings.max_subscriptions or (
        raw_cursor and len(raw_cursor) > settings.max_cursor_bytes
    ):
        reason = (
            f"at most {settings.max_subscriptions} subscriptions and a "
            f"{settings.max_cursor_bytes}-byte event id per connection"
        )
        await websocket.send_text(
            orjson.dumps({"type": "error", "reason": reason}).decode()
        )
        await websocket.close(code=1008, reason="too large")
        return
    try:
        resume = Cursor.decode(raw_cursor) if raw_cursor else None
        specs = await gateway.parse_subscriptions(subs, access)
    except (PgPulseError, ValueError) as exc:
        await websocket.send_text(
            orjson.dumps({"type": "error", "reason": str(exc)}).decode()
        )
        await websocket.close(code=1008, reason="bad subscription")
        return

    client = websocket.client
    label = f"ws {client.host if client else '?'}:{client.port if client else 0}"
    outbox = Outbox(gateway.settings.outbox_limit)
    subscriber = Subscriber("ws", outbox, label)
    subscriber.expires_at = access.claims.expires_at
    refs: dict[str, list[Subscription]] = {}
    lives: dict[str, SharedQuery] = {}
    writer = asyncio.create_task(_write(websocket, outbox))
    try:
        await gateway.attach(subscriber, specs, resume)
        # The handshake's subscriptions answer to "0", "1", ... (their tags in
        # events), so a client can unsubscribe them like any other.
        for sub in subscriber.subscriptions:
            refs.setdefault(sub.ref, []).append(sub)
        reader = asyncio.create_task(
            _read(websocket, gateway, subscriber, refs, lives, access)
        )
        done, _ = await asyncio.wait(
            {writer, reader}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (writer, reader):
            if task not in done:
                task.cancel()
        await asyncio.gather(writer, reader, return_exceptions=True)
        if outbox.closed and not outbox.closed.startswith("client"):
            log.warning("disconnecting %s: %s", label, outbox.closed)
            kind = AUTH_EXPIRED if outbox.closed.startswith(AUTH_EXPIRED) else "error"
            await websocket.send_text(
                orjson.dumps({"type": kind, "reason": outbox.closed}).decode()
            )
            await websocket.close(code=1013, reason=outbox.closed[:120])
    except WebSocketDisconnect:
        pass
    finally:
        writer.cancel()
        gateway.detach(subscriber)
        for shared in lives.values():
            gateway.live.leave(shared, outbox)


async def _write(websocket: WebSocket, outbox: Outbox) -> None:
    while True:
        chunks = await outbox.get()
        if outbox.closed is not None:
            return
        for chunk in chunks:
            await websocket.send_text(chunk.decode())


async def _read(
    websocket: WebSocket,
    gateway: Gateway,
    subscriber: Subscriber,
    refs: dict[str, list[Subscription]],
    lives: dict[str, SharedQuery],
    access: Access,
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            subscriber.outbox.close("client disconnected")
            return
        # Accept text and binary frames alike (many clients send JSON as bytes).
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        limit = gateway.settings.max_ws_message_bytes
        if len(text) > limit:
            subscriber.outbox.close(
                f"client sent a message of {len(text)} bytes; at most {limit} "
                "are accepted"
            )
            return
        reply = await _handle(text, gateway, subscriber, refs, lives, access)
        if reply is not None:
            subscriber.outbox.put(orjson.dumps(reply))


async def _handle(
    text: str,
    gateway: Gateway,
    subscriber: Subscriber,
    refs: dict[str, list[Subscription]],
    lives: dict[str, SharedQuery],
    access: Access,
) -> dict[str, Any] | None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"type": "error", "reason": "messages must be JSON objects"}
    if not isinstance(message, dict):
        return {"type": "error", "reason": "messages must be JSON objects"}
    kind = message.get("type")
    ref = str(message.get("ref", ""))
    if kind == "subscribe":
        sub = message.get("sub")
        if not isinstance(sub, str) or not ref:
            return {
                "type": "error",
                "ref": ref,
                "reason": "subscribe needs 'ref' and 'sub' (e.g. 'documents:id=eq.1')",
            }
        if ref in refs:
            return {"type": "error", "ref": ref, "reason": f"ref {ref!r} is in use"}
        limit = gateway.settings.max_subscriptions
        if len(subscriber.subscriptions) >= limit:
            return {
                "type": "error",
                "ref": ref,
                "reason": f"at most {limit} subscriptions per connection",
            }
        try:
            (spec,) = await gateway.parse_subscriptions([sub], access)
        except (PgPulseError, ValueError) as exc:
            return {"type": "error", "ref": ref, "reason": str(exc)}
        await gateway.bus.settled()
        refs[ref] = [gateway.bus.subscribe(subscriber, spec, ref)]
        cursor = gateway.bus.cursor()
        return {
            "type": "subscribed",
            "ref": ref,
            "sub": sub,
            "cursor": cursor.encode() if cursor else None,
        }
    if kind == "live":
        return await _live(message, ref, gateway, subscriber, refs, lives, access)
    if kind == "unsubscribe":
        shared = lives.pop(ref, None)
        if shared is not None:
            gateway.live.leave(shared, subscriber.outbox)
            return {"type": "unsubscribed", "ref": ref}
        subs = refs.pop(ref, None)
        if subs is None:
            return {"type": "error", "ref": ref, "reason": f"no subscription {ref!r}"}
        for sub in subs:
            gateway.bus.unsubscribe(sub)
        return {"type": "unsubscribed", "ref": ref}
    if kind == "ping":
        return {"type": "pong"}
    return {
        "type": "error",
        "reason": (
            f"unknown message type {kind!r}; use subscribe, live, unsubscribe or ping"
        ),
    }


_LIVE_KEYS = ("table", "select", "order", "limit")


async def _live(
    message: dict[str, Any],
    ref: str,
    gateway: Gateway,
    subscriber: Subscriber,
    refs: dict[str, list[Subscription]],
    lives: dict[str, SharedQuery],
    access: Access,
) -> dict[str, Any] | None:
    """Start a live query on this connection: the acknowledgement (with the
    query's id, which its frames carry), then its snapshot or the patches
    after ``last_event_id``."""
    if not ref:
        return {"type": "error", "reason": "live needs a 'ref' and a 'table'"}
    auth_on = gateway.auth.enabled or gateway.authenticate is not None
    if not gateway.settings.rest_enabled and not auth_on:
        return {
            "type": "error",
            "ref": ref,
            "reason": "live queries read like the REST endpoint, which is "
            "disabled; start the gateway with --rest or set PGPULSE_REST=1",
        }
    if ref in refs or ref in lives:
        return {"type": "error", "ref": ref, "reason": f"ref {ref!r} is in use"}
    limit = gateway.settings.max_subscriptions
    if len(subscriber.subscriptions) + len(lives) >= limit:
        return {
            "type": "error",
            "ref": ref,
            "reason": f"at most {limit} subscriptions per connection",
        }
    items = [(k, str(message[k])) for k in _LIVE_KEYS if message.get(k) is not None]
    filters = message.get("filters") or {}
    if not isinstance(filters, dict):
        return {"type": "error", "ref": ref, "reason": "filters must be an object"}
    items += [(str(k), str(v)) for k, v in filters.items()]
    last_id = message.get("last_event_id")
    try:
        query = LiveQuery.from_params(items)
        plan = await plan_live(gateway, access, query)
    except (PgPulseError, ValueError) as exc:
        return {"type": "error", "ref": ref, "reason": str(exc)}
    outbox = subscriber.outbox
    shared = await gateway.live.join(plan.query_id, plan.create, outbox, "ws")
    await shared.ready.wait()
    if shared.failed is not None:
        gateway.live.leave(shared, outbox)
        return {"type": "error", "ref": ref, "reason": shared.failed}
    lives[ref] = shared
    outbox.put(orjson.dumps({"type": "live", "ref": ref, "query": shared.id}))
    missed = shared.resumes(str(last_id), "ws") if last_id else None
    for frame in missed if missed is not None else [shared.snapshot("ws")]:
        outbox.put(frame)
    return None
