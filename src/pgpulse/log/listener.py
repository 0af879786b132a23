"""The one database connection per process that follows the change log.

Why one: a connection per browser is what pgpulse exists to avoid.  The listener
LISTENs on ``pgpulse`` (capture sends one empty wake-up per statement), and on
each wake-up reads the new changes by snapshot cursor (:mod:`pgpulse.log.changelog`)
and hands them to the bus.  With no writes it sends nothing but a keepalive read
every ``keepalive`` seconds; that read doubles as a safety net for any missed
wake-up and detects a dead connection (a socket can stay "open" for minutes after
the server is gone).  On failure it reconnects with capped exponential backoff
and resumes from its cursor, so a PostgreSQL restart loses nothing.

Adaptive wake-ups: NOTIFY serializes committing writers, so when wake-ups come
faster than ``busy_gap`` apart, or one read finds several transactions' changes
(commits arrive faster than we read them, however slow reads are), the listener
switches to polling the log and
tells writers to stop notifying (``pgpulse.set_wakeups``: writers read the
number of listeners wanting wake-ups from the ``pgpulse.wakeups`` sequence).  Below
about 250 wake-ups a second NOTIFY costs little and is the fastest path, so
the listener keeps sleeping on it.  After
``idle_after`` seconds without changes it asks for wake-ups again, and keeps
polling until every transaction that may have read the old flag has ended
(snapshot xmin past the flip), so no change can be left waiting for a wake-up
that nobody sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pgpulse.backoff import Backoff
from pgpulse.exceptions import ConfigurationError
from pgpulse.log.change import Change
from pgpulse.log.changelog import (
    FAST_LIMIT,
    READ_SETTINGS,
    Batch,
    read_batch,
    read_rest,
)
from pgpulse.log.cursor import Snapshot

__all__ = ["Listener", "PoolerError", "check_session", "poll_stretch"]

log = logging.getLogger("pgpulse.log.listener")

CHANNEL = "pgpulse"


_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
    ConnectionError,
)


class PoolerError(ConfigurationError):
    """The listener's connection goes through a transaction-mode pooler."""


async def check_session(conn: Any, dsn: str, timeout: float = 10.0) -> None:
    """Raise :class:`PoolerError` unless *conn* (connected to *dsn*, already
    LISTENing on the pgpulse channel) keeps its session.

    Through a pooler in transaction mode (PgBouncer's usual setting) LISTEN is
    forgotten as soon as the statement ends, and a listener would never wake.
    The test: while a second connection holds a transaction open, *conn* must
    still be listening; through such a pooler the check lands on another
    server connection (no channel), or waits for one.
    """
    other = await asyncpg.connect(dsn, timeout=timeout)
    try:
        async with other.transaction():
            await other.fetchval("select pg_backend_pid()")
            try:
                channels = await asyncio.wait_for(
                    conn.fetchval("select array(select pg_listening_channels())"), 2.0
                )
            except TimeoutError:
                channels = None
    finally:
        await other.close()
    if not channels or CHANNEL not in channels:
        raise PoolerError(
            "the listener's connection does not keep its session (LISTEN was "
            "forgotten): it goes through a pooler in transaction mode, such as "
            "PgBouncer. Give the listener a direct connection with "
            "--listener-url (env PGPULSE_LISTENER_URL); the pool may stay "
            "behind the pooler."
        )


def poll_stretch(count: int) -> int:
    """Poll-interval multiplier after a read that found *count* changes."""
    return 1 if count < 8 else 2 if count < 16 else 4


class Listener:
    """Follows ``pgpulse.changes`` and calls ``on_batch`` for every new batch.

    ``on_batch(batch, final)`` is called synchronously; ``final`` is False for
    the leading chunks of a large batch, read in chunks.
    """

    def __init__(
        self,
        dsn: str,
        on_batch: Callable[[Batch, bool], None],
        name_of: Callable[[str], str],
        *,
        keepalive: float = 5.0,
        query_timeout: float = 10.0,
        poll_interval: float = 0.001,
        busy_gap: float = 0.004,
        idle_after: float = 0.25,
        backoff_max: float = 5.0,
        application_name: str = "pgpulse-listener",
        on_state: Callable[[str], None] | None = None,
        prepare: Callable[[list[Change], Any], Awaitable[None]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.on_batch = on_batch
        self.name_of = name_of
        self.keepalive = keepalive
        self.query_timeout = query_timeout
        self.poll_interval = poll_interval
        self.busy_gap = busy_gap
        self.idle_after = idle_after
        self.polling = False
        """True while the listener polls and writers skip NOTIFY."""
        self._settle: Snapshot | None = None
        self._last_wake = 0.0
        self._idle_since: float | None = None
        self.last_read_transactions = 0
        """0, 1 or 2+ (as 2): transactions whose changes the last read found."""
        self.backoff_max = backoff_max
        self.application_name = application_name
        self.on_state = on_state
        self.prepare = prepare
        """Awaited with each batch's changes and the listener's connection
        before ``on_batch`` (filters the database evaluates: the bus)."""
        self.on_message: Callable[[str], None] | None = None
        """Called with the payload of notifications that are not wake-ups."""
        self.position: Snapshot | None = None
        """Everything visible in this snapshot has been handed to the bus."""
        self.fatal: Exception | None = None
        """Why the listener stopped for good (a connection that cannot LISTEN)."""
        self.pruned_xid = 0
        self.connected = asyncio.Event()
        self.reads = 0
        self._wake = asyncio.Event()
        self._conn: Any = None
        self._dirty = False

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Follow the log until cancelled, reconnecting as needed."""
        backoff = Backoff(initial=0.1, maximum=self.backoff_max)
        while True:
            try:
                await self._connect()
                backoff.reset()
                await self._follow()
            except asyncio.CancelledError:
                await self._leave()
                await self._close()
                raise
            except PoolerError as exc:
                # Retrying cannot help: stop, with the reason, for the gateway
                # to report (Gateway.wait_ready).
                self.fatal = exc
                await self._close()
                raise
            except Exception as exc:  # the one listener must outlive anything
                self.connected.clear()
                self._state("reconnecting")
                await self._close()
                delay = backoff.next()
                if isinstance(exc, _CONNECTION_ERRORS):
                    log.warning(
                        "listener lost the database (%s: %s); reconnecting in %.2fs",
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                else:
                    # asyncpg can also fail a connection that the server cut
                    # mid-query with an InternalClientError; a bug downstream
                    # surfaces here too: log it whole, reconnect, re-read.
                    log.exception(
                        "listener failed (%s: %s); reconnecting in %.2fs",
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                await asyncio.sleep(delay)

    def _state(self, state: str) -> None:
        if self.on_state is not None:
            self.on_state(state)

    async def _connect(self) -> None:
        self._conn = await asyncpg.connect(
            self.dsn,
            timeout=self.query_timeout,
            server_settings={
                "application_name": self.application_name,
                **READ_SETTINGS,
            },
        )
        self._conn.add_termination_listener(lambda _c: self._wake.set())
        await self._conn.add_listener(CHANNEL, self._on_notify)
        await self._check_session()
        await self._register()
        if self.position is None:
            text = await self._conn.fetchval("select pg_current_snapshot()::text")
            self.position = Snapshot.parse(text)
        self.connected.set()
        self._state("connected")
        log.info("listener connected; following the change log from %s", self.position)
        # Catch up on whatever committed while we were away.
        self._wake.set()

    async def _check_session(self) -> None:
        await check_session(self._conn, self.dsn, self.query_timeout)

    async def _register(self) -> None:
        """Join ``pgpulse.listeners`` wanting wake-ups (drops dead entries)."""
        await self._conn.execute("select pgpulse.set_wakeups(true)")
        # Writers that read an older flag may still be running: poll until they
        # are done, exactly as after a switch back from polling.
        self.polling = True
        self._settle = Snapshot.parse(
            await self._conn.fetchval("select pg_current_snapshot()::text")
        )

    async def _want_wakeups(self, want: bool) -> None:
        await self._conn.execute("select pgpulse.set_wakeups($1)", want)
        if want:
            self._settle = Snapshot.parse(
                await self._conn.fetchval("select pg_current_snapshot()::text")
            )
        else:
            self._settle = None
        log.debug("listener %s", "asks for wake-ups" if want else "polls")

    async def _leave(self) -> None:
        """Stop asking for wake-ups (writers notify while any listener asks)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.execute("select pgpulse.leave_wakeups()"), 1.0)
        except Exception as exc:  # best effort: it must not replace the cancel
            log.debug("listener could not deregister (%r); the next one cleans up", exc)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload:
            # Not a writer's wake-up: a message for this process (e.g. "wal":
            # a table is now watched through the WAL; the decoder looks).
            if self.on_message is not None:
                self.on_message(payload)
            return
        self._wake.set()

    def wake(self) -> None:
        """Read now (used by tests and by writers in the same process)."""
        self._wake.set()

    # -- reading ------------------------------------------------------------------

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        count = 0
        empty = 0
        while True:
            if self.polling:
                # Every poll_interval while busy (each read costs the database
                # about the same whatever it finds, so back-to-back reads under
                # heavy writes would spend a core on tiny batches), up to 4x
                # that while reads keep finding 8+ changes (thousands of
                # writes/s: bigger batches, a cheaper reader); at once after a
                # full batch (a backlog); back off (to 64x) only while
                # settling, e.g. waiting out a long transaction before sleeping.
                empty = 0 if count else min(empty + 1, 7)
                if count >= FAST_LIMIT:
                    pass
                elif empty and self._settle is not None:
                    await asyncio.sleep(self.poll_interval * 2 ** (empty - 1))
                else:
                    await asyncio.sleep(self.poll_interval * poll_stretch(count))
            else:
                # asyncio.timeout, not wait_for, in this loop: on Python 3.11
                # wait_for can swallow a cancellation that lands as what it
                # waits for completes (and it costs a task per wait).
                try:
                    async with asyncio.timeout(self.keepalive):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            if self._conn is None or self._conn.is_closed():
                raise ConnectionError("listener connection closed")
            async with asyncio.timeout(self.query_timeout * 6):
                count = await self.read()
            await self._adapt(count, loop.time())

    async def _adapt(self, count: int, now: float) -> None:
        """Switch between wake-ups and polling (see the module docstring)."""
        if not self.polling:
            busy = now - self._last_wake < self.busy_gap
            if count and (busy or self.last_read_transactions > 1):
                self.polling = True
                self._idle_since = None
                await self._want_wakeups(False)
            self._last_wake = now
            return
        if count:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif self._settle is None and now - self._idle_since >= self.idle_after:
            await self._want_wakeups(True)
        settle = self._settle
        if settle is not None and self.position is not None:
            if self.position.xmin >= settle.xmax:
                self.polling = False
                self._settle = None
                self._last_wake = now

    async def prepare_batch(self, batch: Batch) -> None:
        """Awaited before each batch (or chunk of one) is dispatched; by
        default, ``prepare`` with its changes and this connection."""
        if self.prepare is not None and batch.changes:
            await self.prepare(batch.changes, self._conn)

    async def read(self) -> int:
        """Read and dispatch everything new; returns the number of changes.

        A large batch comes in chunks of ``FAST_LIMIT`` changes: the first
        from the read itself, the rest through one cursor (the leading chunks
        dispatched with ``final`` False)."""
        assert self.position is not None
        self.reads += 1
        started = time.perf_counter()
        async with asyncio.timeout(self.query_timeout):
            batch = await read_batch(self._conn, self.position, self.name_of)
        self.pruned_xid = batch.pruned_xid
        changes = batch.changes
        self.last_read_transactions = (
            0 if not changes else 1 if changes[0].xid == changes[-1].xid else 2
        )
        async with asyncio.timeout(self.query_timeout):
            await self.prepare_batch(batch)
        self.on_batch(batch, batch.complete)
        count = len(changes)
        if not batch.complete:
            self.last_read_transactions = 2
            async with contextlib.aclosing(
                read_rest(self._conn, batch, self.name_of)
            ) as rest:
                while not batch.complete:
                    async with asyncio.timeout(self.query_timeout):
                        batch = await anext(rest)
                        await self.prepare_batch(batch)
                    self.on_batch(batch, batch.complete)
                    count += len(batch.changes)
        self.position = batch.snap
        if count:
            log.debug(
                "dispatched %d changes in %.1f ms",
                count,
                (time.perf_counter() - started) * 1000,
            )
        return count
