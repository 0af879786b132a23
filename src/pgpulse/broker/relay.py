"""``pgpulse relay``: read the change log once, publish it to NATS JetStream.

Why one relay: every gateway following the database itself multiplies log
reads and connections by the number of nodes.  One relay per database reads
the log (the same :class:`~pgpulse.log.listener.Listener` a gateway uses) and
publishes each change to JetStream, where any number of consumers read it.

Exactly one is active: a relay publishes only while it holds a PostgreSQL
advisory lock on a connection of its own; a standby polls for the lock and
takes over within about a second of the active one's connection dying.  A
relay that loses its lock connection stops publishing at once.

Nothing lost, nothing twice: the log position only moves after JetStream
acknowledged every change of a read, so a failure re-reads and re-publishes;
the message id is the change's id in the log, so JetStream drops a repeat
within its duplicate window, and a relay taking over resumes from the
stream's last message: after its read when it ends one (``Pgpulse-End``),
else from where that read started (``Pgpulse-Prev``), skipping the changes of
that read already in the stream, so none is published twice however long the
handover took.  The last change of each read is held back until the read is
complete, so it can carry ``Pgpulse-End`` (gateways move their position there).
A read abandoned half-way (a refused publish, a lost database connection) is
read again from its start: what it had published is then taken from the
stream, and the change it held back is published in its place in that read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
import orjson
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from pgpulse.backoff import Backoff
from pgpulse.broker.messages import (
    END,
    MSG_ID,
    PREV,
    body,
    notices,
    stream_name,
    subject,
    subjects,
)
from pgpulse.log.change import Change
from pgpulse.log.changelog import Batch
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.log.listener import Listener

__all__ = ["LOCK_KEY", "BrokerUnavailable", "Relay", "RelayStats"]

log = logging.getLogger("pgpulse.broker.relay")

#: The advisory lock an active relay holds (per database): 'pgpulse' in ASCII.
LOCK_KEY = 0x70677075_6C7365
#: JetStream drops a message whose id it saw within this many seconds.
DUPLICATE_WINDOW = 600.0
#: JetStream refuses a message unless the stream's last sequence is this.
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
#: Seconds a read's publishes may wait for JetStream's acknowledgements.
ACK_TIMEOUT = 5.0


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    """Re-publishes JetStream dropped (a read repeated after a failure)."""
    skipped: int = 0
    """Changes a takeover found already in the stream."""
    takeovers: int = 0
    state: str = "starting"


@dataclass
class _Resume:
    """Where to start, and the ids of that read already published."""

    position: Snapshot | None
    last_seq: int = 0
    """The stream's last sequence: the next publish must follow it."""
    published: set[int] = field(default_factory=set)


class Relay:
    """Publishes one database's change log to a JetStream stream."""

    def __init__(
        self,
        dsn: str,
        broker: str | Sequence[str],
        *,
        replicas: int = 1,
        max_age: float | None = None,
        lock_poll: float = 0.5,
        application_name: str = "pgpulse-relay",
    ) -> None:
        self.dsn = dsn
        self.servers = [broker] if isinstance(broker, str) else list(broker)
        self.replicas = replicas
        self.max_age = max_age
        self.lock_poll = lock_poll
        self.application_name = application_name
        self.stats = RelayStats()
        self.database = ""
        self._nc: Any = None
        self._js: JetStreamContext | None = None
        self._listener: Listener | None = None
        self._resume = _Resume(None)
        self._held: list[Change] = []
        """The last change of a read still being read (see the module doc)."""
        self._notices: set[asyncio.Task[None]] = set()
        self._retry = Backoff(initial=0.1, maximum=2.0)
        self._resync = False
        self._reading = False
        """A read has begun and not ended (its last chunk not published)."""

    # -- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        """Stand by or publish, until cancelled."""
        nc = await nats.connect(
            servers=self.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            name=self.application_name,
        )
        try:
            self._nc = nc
            self._js = nc.jetstream()
            while True:
                try:
                    await self._serve_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the relay must outlive any one failure
                    self.stats.state = "standby"
                    log.warning(
                        "relay stopped publishing (%s: %s); standing by again",
                        type(exc).__name__,
                        exc,
                    )
                    await asyncio.sleep(self.lock_poll)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()

    async def _serve_once(self) -> None:
        lock = await asyncpg.connect(
            self.dsn,
            server_settings={"application_name": self.application_name + "-lock"},
        )
        try:
            self.database = await lock.fetchval("select current_database()")
            await self._ensure_stream()
            locked_at = await self._wait_for_lock(lock)
            self.stats.takeovers += 1
            self._resume = await self._resume_point(locked_at)
            log.info(
                "relay active for database %r: publishing to stream %s from %s",
                self.database,
                stream_name(self.database),
                self._resume.position or "now",
            )
            self.stats.state = "active"
            await self._publish_while_locked(lock)
        finally:
            with contextlib.suppress(Exception):
                await lock.close()

    async def _wait_for_lock(self, lock: Any) -> Snapshot:
        """Wait for the lock; returns a snapshot taken as it was granted (the
        statement's own): a first relay publishes every change committed after
        it became active."""
        self.stats.state = "standby"
        logged = False
        while True:
            row = await lock.fetchrow(
                "select pg_try_advisory_lock($1) as locked, "
                "pg_current_snapshot()::text as snap",
                LOCK_KEY,
            )
            if row["locked"]:
                return Snapshot.parse(row["snap"])
            if not logged:
                log.info(
                    "relay standing by: another relay publishes database %r",
                    self.database,
                )
                logged = True
            await asyncio.sleep(self.lock_poll)

    async def _publish_while_locked(self, lock: Any) -> None:
        listener = _PublishingListener(
            self.dsn,
            on_batch=lambda _batch, _final: None,
            name_of=_display_name,
            application_name=self.application_name + "-listener",
        )
        listener.publish = self._publish
        listener.begin_read = self._begin_read
        listener.on_message = self._forward_notice
        listener.position = self._resume.position
        self._held = []
        self._reading = False
        self._listener = listener
        task = asyncio.create_task(listener.run(), name="pgpulse-relay-listener")
        try:
            while not task.done():
                # The lock lives as long as its connection: stop publishing
                # the moment it is in doubt (a standby may hold it next).
                async with asyncio.timeout(max(self.lock_poll * 4, 2.0)):
                    await lock.fetchval("select 1")
                await asyncio.wait({task}, timeout=self.lock_poll)
            task.result()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self._listener = None

    # -- JetStream ----------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        name = stream_name(self.database)
        config = StreamConfig(
            name=name,
            subjects=[subjects(self.database)],
            num_replicas=self.replicas,
            # JetStream refuses a window longer than the stream keeps messages.
            duplicate_window=min(DUPLICATE_WINDOW, self.max_age or DUPLICATE_WINDOW),
            max_age=self.max_age,
        )
        try:
            await self._js.stream_info(name)
        except NotFoundError:
            await self._js.add_stream(config)
            log.info("created JetStream stream %s (replicas %d)", name, self.replicas)

    def _forward_notice(self, payload: str) -> None:
        """A notice on the log's channel (``catalog``, ``wal``): to every
        gateway (they have no listener of their own to hear it)."""
        if self._nc is None:
            return
        task = asyncio.create_task(
            self._nc.publish(notices(self.database), payload.encode())
        )
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _resume_point(self, locked_at: Snapshot) -> _Resume:
        """Where the stream's last message leaves off: after its read if it
        ends one, else that read's start and the ids of the messages published
        from it; for an empty stream, *locked_at* (a first relay: the moment
        it took the lock; after a failed publish: the read's start)."""
        assert self._js is not None
        name = stream_name(self.database)
        info = await self._js.stream_info(name)
        seq = last_seq = info.state.last_seq
        if not seq or not info.state.messages:
            return _Resume(locked_at, last_seq=last_seq)
        last = await self._js.get_msg(name, seq)
        prev = (last.headers or {}).get(PREV)
        if prev is None:
            return _Resume(locked_at, last_seq=last_seq)
        if (last.headers or {}).get(END):
            assert last.data is not None
            event_id = orjson.loads(last.data)["event_id"]
            return _Resume(Cursor.decode(event_id).snap, last_seq=last_seq)
        published: set[int] = set()
        first = info.state.first_seq
        while seq >= first:
            try:
                message = await self._js.get_msg(name, seq)
            except NotFoundError:
                break
            headers = message.headers or {}
            if headers.get(PREV) != prev:
                break
            published.add(int(headers[MSG_ID]))
            seq -= 1
        return _Resume(Snapshot.parse(prev), last_seq, published)

    def _begin_read(self) -> None:
        """A read begins.  If the one before never ended, it failed half-way
        (the listener reads it again from its start): the change it held
        back belongs in the middle of this read, not before it, and what it
        published is learnt from the stream."""
        if self._reading:
            self._resync = True
        self._held = []
        self._reading = True

    async def _publish(self, batch: Batch) -> None:
        """Publish one read (or chunk of one) in log order; return once
        JetStream has acknowledged it (the listener then moves on).  The
        read's last change waits for the read to be complete, to carry
        ``Pgpulse-End``."""
        assert self._js is not None
        if self._resync:
            # A read failed half-way: what reached the stream decides what
            # is next.  A read the stream holds whole (only its answer was
            # lost) or a read from elsewhere: read on from where it leaves off.
            self._resume = await self._resume_point(batch.prev)
            self._resync = False
            if (
                self._resume.position is not None
                and self._resume.position != batch.prev
            ):
                raise _ReadFrom(self._resume.position)
        prev = str(batch.prev)
        skip = self._resume.published
        if skip and prev != str(self._resume.position):
            skip = self._resume.published = set()
        todo = self._held + [c for c in batch.changes if c.id not in skip]
        self.stats.skipped += len(self._held) + len(batch.changes) - len(todo)
        self._held = [] if batch.complete else todo[-1:]
        if not batch.complete:
            todo = todo[:-1]
        acks: list[asyncio.Future[Any]] = []
        seq = self._resume.last_seq
        try:
            for n, change in enumerate(todo, 1):
                # Each publish must follow the one before: if one fails, all
                # after it fail too, and the stream never holds a later
                # change without an earlier one (a row's changes stay in order).
                headers = {
                    MSG_ID: str(change.id),
                    PREV: prev,
                    EXPECTED_LAST_SEQ: str(seq),
                }
                seq += 1
                if batch.complete and n == len(todo):
                    headers[END] = "1"
                acks.append(
                    await self._js.publish_async(
                        subject(self.database, change.table),
                        body(change),
                        headers=headers,
                        wait_stall=ACK_TIMEOUT,
                    )
                )
            async with asyncio.timeout(ACK_TIMEOUT):
                results = await asyncio.gather(*acks)
        except Exception as exc:
            # Unanswered publishes hold nats-py's in-flight slots until they
            # end: end them, or a few failed reads would stall the relay.
            for ack in acks:
                ack.cancel()
            self._resync = True
            # The listener re-reads at once after a failure; pace the retries
            # while JetStream is away (electing a leader, restarting).
            await asyncio.sleep(self._retry.next())
            raise BrokerUnavailable(
                f"JetStream did not acknowledge {len(todo)} changes "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self._retry.reset()
        self._reading = not batch.complete
        if results:
            self._resume.last_seq = results[-1].seq
        for ack in results:
            if ack.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.published += 1


class BrokerUnavailable(ConnectionError):
    """JetStream did not take a read: it is published again."""


class _ReadFrom(Exception):
    """The stream leaves off elsewhere than this read's start: read from there."""

    def __init__(self, position: Snapshot) -> None:
        super().__init__(f"the stream leaves off at {position}")
        self.position = position


class _PublishingListener(Listener):
    """The relay's listener: each read goes to JetStream, not to a bus."""

    publish: Callable[[Batch], Awaitable[None]]
    begin_read: Callable[[], None]

    async def read(self) -> int:
        self.begin_read()
        try:
            return await super().read()
        except _ReadFrom as moved:
            self.position = moved.position
            self.wake()
            return 0

    async def prepare_batch(self, batch: Batch) -> None:
        # Empty reads too: the last chunk of a large read can be empty, and
        # the change held back from the chunk before goes out with it.
        await self.publish(batch)


def _display_name(table: str) -> str:
    schema, _, name = table.partition(".")
    return name if schema == "public" else table
