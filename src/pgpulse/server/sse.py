"""``GET /v1/events``: Server-Sent Events, one connection for many subscriptions.

Deliberate choices (do not "fix" without reading why):

* Raw ASGI instead of ``StreamingResponse``: we need the task that is blocked in
  ``send`` (a stalled client; uvicorn's flow control blocks it) to be cancellable
  from the bus side when its outbox overflows, and to watch ``http.disconnect``
  with one extra task instead of a poll.
* Everything queued since the last write goes out in one ``send`` (batching).
* A malformed ``Last-Event-ID`` is a 400, not a silent restart: it means a bug in
  the client or a proxy, and silently restarting would lose data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from pgpulse.exceptions import AuthError, CursorError, PgPulseError, UnknownTableError
from pgpulse.gateway import AUTH_EXPIRED, SHUTTING_DOWN, Gateway
from pgpulse.log.cursor import Cursor
from pgpulse.routing.bus import Subscriber
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.wire import control_event

__all__ = [
    "DirectStream",
    "chunked_cycle",
    "events_endpoint",
    "json_error",
    "watch_disconnect",
]

log = logging.getLogger("pgpulse.sse")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]


async def json_error(
    send: Send,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _challenge(exc: AuthError) -> list[tuple[bytes, bytes]]:
    """``WWW-Authenticate`` for a 401 (RFC 6750)."""
    if exc.status != 401:
        return []
    reason = str(exc).replace('"', "'")
    value = f'Bearer error="invalid_token", error_description="{reason}"'
    return [(b"www-authenticate", value.encode("latin-1", "replace"))]


def client_label(scope: Scope, subs: list[str]) -> str:
    client = scope.get("client") or ("?", 0)
    return f"{client[0]}:{client[1]} [{', '.join(subs)[:200]}]"


def cors_headers(request: Request, allowed: list[str]) -> list[tuple[bytes, bytes]]:
    """CORS for the stream (it bypasses Starlette's middleware, see app.py)."""
    origin = request.headers.get("origin")
    if origin is None or not allowed:
        return []
    if "*" in allowed:
        return [(b"access-control-allow-origin", b"*")]
    if origin in allowed:
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
    return []


async def events_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] not in ("GET", "HEAD"):
        await json_error(send, 405, "use GET /v1/events?sub=TABLE")
        return
    gateway: Gateway = scope["app"].state.gateway
    request = Request(scope)
    cors = cors_headers(request, gateway.settings.cors_origins)
    subs = request.query_params.getlist("sub")
    if not subs:
        await json_error(
            send,
            400,
            "subscribe to at least one table: /v1/events?sub=documents "
            "(optionally with filters: sub=documents:shipment_id=eq.42)",
            cors,
        )
        return
    raw_cursor = request.query_params.get("last_event_id") or request.headers.get(
        "last-event-id"
    )
    settings = gateway.settings
    if len(subs) > settings.max_subscriptions:
        await json_error(
            send,
            400,
            f"{len(subs)} subscriptions in one stream; at most "
            f"{settings.max_subscriptions} are accepted",
            cors,
        )
        return
    if raw_cursor and len(raw_cursor) > settings.max_cursor_bytes:
        await json_error(
            send,
            400,
            f"the event id is {len(raw_cursor)} bytes; at most "
            f"{settings.max_cursor_bytes} are accepted",
            cors,
        )
        return
    try:
        access = await gateway.identify(request)
        resume = Cursor.decode(raw_cursor) if raw_cursor else None
        specs = await gateway.parse_subscriptions(subs, access)
        release = gateway.admit(access)
    except AuthError as exc:
        await json_error(send, exc.status, str(exc), cors + _challenge(exc))
        return
    except UnknownTableError as exc:
        await json_error(send, 404, str(exc), cors)
        return
    except (PgPulseError, ValueError) as exc:
        status = 400
        message = str(exc)
        if isinstance(exc, CursorError):
            message += "; reconnect without Last-Event-ID to start from now"
        await json_error(send, status, message, cors)
        return

    label = client_label(scope, subs)
    if access.claims.subject is not None:
        label = f"{label} user {access.claims.subject}"
    stream = DirectStream(send, label, asyncio.current_task())
    outbox = Outbox(gateway.settings.outbox_limit, stream.on_close)
    stream.outbox = outbox
    outbox.direct = stream.write_now
    subscriber = Subscriber("sse", outbox, label)
    subscriber.expires_at = access.claims.expires_at
    headers = SSE_HEADERS + cors
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    stream.cycle = chunked_cycle(send)
    outbox.put(f"retry: {gateway.settings.retry_ms}\n\n".encode())
    watcher = asyncio.create_task(watch_disconnect(receive, outbox))
    attach = asyncio.create_task(gateway.attach(subscriber, specs, resume))
    attach.add_done_callback(lambda task: _attach_done(task, subscriber, gateway))
    try:
        await stream.serve(attach)
    finally:
        release()
        stream.discard()
        gateway.detach(subscriber)
        for task in (watcher, attach):
            task.cancel()
        await asyncio.gather(watcher, attach, return_exceptions=True)


def _attach_done(
    task: asyncio.Task[None], subscriber: Subscriber, gateway: Gateway
) -> None:
    """An attach that failed unexpectedly ends the stream at once: no live
    event may be written after a handshake that did not complete."""
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    log.error("attaching %s failed: %r", subscriber.label, exc)
    gateway.detach(subscriber)
    subscriber.outbox.close(f"server error while attaching: {exc}; reconnect")


class DirectStream:
    """Writes one client's events: synchronously from the bus when the socket
    takes them (:meth:`write_now`), otherwise from this client's own task.

    ``send`` is uvicorn's, which completes without suspending unless flow
    control pauses writing.  ``write_now`` steps the ``send`` coroutine once; if
    it suspends (the socket pushed back), the half-done write is handed to the
    client's task, which finishes it exactly as an asyncio Task would (await the
    future it yielded, resume) before writing anything else, so order holds.
    """

    def __init__(self, send: Send, label: str, handler: asyncio.Task[Any] | None):
        self.send = send
        self.label = label
        self.handler = handler
        self.outbox: Outbox | None = None
        self.sending = False
        """A write is in progress (in this task or handed over to it)."""
        self.pending: tuple[Any, Any] | None = None
        """A suspended ``send`` coroutine and the future it waits on."""
        self.cycle: Any = None
        """uvicorn's response cycle, when :meth:`write_now` may frame chunks
        onto its transport itself (see :func:`chunked_cycle`)."""

    def on_close(self, reason: str) -> None:
        if reason.startswith("client disconnected"):
            log.debug("%s: %s", self.label, reason)
        else:
            log.warning("disconnecting %s: %s", self.label, reason)
        # A writer stuck in send() (stalled client) can only be stopped by
        # cancelling it; one waiting on the outbox wakes up by itself.
        if self.sending and self.handler is not None:
            self.handler.cancel()

    def write_now(self, chunks: list[bytes]) -> bool:
        """Called by the bus: write *chunks* now; False to leave them queued."""
        if self.sending:
            return False
        cycle = self.cycle
        if cycle is not None and (cycle.flow.write_paused or cycle.disconnected):
            return False  # the client's task waits for the drain
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if cycle is not None:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
            return True
        message = {"type": "http.response.body", "body": body, "more_body": True}
        coro: Any = self.send(message)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except Exception as exc:  # the connection broke under us
            assert self.outbox is not None
            self.outbox.close(f"write failed: {exc!r}")
            return True
        self.sending = True
        self.pending = (coro, waiting)
        assert self.outbox is not None
        self.outbox.wake()
        return True

    async def _finish_pending(self) -> None:
        assert self.pending is not None
        coro, waiting = self.pending
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    # Take over the future exactly as asyncio.Task does when a
                    # coroutine it steps yields one.
                    waiting._asyncio_future_blocking = False
                    await waiting
                waiting = coro.send(None)
        except StopIteration:
            pass
        except BaseException:
            coro.close()
            raise
        finally:
            self.pending = None
            self.sending = False

    def discard(self) -> None:
        if self.pending is not None:
            self.pending[0].close()
            self.pending = None

    async def serve(self, attach: asyncio.Task[None] | None) -> None:
        """:meth:`run`, ending quietly when the server cancels it."""
        try:
            await self.run(attach)
        except asyncio.CancelledError:
            outbox = self.outbox
            assert outbox is not None
            if outbox.closed is None:
                # Nothing of ours cancelled it: the server is shutting down
                # (it cancels the responses still open when its grace period
                # ends).  Tell the client to reconnect, without a traceback.
                outbox.close(SHUTTING_DOWN)
                if not self.sending:
                    with contextlib.suppress(Exception):
                        await self.send(
                            {
                                "type": "http.response.body",
                                "body": control_event(
                                    "sse", "error", {"reason": SHUTTING_DOWN}
                                ),
                                "more_body": False,
                            }
                        )
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()

    async def run(self, attach: asyncio.Task[None] | None) -> None:
        """Write the outbox until it closes; *attach* (None: nothing pending)
        is the task filling it, whose failure ends the stream."""
        outbox = self.outbox
        assert outbox is not None
        while True:
            if self.pending is not None:
                await self._finish_pending()
                continue
            chunks = await outbox.get()
            if self.pending is not None:
                # A direct write suspended while we waited: it goes first.
                await self._finish_pending()
            if (
                attach is not None
                and attach.done()
                and not attach.cancelled()
                and attach.exception()
            ):
                exc = attach.exception()
                log.error("attaching %s failed: %s", self.label, exc)
                outbox.close(f"server error while catching up: {exc}")
            if outbox.closed is not None:
                if not outbox.closed.startswith("client disconnected"):
                    self.sending = True
                    expired = outbox.closed.startswith(AUTH_EXPIRED)
                    kind = AUTH_EXPIRED if expired else "error"
                    await self.send(
                        {
                            "type": "http.response.body",
                            "body": control_event(
                                "sse", kind, {"reason": outbox.closed}
                            ),
                            "more_body": False,
                        }
                    )
                return
            if not chunks:
                continue
            self.sending = True
            try:
                await self.send(
                    {
                        "type": "http.response.body",
                        "body": b"".join(chunks),
                        "more_body": True,
                    }
                )
            finally:
                self.sending = False


def chunked_cycle(send: Send) -> Any:
    """uvicorn's httptools response cycle behind *send*, if its response is
    chunked and still open, else None.

    Writing a chunk straight to its transport is what its ``send`` does, minus
    a message dict, a coroutine and its checks: about half of the Python per
    client write, on the path that runs once per client per batch.  Any other
    server (or a wrapped ``send``) keeps the plain ASGI path.
    """
    global _contract_warned
    cycle: Any = getattr(send, "__self__", None)
    if type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    if not (
        hasattr(cycle, "chunked_encoding")
        and hasattr(cycle, "response_complete")
        and hasattr(cycle, "transport")
        and hasattr(getattr(cycle, "flow", None), "write_paused")
        and hasattr(cycle, "disconnected")
    ):
        if not _contract_warned:
            _contract_warned = True
            log.warning(
                "this uvicorn's response cycle no longer has the attributes the "
                "SSE fast path writes through; streams use plain ASGI sends "
                "(slower). Install a uvicorn version pyproject.toml allows."
            )
        return None
    if cycle.chunked_encoding is True and not cycle.response_complete:
        return cycle
    return None


_contract_warned = False


async def watch_disconnect(receive: Receive, outbox: Outbox) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            outbox.close("client disconnected")
            return
