"""A gateway fed by the relay's JetStream stream instead of the log.

Why: with ``pgpulse serve --broker``, gateways on any number of nodes read
what one relay published (:mod:`pgpulse.broker.relay`) and never follow the
database themselves: no listener connection and no log reads per node.  The
bus, filters, policies, live queries and transports are the same; only the
source of batches differs.

Batches are rebuilt from the messages: a change's event id names the read it
came from (``prev~snap~id``), and the read's last change carries
``Pgpulse-End``, where the position moves to the read's snapshot, exactly as
after a listener's read.  Until then the bus is "in a batch" and new clients
read that batch from the database.  A relay that fails half-way through a
read reads it again from the same position, to a later snapshot: the read
goes on (the stream holds no change twice) and ends at the later snapshot.
The position never moves to the snapshot of a read that did not end: some of
its changes may never have reached the stream.

Where a gateway starts: at the database's current snapshot (every change
visible there counts as dispatched; a client starting there catches up from
the log, as with a listener), reading the stream from the first read not
visible in it (a binary search over stream sequences).  It pulls messages
only as fast as it dispatches them, so a slow gateway leaves the backlog in
JetStream, not in memory; after any failure it pulls again from the sequence
after the last one it dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from pgpulse.backoff import Backoff
from pgpulse.broker.messages import END, change_of, notices, stream_name, subjects
from pgpulse.broker.replay import (
    Bounds,
    Recent,
    RecentReplay,
    Replay,
    StreamGap,
    first_unseen,
    open_replay,
)
from pgpulse.log import changelog
from pgpulse.log.change import Change
from pgpulse.log.changelog import Batch, NameOf
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.log.listener import poll_stretch

__all__ = ["StreamFeed", "StreamGap", "later"]

log = logging.getLogger("pgpulse.broker.feed")

#: Messages pulled at most per request.
FETCH = 512
#: Seconds between pulls while changes keep coming (times poll_stretch).
POLL = 0.001


def later(a: Snapshot, b: Snapshot) -> Snapshot:
    """The later of two snapshots of one database (taken at different times,
    one sees every transaction the other does)."""
    if a.xmax != b.xmax:
        return a if a.xmax > b.xmax else b
    return a if len(a.xip) <= len(b.xip) else b


class StreamFeed:
    """Follows one database's JetStream stream and calls ``on_batch`` with
    the batches the relay read, as a :class:`~pgpulse.log.listener.Listener`
    does with the log."""

    def __init__(
        self,
        servers: Sequence[str],
        pool: Callable[[], Any],
        on_batch: Callable[[Batch, bool], None],
        name_of: Callable[[str], str],
        *,
        prepare: Callable[[list[Change], Any], Awaitable[None]] | None = None,
        needs_database: Callable[[Sequence[Change]], bool] = lambda _changes: True,
        idle: float = 5.0,
        application_name: str = "pgpulse-gateway",
    ) -> None:
        self.servers = list(servers)
        self.pool = pool
        """The gateway's pool (once it has one): the start position, and
        filters PostgreSQL evaluates."""
        self.on_batch = on_batch
        self.name_of = name_of
        self.prepare = prepare
        self.needs_database = needs_database
        """Whether ``prepare`` must see these changes (filters PostgreSQL
        evaluates): only then is a pool connection taken."""
        self.idle = idle
        self.application_name = application_name
        self.on_message: Callable[[str], None] | None = None
        self.on_restart: Callable[[str], None] | None = None
        """Called (with why) when clients must resume elsewhere: the feed
        starts again from the database's position."""
        self.position: Snapshot | None = None
        """Every change visible here has been handed to the bus."""
        self.fatal: Exception | None = None
        self.connected = asyncio.Event()
        self.polling = False
        self.reads = 0
        """Pulls from JetStream (the log is never read here)."""
        self.database = ""
        self.next_seq = 0
        """The stream sequence to pull next (0: not found yet)."""
        self._open: str | None = None
        """The position (snapshot text) the read being dispatched started
        from, until it ends."""
        self.recent = Recent()
        """The stream's last messages, as dispatched: most resumes are read
        from here, without a request to NATS."""
        self._chained = False
        """The position is the snapshot of a read that ended in the stream
        (not the database's, where the feed started): resumes can be read
        from the stream (:mod:`pgpulse.broker.replay`)."""
        self._js: JetStreamContext | None = None

    def wake(self) -> None:
        """Nothing to do: messages are pushed to pending pulls."""

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        async with self.pool().acquire() as conn:
            self.database = await conn.fetchval("select current_database()")
            start = await changelog.current_position(conn)
        # Ready at once (clients start here), whether or not the stream exists.
        self.position = start
        self._chained = False
        self.on_batch(Batch(start, start, []), True)
        nc = await nats.connect(
            servers=self.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            name=self.application_name,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
        )
        try:
            self._js = nc.jetstream()
            await nc.subscribe(notices(self.database), cb=self._notice)
            backoff = Backoff(initial=0.1, maximum=2.0)
            while True:
                try:
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the feed must outlive any one failure
                    self.connected.clear()
                    delay = backoff.next()
                    log.warning(
                        "stream %s: %s: %s; pulling again from sequence %d in %.2fs",
                        stream_name(self.database),
                        type(exc).__name__,
                        exc,
                        self.next_seq,
                        delay,
                    )
                    await asyncio.sleep(delay)
                else:
                    backoff.reset()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _disconnected(self) -> None:
        self.connected.clear()

    async def _reconnected(self) -> None:
        # Notices sent meanwhile are lost: read the catalog again.
        if self.on_message is not None:
            self.on_message("catalog")

    async def _notice(self, msg: Any) -> None:
        if self.on_message is not None and msg.data:
            self.on_message(msg.data.decode())

    # -- reading ------------------------------------------------------------------

    async def _follow(self) -> None:
        assert self._js is not None and self.position is not None
        name = stream_name(self.database)
        try:
            info = await self._js.stream_info(name)
        except NotFoundError:
            log.info("stream %s does not exist yet (no relay has run)", name)
            self.connected.set()
            await asyncio.sleep(self.idle / 5)
            return
        if self.next_seq and self.next_seq < info.state.first_seq:
            await self._start_over(name, info)
        if not self.next_seq:
            start = await first_unseen(self._js, name, info, self.position)
            assert start is not None  # expired messages count as seen here
            self.next_seq = start
        consumer = f"{self.application_name}-{uuid.uuid4().hex[:12]}"
        await self._js.add_consumer(
            name,
            ConsumerConfig(
                name=consumer,
                filter_subject=subjects(self.database),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.next_seq,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=max(30.0, self.idle * 6),
                # One copy in memory: the gateway is its only reader and
                # re-creates it from its own position whenever it is lost.
                mem_storage=True,
                num_replicas=1,
            ),
        )
        sub = await self._js.pull_subscribe_bind(consumer, name)
        self.connected.set()
        log.info("gateway following stream %s from sequence %d", name, self.next_seq)
        try:
            while True:
                try:
                    messages = await sub.fetch(FETCH, timeout=self.idle)
                except TimeoutError:
                    await self._check_consumer(sub)
                    continue
                self.reads += 1
                await self._dispatch(messages)
                if len(messages) < FETCH:
                    # Busy but not behind: let a few milliseconds of changes
                    # gather, as the listener polls, so each dispatch writes
                    # to every client once for several changes, not per change.
                    await asyncio.sleep(POLL * poll_stretch(len(messages)))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(name, consumer)

    async def _start_over(self, name: str, info: Any) -> None:
        """The stream dropped messages this gateway had not read yet (they
        outlived its max age while the gateway was away): its clients cannot
        be served from the stream.  Their streams end (they reconnect and
        resume from the log, which still has everything) and the gateway
        starts again from the database's current position."""
        reason = (
            f"stream {name} no longer holds sequence {self.next_seq} (it starts "
            f"at {info.state.first_seq})"
        )
        log.warning("%s: starting again from the database's position", reason)
        if self.on_restart is not None:
            self.on_restart(reason)
        async with self.pool().acquire() as conn:
            start = await changelog.current_position(conn)
        self._open = None
        self._chained = False
        self.recent.clear()
        self.position = start
        self.on_batch(Batch(start, start, []), True)
        self.next_seq = 0

    async def _check_consumer(self, sub: Any) -> None:
        """After a quiet pull: is the consumer still there, and did it hold
        nothing back?  A NATS restart drops it (NotFoundError); a node lost
        mid-delivery leaves it believing it delivered what never arrived
        (no acks: nothing is redelivered).  Either way: pull anew."""
        info = await sub.consumer_info()
        delivered = info.delivered.stream_seq if info.delivered else 0
        if delivered >= self.next_seq or info.num_pending:
            raise StreamGap(
                f"the stream's consumer is at sequence {delivered} with "
                f"{info.num_pending} pending, this gateway at {self.next_seq - 1}"
            )

    async def _dispatch(self, messages: list[Any]) -> None:
        """Hand the pulled changes to the bus: every read that ended in this
        pull as one batch (one write per client for all of them), then what
        came of a read still going on; ``next_seq`` moves past a message
        once the bus has it."""
        chunk: list[Change] = []
        upto = self.next_seq - 1
        ended: tuple[int, int, Snapshot] | None = None
        """(changes in chunk, sequence, snapshot) at the last read's end."""
        gap = None
        for msg in messages:
            seq = msg.metadata.sequence.stream
            if seq != upto + 1:  # a delivery lost on the way: pull again
                gap = f"expected sequence {upto + 1}, got {seq}"
                break
            change = change_of(msg.data, self.name_of)
            self.recent.add(seq, change)
            prev, snap, _ = change.event_id.split("~")
            # Another read from the same position: the relay failed half-way
            # and read it again, to a later snapshot; the read goes on.
            if self._open is not None and self._open != prev:
                # A read that never ended and is not read again: its changes
                # went out, but not necessarily all of them, so the position
                # stays (later changes are not filtered by its snapshot).
                await self._flush(chunk, ended, upto)
                chunk, ended = [], None
                self._chained = False
                await self._hand_over([], True, upto)
            self._open = prev
            assert self.position is not None
            if not self.position.visible(change.xid):
                chunk.append(change)
            upto = seq
            if (msg.headers or {}).get(END):
                ended = (len(chunk), upto, Snapshot.parse(snap))
                self._open = None
        await self._flush(chunk, ended, upto)
        if gap is not None:
            raise StreamGap(gap)

    async def _flush(
        self, chunk: list[Change], ended: tuple[int, int, Snapshot] | None, upto: int
    ) -> None:
        """Dispatch *chunk*: up to the last read that ended as one complete
        batch (the position moves to that read's snapshot), the rest as part
        of the read going on."""
        rest = chunk
        if ended is not None:
            count, seq, snap = ended
            await self._hand_over(chunk[:count], True, seq, snap)
            rest = chunk[count:]
        if rest or (self._open is not None and upto >= self.next_seq):
            await self._hand_over(rest, False, upto)
        else:
            self.next_seq = max(self.next_seq, upto + 1)

    async def _hand_over(
        self,
        changes: list[Change],
        final: bool,
        upto: int,
        snap: Snapshot | None = None,
    ) -> None:
        """Dispatch *changes*; *final*: no read is left open, and the position
        moves to *snap* (None: it stays).  The stream is then dispatched up
        to sequence *upto*."""
        assert self.position is not None
        position = self.position if snap is None else later(snap, self.position)
        if changes and self.prepare is not None and self.needs_database(changes):
            async with self.pool().acquire() as conn:
                await self.prepare(changes, conn)
        self.on_batch(Batch(self.position, position, changes, complete=final), final)
        self.next_seq = upto + 1
        if final:
            if snap is not None:
                self._chained = position == snap
            self.position = position

    # -- resumes --------------------------------------------------------------------

    def bounds(self) -> Bounds | None:
        """What the bus has of the stream now (call it as a client registers,
        before any await), or None while the stream cannot serve resumes."""
        if not self._chained or self._js is None or self.position is None:
            return None
        if not self.connected.is_set():
            return None
        return Bounds(self.next_seq - 1, self.position)

    async def replay(
        self, bounds: Bounds, start: Cursor, tables: Sequence[str], name_of: NameOf
    ) -> Replay | RecentReplay | None:
        """The changes a client at *start* missed, from the stream's last
        messages held here or from the stream; None if it no longer holds
        them all (the log has them)."""
        assert self._js is not None
        name = stream_name(self.database)
        held = self.recent.replay(bounds, start, tables)
        if held is not None:
            return held
        try:
            return await open_replay(
                self._js, name, self.database, bounds, start, tables, name_of
            )
        except Exception as exc:  # NATS away: the log serves the resume
            log.warning(
                "stream %s cannot serve a resume (%s: %s); reading the log",
                name,
                type(exc).__name__,
                exc,
            )
            return None
