"""What a resuming client missed, read from the relay's stream.

Why: behind a broker, a gateway that dies sends its clients to the others at
once; reading what each of them missed from the database log would put a
mass reconnect on the database, the one thing the broker is there to spare.
The stream holds the same changes in the same order under the same event ids
for as long as it keeps messages (``--max-age``).  A client whose last event
id it still covers is served from it; an older one, or one that arrives while
the gateway has not yet followed the stream to a read's end (it started from
the database's position), is read from the log as before (and beyond the
log's pruning gets ``reset``).

Exactness: the client registered with the bus at a moment when the bus had
dispatched the stream up to sequence ``upto`` and stood at ``reached`` (the
snapshot of the last read that ended there); everything after comes to the
client live.  So the replay is every change of sequences ``first..upto`` the
client had not seen, where ``first`` is the first sequence whose read its
position does not cover.  Sequences must follow each other: a message lost on
the way fails the catch-up (the client reconnects and reads it again).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from pgpulse.broker.messages import change_of, subjects
from pgpulse.log.change import Change
from pgpulse.log.cursor import Cursor, Snapshot

__all__ = [
    "Bounds",
    "Recent",
    "RecentReplay",
    "Replay",
    "StreamGap",
    "first_unseen",
    "open_replay",
]

#: Messages pulled at most per request, and changes queued at most before
#: the client's outbox must drain (as a resume from the log reads them).
FETCH = 200
#: Messages a gateway keeps of the stream's end (about 10 MB of changes).
RECENT = 10_000
#: Seconds a pull of messages the stream holds may take.
PULL_TIMEOUT = 5.0


class StreamGap(Exception):
    """Messages went missing between JetStream and this gateway."""


@dataclass(frozen=True)
class Bounds:
    """What the bus had of the stream when a client registered."""

    upto: int
    """The last sequence dispatched."""
    reached: Snapshot
    """The bus position: the snapshot the read ending at or before ``upto``
    ended at (every change visible there was dispatched)."""


def taken_before(a: Snapshot, b: Snapshot) -> bool:
    """Whether snapshot *a* of a database was taken no later than *b*: xmax
    (the next transaction id) only grows, and with the same xmax the later
    snapshot has fewer transactions in progress."""
    if a.xmax != b.xmax:
        return a.xmax < b.xmax
    return b.xip <= a.xip


async def first_unseen(
    js: JetStreamContext,
    name: str,
    info: Any,
    position: Snapshot,
    *,
    expired: bool = True,
) -> int | None:
    """The first sequence whose read is not wholly visible in *position*
    (reads are published in order, their snapshots only grow).  A message
    that expired meanwhile counts as seen (where to start following), or,
    with ``expired=False`` (what a client missed), makes the answer None."""
    low, high = info.state.first_seq, info.state.last_seq
    if not info.state.messages:
        return max(int(high) + 1, 1)
    # Invariant: every read before `low` is visible in `position`.
    while low <= high:
        middle = (low + high) // 2
        try:
            message = await js.get_msg(name, middle)
        except NotFoundError:  # expired meanwhile: nothing to start before it
            if not expired:
                return None
            low = middle + 1
            continue
        assert message.data is not None
        snap = Cursor.decode(change_of(message.data, str).event_id).snap
        if position.covers(snap):
            low = middle + 1
        else:
            high = middle - 1
    return int(low)


class Replay:
    """The changes of sequences ``first..upto`` a client at ``start`` has not
    seen, of its tables, in batches of at most :data:`FETCH` changes."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        database: str,
        first: int,
        bounds: Bounds,
        start: Cursor,
        tables: Sequence[str],
        name_of: Callable[[str], str],
    ) -> None:
        self.js, self.stream, self.database = js, stream, database
        self.first = first
        self.bounds = bounds
        self.start = start
        self.tables = set(tables)
        self.name_of = name_of
        self.messages = 0
        """Messages read from the stream (all tables)."""

    @property
    def reached(self) -> Snapshot:
        return self.bounds.reached

    async def batches(self) -> AsyncIterator[list[Change]]:
        upto = self.bounds.upto
        if self.first > upto:
            return
        consumer = f"pgpulse-replay-{uuid.uuid4().hex[:12]}"
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                name=consumer,
                filter_subject=subjects(self.database),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.first,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        try:
            sub = await self.js.pull_subscribe_bind(consumer, self.stream)
            expected = self.first
            while expected <= upto:
                messages = await sub.fetch(
                    min(FETCH, upto - expected + 1), timeout=PULL_TIMEOUT
                )
                out: list[Change] = []
                for msg in messages:
                    seq = msg.metadata.sequence.stream
                    if seq != expected:
                        raise StreamGap(
                            f"stream {self.stream}: expected sequence "
                            f"{expected}, got {seq}"
                        )
                    expected += 1
                    self.messages += 1
                    change = change_of(msg.data, self.name_of)
                    if change.table in self.tables and not self.start.seen(
                        change.xid, change.id
                    ):
                        out.append(change)
                    if seq >= upto:
                        break
                yield out
        finally:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, consumer)


class Recent:
    """The stream's last :data:`RECENT` messages as the feed dispatched them,
    by sequence (consecutive: a gap clears it).  A mass reconnect after a
    gateway died asks for the last seconds of the stream, a thousand times at
    once: served from here, that is no request to NATS at all."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit or RECENT
        self._seqs: list[int] = []
        self._changes: list[Change] = []

    def add(self, seq: int, change: Change) -> None:
        if self._seqs and seq != self._seqs[-1] + 1:
            self.clear()
        self._seqs.append(seq)
        self._changes.append(change)
        if len(self._seqs) >= 2 * self.limit:  # trimmed now and then: cheap
            del self._seqs[: -self.limit]
            del self._changes[: -self.limit]

    def clear(self) -> None:
        self._seqs.clear()
        self._changes.clear()

    def replay(
        self, bounds: Bounds, start: Cursor, tables: Sequence[str]
    ) -> RecentReplay | None:
        """What a client at *start* missed up to ``bounds.upto``, if held
        here whole: the message before the first one it has not seen must be
        held too (it proves the client saw everything before)."""
        seqs = self._seqs
        if not seqs or not seqs[0] <= bounds.upto <= seqs[-1]:
            return None
        if not taken_before(start.snap, bounds.reached):
            return None
        end = bounds.upto - seqs[0]  # index of upto
        low, high = 0, end
        # Invariant: every read before `low` is visible in start.prev.
        while low <= high:
            middle = (low + high) // 2
            snap = Cursor.decode(self._changes[middle].event_id).snap
            if start.prev.covers(snap):
                low = middle + 1
            else:
                high = middle - 1
        if low == 0:
            return None
        return RecentReplay(self._changes[low : end + 1], bounds, start, tables)


class RecentReplay:
    """A replay from :class:`Recent`: the same changes, from memory."""

    def __init__(
        self,
        changes: list[Change],
        bounds: Bounds,
        start: Cursor,
        tables: Sequence[str],
    ) -> None:
        self.changes = changes
        self.bounds = bounds
        self.start = start
        self.tables = set(tables)

    @property
    def reached(self) -> Snapshot:
        return self.bounds.reached

    async def batches(self) -> AsyncIterator[list[Change]]:
        out: list[Change] = []
        for change in self.changes:
            if change.table in self.tables and not self.start.seen(
                change.xid, change.id
            ):
                out.append(change)
                if len(out) >= FETCH:
                    yield out
                    out = []
        if out:
            yield out


async def open_replay(
    js: JetStreamContext,
    stream: str,
    database: str,
    bounds: Bounds,
    start: Cursor,
    tables: Sequence[str],
    name_of: Callable[[str], str],
) -> Replay | None:
    """A replay for a client at *start*, or None if the stream cannot serve
    it: it may no longer hold everything the client missed, or the client
    is ahead of this gateway (it came from a gateway further along)."""
    if not taken_before(start.snap, bounds.reached):
        return None
    info = await js.stream_info(stream)
    first = await first_unseen(js, stream, info, start.prev, expired=False)
    # The read before `first` is visible to the client, so is everything
    # before it; without one the stream may have lost (or never had) some.
    if first is None or first <= info.state.first_seq:
        return None
    try:
        seen = await js.get_msg(stream, first - 1)
    except NotFoundError:
        return None
    # Near the end of the stream's retention, messages would expire under
    # the replay: the log serves it instead.
    max_age = info.config.max_age or 0.0
    if max_age > 0 and seen.time is not None:
        age = (datetime.now(UTC) - seen.time).total_seconds()
        if age > max_age / 2:
            return None
    return Replay(js, stream, database, first, bounds, start, tables, name_of)
