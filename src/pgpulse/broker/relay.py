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
position recorded in the stream's last message (``Pgpulse-Prev``), skipping
the changes of that read already in the stream, so none is published twice
however long the handover took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from pgpulse.broker.messages import (
    MSG_ID,
    PREV,
    body,
    stream_name,
    subject,
    subjects,
)
from pgpulse.log.change import Change
from pgpulse.log.cursor import Snapshot
from pgpulse.log.listener import Listener

__all__ = ["LOCK_KEY", "Relay", "RelayStats"]

log = logging.getLogger("pgpulse.broker.relay")

#: The advisory lock an active relay holds (per database): 'pgpulse' in ASCII.
LOCK_KEY = 0x70677075_6C7365
#: JetStream drops a message whose id it saw within this many seconds.
DUPLICATE_WINDOW = 600.0


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
        self._js: JetStreamContext | None = None
        self._listener: Listener | None = None
        self._resume = _Resume(None)

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
        listener = Listener(
            self.dsn,
            on_batch=lambda _batch, _final: None,
            name_of=_display_name,
            prepare=self._publish,
            application_name=self.application_name + "-listener",
        )
        listener.position = self._resume.position
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
            duplicate_window=DUPLICATE_WINDOW,
            max_age=self.max_age,
        )
        try:
            await self._js.stream_info(name)
        except NotFoundError:
            await self._js.add_stream(config)
            log.info("created JetStream stream %s (replicas %d)", name, self.replicas)

    async def _resume_point(self, locked_at: Snapshot) -> _Resume:
        """The position the stream's last message was read from, and the ids
        of the messages published from that same read; for an empty stream,
        the moment this relay took the lock."""
        assert self._js is not None
        name = stream_name(self.database)
        info = await self._js.stream_info(name)
        seq = info.state.last_seq
        if not seq or not info.state.messages:
            return _Resume(locked_at)
        last = await self._js.get_msg(name, seq)
        prev = (last.headers or {}).get(PREV)
        if prev is None:
            return _Resume(locked_at)
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
        return _Resume(Snapshot.parse(prev), published)

    async def _publish(self, changes: list[Change], _conn: Any) -> None:
        """Publish one read's changes in log order; return once JetStream has
        acknowledged them all (the listener then moves its position)."""
        assert self._js is not None and self._listener is not None
        prev = str(self._listener.position)
        skip = self._resume.published
        if skip and self._resume.position is not None:
            if prev != str(self._resume.position):
                skip = self._resume.published = set()
        acks = []
        for change in changes:
            if change.id in skip:
                self.stats.skipped += 1
                continue
            acks.append(
                await self._js.publish_async(
                    subject(self.database, change.table),
                    body(change),
                    headers={MSG_ID: str(change.id), PREV: prev},
                )
            )
        for ack in await asyncio.gather(*acks):
            if ack.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.published += 1


def _display_name(table: str) -> str:
    schema, _, name = table.partition(".")
    return name if schema == "public" else table
