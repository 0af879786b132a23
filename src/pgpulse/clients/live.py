"""Live queries from Python: over a gateway's ``/v1/live``, or from the
database itself (:func:`live_query`).

Why a generator of whole row lists: server-side code (a cache, a report, a
bot) wants "the rows of this query, now", not patches; it gets them after
every consistent point (a ``snapshot``, or a ``sync`` that ends a patch set),
kept by the same rules as the browser's (:class:`pgpulse.live.view.LiveRows`).
Reconnects resume with the last event id, so a patch set is never half
applied and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import aconnect_sse

from pgpulse.backoff import Backoff
from pgpulse.exceptions import AuthError, ValidationError
from pgpulse.live.view import LiveRows
from pgpulse.routing.values import loads_exact

if TYPE_CHECKING:
    from pgpulse.clients.stream import Client

__all__ = ["live_events", "live_params", "live_query", "live_rows"]

log = logging.getLogger("pgpulse.clients")

Filters = Mapping[str, str] | Iterable[tuple[str, str]] | None

_EVENTS = frozenset({"snapshot", "insert", "update", "delete", "sync"})


def live_params(
    table: str,
    select: str = "*",
    filters: Filters = None,
    order: str | None = None,
    limit: int | None = None,
) -> list[tuple[str, str]]:
    """``/v1/live`` parameters; *filters* in the REST grammar
    (``{"status": "eq.final", "nodes.order": "id"}``)."""
    params = [("table", table), ("select", select)]
    if filters is not None:
        items = filters.items() if isinstance(filters, Mapping) else filters
        params.extend((str(k), str(v)) for k, v in items)
    if order:
        params.append(("order", order))
    if limit is not None:
        params.append(("limit", str(limit)))
    return params


async def live_rows(
    client: Client, params: list[tuple[str, str]]
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The query's rows after every consistent point."""
    view = LiveRows()
    async for kind, data in live_events(client, params):
        if view.apply(kind, data):
            yield view.rows


async def live_events(
    client: Client, params: list[tuple[str, str]]
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """The query's events (``snapshot``, ``insert``, ``update``, ``delete``,
    ``sync``) forever, across reconnects; raises :class:`ValidationError`
    when the gateway refuses the query."""
    last_id: str | None = None
    attempt = 0
    refused = False
    while True:
        await client._refresh_token()
        headers = dict(client.headers)
        if client._token:
            headers["authorization"] = f"Bearer {client._token}"
        if last_id:
            headers["last-event-id"] = last_id
        try:
            async with aconnect_sse(
                client._http,
                "GET",
                client.url + "/v1/live",
                params=params,
                headers=headers,
            ) as source:
                response = source.response
                if (
                    response.status_code == 401
                    and callable(client._token_source)
                    and not refused
                ):
                    await response.aread()
                    refused = client._token_stale = True
                    continue
                if 400 <= response.status_code < 500:
                    await response.aread()
                    raise ValidationError(_message(response))
                refused = False
                response.raise_for_status()
                async for sse in source.aiter_sse():
                    attempt = 0
                    if sse.event in ("auth_expired", "error"):
                        if sse.event == "auth_expired":
                            client._token_stale = callable(client._token_source)
                            if not client._token_stale:
                                raise AuthError(
                                    "the token expired; pass a function as token= "
                                    "to renew it"
                                )
                            attempt = -1
                        else:
                            log.warning("gateway closed the live query: %s", sse.data)
                        break
                    if sse.event not in _EVENTS or not sse.data:
                        continue  # the retry interval, a heartbeat
                    if sse.id:
                        last_id = sse.id
                    yield sse.event, loads_exact(sse.data)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            log.info("live query on %s lost (%s); reconnecting", client.url, exc)
        if attempt < 0:
            attempt = 0
            continue
        delay = Backoff(0.2, client.backoff_max, attempt=attempt).next()
        attempt += 1
        await asyncio.sleep(delay)


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


async def live_query(
    database_url: str,
    table: str,
    *,
    select: str = "*",
    filters: Filters = None,
    order: str | None = None,
    limit: int | None = None,
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """A query's rows from the database itself, no gateway: for server-side
    code (a worker that keeps a report current).  The same live query a
    gateway runs (:mod:`pgpulse.live`), in this process: its own listener
    and a small pool; rows are yielded at every consistent point::

        async for rows in live_query(dsn, "documents", order="id", limit=10):
            ...
    """
    from pgpulse.auth.access import OPEN
    from pgpulse.config import Settings
    from pgpulse.gateway import Gateway
    from pgpulse.live.query import LiveQuery
    from pgpulse.routing.outbox import Outbox
    from pgpulse.server.live_plan import plan_live

    settings = Settings(
        database_url=database_url,
        retention_seconds=None,
        pool_size=2,
        application_name="pgpulse-live",
    )
    gateway = Gateway(settings)
    await gateway.start()
    outbox = Outbox(limit=256 * 1024 * 1024)
    shared = None
    try:
        query = LiveQuery.from_params(live_params(table, select, filters, order, limit))
        plan = await plan_live(gateway, OPEN, query)
        shared = await gateway.live.join(plan.query_id, plan.create, outbox, "ws")
        await shared.ready.wait()
        if shared.failed is not None:
            raise ValidationError(shared.failed)
        outbox.put(shared.snapshot("ws"))
        view = LiveRows()
        while True:
            for frame in await outbox.get():
                message = loads_exact(frame.decode())
                kind = message["type"]
                if kind == "snapshot":
                    view.apply("snapshot", message["data"])
                elif kind == "patch":
                    for op in message["ops"]:
                        view.apply(op.pop("op"), op)
                    view.apply("sync", {"version": message["version"]})
                elif kind == "error":
                    raise ValidationError(str(message.get("reason")))
                else:
                    continue
                yield view.rows
            if outbox.closed is not None:
                raise ValidationError(f"the live query ended: {outbox.closed}")
    finally:
        if shared is not None:
            gateway.live.leave(shared, outbox)
        await gateway.stop()
