"""The per-process runtime: listener + bus + a small pool, and client attachment.

Why separate from the HTTP layer: SSE, WebSocket, ``pgpulse tail`` and Python
consumers all attach subscribers the same way, and the ordering rules of that
handshake are what guarantee "nothing lost, nothing twice":

1. register the subscriptions on the bus first (live events start flowing),
2. then either start at the bus position (fresh) or read the missed changes
   (from the log in one snapshot N, or behind a broker from its stream up to
   the read ending at N) while holding live events back (resume),
3. release held live events not visible in N, and skip later live events that
   are visible in N until the listener has passed N.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.requests import HTTPConnection

from pgpulse import capture
from pgpulse.auth.access import OPEN, Access
from pgpulse.auth.config import AuthSettings
from pgpulse.auth.identity import Authenticate, identify
from pgpulse.auth.policies import Policies
from pgpulse.auth.rls import RowSecurity
from pgpulse.auth.streams import AUTH_EXPIRED, StreamQuota, expire_at
from pgpulse.capture import WatchedTable
from pgpulse.capture.decoder import Decoder
from pgpulse.capture.privileges import check_schema
from pgpulse.catalog import Catalog
from pgpulse.config import Settings
from pgpulse.exceptions import UnknownTableError
from pgpulse.live.registry import LiveQueries
from pgpulse.log import prune
from pgpulse.log.cursor import Cursor
from pgpulse.log.listener import Listener

if TYPE_CHECKING:
    from pgpulse.broker.feed import StreamFeed
from pgpulse.routing.bus import Bus, Subscriber
from pgpulse.routing.catch_up import CATCH_UP_FAILED, abandon, read_missed
from pgpulse.routing.subscriptions import (
    SubscriptionSpec,
    build_spec,
    parse_subscription,
    resolve,
)
from pgpulse.routing.wire import control_event

__all__ = ["AUTH_EXPIRED", "CATCH_UP_FAILED", "Gateway", "cancel_and_wait"]

#: Why a stream ends when its gateway stops (the client resumes elsewhere).
SHUTTING_DOWN = "server shutting down; reconnect to resume"

log = logging.getLogger("pgpulse.gateway")

_RESOLVED_LIMIT = 10_000  # subscriptions whose filter check is remembered


async def cancel_and_wait(task: asyncio.Task[Any], again_after: float = 3.0) -> None:
    """Cancel *task* and wait until it has ended, cancelling it again every
    *again_after* seconds: on Python 3.11, ``asyncio.wait_for`` swallows a
    cancellation that lands just as what it waits for completes, and the task
    would run on (a shutdown that never ended, seen under load).  The default
    outlasts the tasks' own bounded clean-ups (the listener's deregistration,
    1 s; the decoder's writer close, 2 s), so only a task that ignored its
    cancel is cancelled again.  Its error, if any, is left to whoever logged
    it (see ``Gateway._on_task_done``)."""
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=again_after)
        if not task.done():
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved: logged already, not "never retrieved"


class Gateway:
    """Everything one process needs to serve subscribers."""

    def __init__(
        self,
        settings: Settings,
        *,
        auth: AuthSettings | None = None,
        authenticate: Authenticate | None = None,
    ) -> None:
        """*auth*: token verification and policies (``pgpulse.toml``; off
        when None); *authenticate*: an application's own hook, an async
        callable turning a request into :class:`~pgpulse.auth.identity.Claims`
        (or None), tried before tokens."""
        self.settings = settings
        self.auth = auth or AuthSettings()
        self.authenticate = authenticate
        self.bus = Bus()
        self.bus.row_security = RowSecurity()
        self.live = LiveQueries()
        """Live queries (``/v1/live``), refreshed after the batches that touch
        their tables."""
        self.bus.observers.append(self.live.observe)
        self.catalog = Catalog()
        self.watched: dict[str, WatchedTable] = {}
        self.pool: Any = None
        self.listener: Listener | StreamFeed = self._follower()
        """Where batches come from: the log, or the relay's stream."""
        self.decoder: Decoder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._catalog_refreshed_at = 0.0
        self.catalog_generation = 0
        """Counts catalog reads: what was built on an older one is rebuilt."""
        self._catalog_lock = asyncio.Lock()
        self._catalog_stale = False
        self._oneshots: set[asyncio.Task[None]] = set()
        self._expiries: dict[int, asyncio.TimerHandle] = {}
        self.quota = StreamQuota(settings.max_connections_per_user)
        self._resolved: dict[tuple[str, str, str], SubscriptionSpec] = {}
        """Subscriptions checked by PostgreSQL, by table, text and rules."""
        self.resumes = {"stream": 0, "log": 0}
        """Resumes served from the broker's stream or from the change log."""

    def _follower(self) -> Listener | StreamFeed:
        settings = self.settings
        if settings.broker:
            from pgpulse.broker.feed import StreamFeed

            # The pool exists once started; the feed asks for it then.
            return StreamFeed(
                settings.broker,
                lambda: self.pool,
                self.bus.on_batch,
                self.catalog.short_name,
                prepare=self.bus.prepare,
                needs_database=self.bus.needs_database,
                idle=settings.keepalive,
                application_name=f"{settings.application_name}-gateway",
            )
        return Listener(
            settings.listener_url or settings.database_url,
            self.bus.on_batch,
            self.catalog.short_name,
            keepalive=settings.keepalive,
            query_timeout=settings.query_timeout,
            application_name=f"{settings.application_name}-listener",
            prepare=self.bus.prepare,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        # A separate listener URL means the pool's goes through a pooler
        # (PgBouncer before 1.21 keeps no prepared statements in transaction
        # mode): no statement cache then.
        pooled = self.settings.listener_url is not None
        self.pool = await asyncpg.create_pool(
            self.settings.database_url,
            statement_cache_size=0 if pooled else 100,
            min_size=0,
            max_size=self.settings.pool_size,
            server_settings={"application_name": self.settings.application_name},
        )
        async with self.pool.acquire() as conn:
            # Without the rights to install the capture schema, say which
            # command does (an admin's `pgpulse setup --grant ROLE`).
            await check_schema(conn)
            await capture.install_schema(conn)
            await self._load_catalog(conn)
        self.listener.on_message = self._on_message
        if not isinstance(self.listener, Listener):
            self.listener.on_restart = lambda why: self.close_streams(
                f"{why}; reconnect with your last event id to resume"
            )
        self._spawn(self.listener.run(), "listener")
        if self.settings.decode_wal:
            self.decoder = Decoder(
                # Replication needs a direct connection, as the listener does.
                self.settings.listener_url or self.settings.database_url,
                pool=self.pool,
                application_name=f"{self.settings.application_name}-decoder",
            )
            self._spawn(self.decoder.run(), "decoder")
        self._spawn(self._heartbeat(), "heartbeat")
        self._spawn(self.live.upkeep(min(self.settings.heartbeat, 10.0)), "live")
        if self.settings.retention_seconds or self.settings.retention_rows:
            self._spawn(self._pruner(), "pruner")
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the listener has a position to hand to new clients
        (raises the listener's reason if it stopped for good)."""
        async with asyncio.timeout(timeout):
            while self.bus.position is None:
                if self.listener.fatal is not None:
                    raise self.listener.fatal
                await asyncio.sleep(0.01)

    def close_streams(self, reason: str = SHUTTING_DOWN) -> None:
        """Tell every client to reconnect (the process is stopping, or its
        feed starts over): each stream ends with the reason, and clients
        resume from their last event id."""
        for subscriber in list(self.bus.subscribers):
            subscriber.outbox.close(reason)
        self.live.close_streams(reason)

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._oneshots]
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
        self._tasks.clear()
        self.close_streams()
        await self.live.close()
        if self.pool is not None:
            try:
                # Graceful close waits for every connection to be released.
                await asyncio.wait_for(self.pool.close(), 5.0)
            except TimeoutError:
                log.warning("database pool did not close within 5 s; terminating")
                self.pool.terminate()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"pgpulse-{name}")
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    @staticmethod
    def _on_task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task %s failed", task.get_name(), exc_info=task.exception()
            )

    # -- catalog ----------------------------------------------------------------------

    async def _load_catalog(self, conn: Any) -> None:
        await self.catalog.refresh(conn)
        self.catalog_generation += 1
        self._resolved.clear()
        if self.bus.row_security is not None:
            self.bus.row_security.forget()
        self.watched = {w.name: w for w in await capture.watched(conn)}
        self._catalog_refreshed_at = asyncio.get_running_loop().time()
        # Live queries read again with the tables' new shapes.
        self.live.on_catalog()

    def _on_message(self, payload: str) -> None:
        """A message on the listener's channel that is not a wake-up."""
        if payload == "wal" and self.decoder is not None:
            self.decoder.wake(payload)
        elif payload == "catalog":
            # A table was watched or unwatched, or a migration applied: read
            # the catalog again now, and on the next unknown table even if
            # that is soon.
            self.schedule_catalog_refresh()

    def schedule_catalog_refresh(self) -> None:
        """Read the catalog again soon (it is known to be out of date)."""
        self._catalog_stale = True
        self._spawn_once(self.refresh_catalog(), "catalog")

    def _spawn_once(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"pgpulse-{name}")
        self._oneshots.add(task)
        task.add_done_callback(self._oneshots.discard)
        task.add_done_callback(self._on_task_done)

    async def refresh_catalog(self, min_age: float = 2.0) -> None:
        """Re-read catalog and watch list (rate limited: callers are clients)."""
        async with self._catalog_lock:
            now = asyncio.get_running_loop().time()
            if not self._catalog_stale and now - self._catalog_refreshed_at < min_age:
                return
            self._catalog_stale = False
            async with self.pool.acquire() as conn:
                await self._load_catalog(conn)

    async def identify(self, connection: HTTPConnection) -> Access:
        """What the sender of *connection* may read (raises AuthError)."""
        if not self.auth.enabled and self.authenticate is None:
            return OPEN
        claims = await identify(connection, self.auth.auth, self.authenticate)
        return Access(claims, self.auth.policies or Policies({}))

    def admit(self, access: Access) -> Callable[[], None]:
        """Count one more open stream for the caller's user; raises
        :class:`AuthError` (429) past ``max_connections_per_user``.  Returns
        the function that releases it."""
        return self.quota.admit(access)

    async def parse_subscriptions(
        self, texts: Iterable[str], access: Access = OPEN
    ) -> list[SubscriptionSpec]:
        """Validate ``sub`` values; refreshes the catalog once on unknown tables.

        PostgreSQL checks each filter and spells its literals
        (:func:`~pgpulse.routing.subscriptions.resolve`); the result is cached
        per filter text until the catalog is read again.
        """
        texts = list(texts)
        try:
            requests = [
                parse_subscription(t, self.catalog, self.watched, access) for t in texts
            ]
        except UnknownTableError:
            await self.refresh_catalog()
            requests = [
                parse_subscription(t, self.catalog, self.watched, access) for t in texts
            ]
        specs: list[SubscriptionSpec] = []
        for request in requests:
            key = request.key
            spec = self._resolved.get(key)
            if spec is None:
                if request.filters:
                    async with self.pool.acquire() as conn:
                        spec = await resolve(request, conn)
                else:
                    spec = build_spec(request, {})
                if len(self._resolved) >= _RESOLVED_LIMIT:
                    self._resolved.pop(next(iter(self._resolved)))
                self._resolved[key] = spec
            specs.append(spec)
        return specs

    # -- attaching subscribers -----------------------------------------------------

    async def attach(
        self,
        subscriber: Subscriber,
        specs: list[SubscriptionSpec],
        resume: Cursor | None,
    ) -> None:
        """Register *specs* and queue ``ready`` (+ the missed changes) for a client."""
        await self.wait_ready()
        await self.bus.settled()
        for i, spec in enumerate(specs):
            self.bus.subscribe(subscriber, spec, str(i))
        expiry = expire_at(subscriber.outbox, subscriber.expires_at)
        if expiry is not None:
            self._expiries[subscriber.id] = expiry
        start = resume if resume is not None else self.bus.cursor()
        assert start is not None
        # Behind a broker, what the bus has of the stream as the client joins
        # (before any await): a resume the stream still holds is read there.
        feed = None if isinstance(self.listener, Listener) else self.listener
        bounds = feed.bounds() if feed is not None and resume is not None else None
        # A fresh client starts at the bus position, unless a large batch is
        # being dispatched in chunks: then it reads that batch from the log too.
        behind = resume is not None or self.bus.in_batch
        if behind:
            subscriber.begin_catch_up()
        subscriber.outbox.put(
            control_event(
                subscriber.transport,
                "ready",
                {"cursor": start.encode(), "resumed": resume is not None},
                start.encode(),
            )
        )
        if not behind:
            return
        tables = sorted({s.table for s in specs})
        source = None
        try:
            if feed is not None and bounds is not None:
                source = await feed.replay(
                    bounds, start, tables, self.catalog.short_name
                )
            if resume is not None:
                self.resumes["log" if source is None else "stream"] += 1
            reached = await read_missed(
                self.pool,
                self.bus,
                subscriber,
                tables,
                start,
                self.catalog.short_name,
                self.settings,
                source,
            )
        except asyncio.CancelledError:
            subscriber.pending = None
            raise
        except Exception as exc:
            abandon(self.bus, subscriber, exc, "log" if source is None else "stream")
            return
        self.bus.finish_catch_up(subscriber, reached)

    def detach(self, subscriber: Subscriber) -> None:
        handle = self._expiries.pop(subscriber.id, None)
        if handle is not None:
            handle.cancel()
        self.bus.remove(subscriber)

    # -- background work ----------------------------------------------------------

    async def _heartbeat(self) -> None:
        ping = b": ping\n\n"
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            cursor = self.bus.cursor()
            advance = (
                f"id: {cursor.encode()}\n".encode() + ping
                if cursor is not None and not self.bus.in_batch
                else ping
            )
            for subscriber in list(self.bus.subscribers):
                if subscriber.transport != "sse" or subscriber.pending is not None:
                    continue
                subscriber.outbox.put(advance if subscriber.skip is None else ping)

    async def _pruner(self) -> None:
        await prune.run_pruner(self.pool, self.settings, lambda: self.bus.changes)
