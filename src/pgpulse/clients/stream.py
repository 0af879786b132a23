"""Python clients: over HTTP (SSE) from anywhere, or in-process from the database.

``Client`` talks to a gateway like a browser does: one SSE connection for many
subscriptions, automatic reconnect with capped backoff, and resume from the last
event id, so a consumer sees every change once even across gateway restarts.

``changes`` runs the listener in-process (one database connection) for workers
and scripts that have no gateway to talk to.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from pgpulse.backoff import Backoff
from pgpulse.clients.live import Filters, live_params, live_rows
from pgpulse.exceptions import AuthError, ValidationError
from pgpulse.routing.values import loads_exact

__all__ = ["Client", "Event", "changes"]

log = logging.getLogger("pgpulse.clients.stream")


@dataclass(frozen=True)
class Event:
    """A change (``kind == "change"``) or a ``reset`` (refetch your data)."""

    kind: str
    id: str | None
    """The resume cursor after this event."""
    table: str = ""
    op: str = ""
    pk: dict[str, Any] | None = None
    row: dict[str, Any] | None = None
    """The new row (None for DELETE)."""
    old: dict[str, Any] | None = None
    """The old row (UPDATE/DELETE)."""
    ts: str = ""
    moved: bool = False
    """The row moved into (INSERT) or out of (DELETE) the subscription's filter."""
    reason: str = ""
    subs: dict[str, str] | None = None
    """With several subscriptions on one table: which of them (their place in
    ``subscribe(...)``) see this change, and as which operation."""
    change_id: int | None = None
    """Consumer groups: the change's number in the log, the same in every
    delivery of it (``id`` is a position, which depends on the read):
    deduplicate by this."""

    @classmethod
    def from_change(cls, event_id: str | None, data: dict[str, Any]) -> Event:
        return cls(
            kind="change",
            id=event_id,
            table=data["table"],
            op=data["op"],
            pk=data["pk"],
            row=data["row"],
            old=data["old"],
            ts=data["ts"],
            moved=bool(data.get("moved", False)),
            subs=data.get("subs"),
        )


TokenSource = str | Callable[[], str | Awaitable[str]]


class Client:
    """Subscribe to a pgpulse gateway over SSE.

    ``url`` is the gateway's base URL (``http://localhost:8000``); ``token`` a
    JWT, or a function (async or not) returning a fresh one, called again when
    the gateway ends the stream at the token's expiry (``auth_expired``) or
    refuses it; the stream then resumes from the last event id.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        headers: dict[str, str] | None = None,
        backoff_max: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = headers or {}
        self.backoff_max = backoff_max
        self._token_source = token
        self._token: str | None = token if isinstance(token, str) else None
        self._token_stale = callable(token)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
        self.last_event_id: str | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def subscribe(
        self, *subs: str, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Yield events for ``subs`` (``"documents:shipment_id=eq.42"``) forever.

        Reconnects on network errors and resumes where it left off; raises
        :class:`ValidationError` when the gateway rejects the subscription.
        """
        if not subs:
            raise ValidationError("subscribe to at least one table")
        self.last_event_id = last_event_id
        attempt = 0
        refused = False
        while True:
            params: list[tuple[str, str]] = [("sub", s) for s in subs]
            if self.last_event_id:
                params.append(("last_event_id", self.last_event_id))
            await self._refresh_token()
            headers = dict(self.headers)
            if self._token:
                headers["authorization"] = f"Bearer {self._token}"
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    self.url + "/v1/events",
                    params=params,
                    headers=headers,
                ) as source:
                    response = source.response
                    if (
                        response.status_code == 401
                        and callable(self._token_source)
                        and not refused
                    ):
                        # Expired while we were away: one try with a new one.
                        await response.aread()
                        refused = self._token_stale = True
                        continue
                    if 400 <= response.status_code < 500:
                        await response.aread()
                        raise ValidationError(_error_message(response))
                    refused = False
                    response.raise_for_status()
                    async for sse in source.aiter_sse():
                        attempt = 0
                        if sse.id:
                            self.last_event_id = sse.id
                        if sse.event == "change":
                            yield Event.from_change(sse.id, loads_exact(sse.data))
                        elif sse.event == "reset":
                            reason = loads_exact(sse.data).get("reason", "")
                            yield Event(kind="reset", id=sse.id, reason=reason)
                        elif sse.event == "auth_expired":
                            self._token_stale = callable(self._token_source)
                            if not self._token_stale:
                                raise AuthError(
                                    "the token expired; pass a function "
                                    "as token= to renew it"
                                )
                            attempt = -1  # resume at once with the new token
                        elif sse.event == "error":
                            log.warning("gateway closed the stream: %s", sse.data)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                log.info("connection to %s lost (%s); reconnecting", self.url, exc)
            if attempt < 0:
                attempt = 0
                continue
            delay = Backoff(0.2, self.backoff_max, attempt=attempt).next()
            attempt += 1
            await asyncio.sleep(delay)

    def live(
        self,
        table: str,
        *,
        select: str = "*",
        filters: Filters = None,
        order: str | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The rows of a query, now and after every change that alters them::

            async for rows in client.live("documents", filters={"status":
                    "eq.final"}, order="updated_at.desc", limit=50):
                render(rows)

        The REST grammar (``select``, filters, ``order``, ``limit``); rows are
        yielded at every consistent point, across reconnects.  For the patches
        themselves, see :func:`pgpulse.clients.live.live_events`."""
        return live_rows(self, live_params(table, select, filters, order, limit))

    async def _refresh_token(self) -> None:
        source = self._token_source
        if not self._token_stale or not callable(source):
            return
        self._token_stale = False
        token = source()
        if inspect.isawaitable(token):
            token = await token
        self._token = str(token) if token is not None else None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"gateway answered {response.status_code}: {response.text[:200]}"


async def changes(
    database_url: str, *subs: str, last_event_id: str | None = None
) -> AsyncGenerator[Event, None]:
    """Yield changes straight from the database (no gateway), same semantics.

    Uses one listener connection and a one-connection pool for catch-up (and,
    while no gateway decodes tables watched with ``source="wal"``, a replication
    connection and a log writer to do it).
    """
    from pgpulse.config import Settings
    from pgpulse.gateway import Gateway
    from pgpulse.log.cursor import Cursor
    from pgpulse.routing.bus import Subscriber
    from pgpulse.routing.outbox import Outbox

    settings = Settings(
        database_url=database_url,
        retention_seconds=None,
        pool_size=1,
        application_name="pgpulse-consumer",
    )
    gateway = Gateway(settings)
    await gateway.start()
    last = last_event_id
    attempt = 0
    try:
        specs = await gateway.parse_subscriptions(subs)
        while True:
            outbox = Outbox(limit=256 * 1024 * 1024)
            subscriber = Subscriber("ws", outbox, "python consumer")
            resume = Cursor.decode(last) if last else None
            # Attaching reads the backlog into the outbox, with backpressure:
            # it must run while this loop drains it.
            attach = asyncio.create_task(gateway.attach(subscriber, specs, resume))
            try:
                while outbox.closed is None:
                    for chunk in await outbox.get():
                        message = loads_exact(chunk.decode())
                        kind = message.get("type")
                        if kind == "change":
                            last = message["id"]
                            attempt = 0
                            yield Event.from_change(message["id"], message["data"])
                        elif kind == "reset":
                            last = None
                            yield Event(kind="reset", id=None, reason=message["reason"])
                        elif kind == "ready" and last is None:
                            last = message["cursor"]
            finally:
                attach.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await attach
                gateway.detach(subscriber)
            # The log is durable: whatever ended this attachment (a failed
            # catch-up, falling too far behind), carry on from the last change.
            log.warning("stream ended (%s); resuming from %s", outbox.closed, last)
            await Backoff(0.1, 5.0, attempt=attempt).wait()
            attempt += 1
    finally:
        await gateway.stop()
