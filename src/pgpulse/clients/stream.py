"""Python clients: over HTTP (SSE) from anywhere, or in-process from the database.

``Client`` talks to a gateway like a browser does: one SSE connection for many
subscriptions, automatic reconnect with capped backoff, and resume from the last
event id, so a consumer sees every change once even across gateway restarts.

``changes`` runs the listener in-process (one database connection) for workers
and scripts that have no gateway to talk to.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from pgpulse.exceptions import PgPulseError, ValidationError
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


class Client:
    """Subscribe to a pgpulse gateway over SSE.

    ``url`` is the gateway's base URL (``http://localhost:8000``).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        backoff_max: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = headers or {}
        self.backoff_max = backoff_max
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
        while True:
            params: list[tuple[str, str]] = [("sub", s) for s in subs]
            if self.last_event_id:
                params.append(("last_event_id", self.last_event_id))
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    self.url + "/v1/events",
                    params=params,
                    headers=self.headers,
                ) as source:
                    response = source.response
                    if 400 <= response.status_code < 500:
                        await response.aread()
                        raise ValidationError(_error_message(response))
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
                        elif sse.event == "error":
                            log.warning("gateway closed the stream: %s", sse.data)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                log.info("connection to %s lost (%s); reconnecting", self.url, exc)
            delay = min(self.backoff_max, 0.2 * 2**attempt) * (0.5 + random.random())
            attempt += 1
            await asyncio.sleep(delay)


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
    try:
        specs = await gateway.parse_subscriptions(subs)
        outbox = Outbox(limit=256 * 1024 * 1024)
        subscriber = Subscriber("ws", outbox, "python consumer")
        resume = Cursor.decode(last_event_id) if last_event_id else None
        await gateway.attach(subscriber, specs, resume)
        while True:
            for chunk in await outbox.get():
                message = loads_exact(chunk.decode())
                if message.get("type") == "change":
                    yield Event.from_change(message["id"], message["data"])
                elif message.get("type") == "reset":
                    yield Event(kind="reset", id=None, reason=message["reason"])
            if outbox.closed:
                raise PgPulseError(outbox.closed)
    finally:
        await gateway.stop()
