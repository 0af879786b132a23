"""One delivery to a worker: changes, and how acknowledging them moves the
group's positions.

Why compare-and-set: a batch covers some partitions from known positions;
acknowledging it moves exactly those partitions from exactly those positions,
and only while this worker still holds them.  If a lease moved meanwhile (this
worker stalled past its lease), the acknowledgement fails and, in transaction
mode, takes the handler's writes down with it: another worker has the
partition and will do that work once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pgpulse.clients.stream import Event
from pgpulse.exceptions import PgPulseError
from pgpulse.log.change import Change
from pgpulse.log.cursor import Cursor
from pgpulse.routing.values import loads_exact

if TYPE_CHECKING:
    from pgpulse.consumers.consumer import Consumer

__all__ = ["Batch", "LeaseLost", "Move", "event_of"]


class LeaseLost(PgPulseError):
    """This worker no longer holds a partition of the batch: another worker
    took it over (its lease ran out), so the batch cannot be acknowledged."""


@dataclass(frozen=True)
class Move:
    """Partitions that go from one position to another when a batch is acked."""

    partitions: tuple[int, ...]
    old: str
    new: Cursor
    counts: tuple[int, ...]
    """Changes delivered per partition (the group's throughput counters)."""


def event_of(change: Change) -> Event:
    """A logged change as the Python clients show changes (exact numbers)."""
    return Event(
        kind="change",
        id=change.event_id,
        table=change.name,
        op=change.op,
        pk=loads_exact(change.pk),
        row=None if change.row is None else loads_exact(change.row),
        old=None if change.old is None else loads_exact(change.old),
        ts=orjson.loads(change.ts) if change.ts else "",
        change_id=change.id,
    )


_ACK_SQL = """
update pgpulse.consumer_partitions p
set position = u.new, hold_xid = u.hold::xid8, acked_at = now(),
    delivered = p.delivered + u.n, redelivered = p.redelivered + u.again
from unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $8::bigint[])
     as u(partition, old, new, hold, n, again)
where p.group_name = $1 and p.partition = u.partition and p.position = u.old
  and p.worker = $7
"""


@dataclass(eq=False)
class Batch:
    """Changes for this worker; acknowledge with :meth:`ack` (at least once) or
    do the work inside :meth:`transaction` (exactly once for writes to the same
    database).  A batch not acknowledged comes back: to this worker on its
    next iteration, or to another one if this worker dies."""

    consumer: Consumer
    changes: list[Event]
    moves: list[Move] = field(default_factory=list)
    dead_letters: list[int] = field(default_factory=list)
    """Ids in ``pgpulse.dead_letters`` when this batch retries them."""
    reset: str | None = None
    """Set (with no changes) when the group was reset: changes were pruned
    before it read them; rebuild whatever you derive from them."""
    raw: list[Change] = field(default_factory=list, repr=False)
    acked: bool = False

    @property
    def group(self) -> str:
        return self.consumer.group

    async def ack(self) -> bool:
        """Move the group past this batch.  False (with a warning logged) if a
        partition was taken over meanwhile: the batch will be delivered to its
        new holder too (at least once)."""
        if self.acked:
            return True
        try:
            async with self.consumer.pool.acquire() as conn, conn.transaction():
                await self._commit(conn)
        except LeaseLost as exc:
            self.consumer.log_lease_lost(exc)
            return False
        self._done()
        return True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A transaction for the handler's writes that also moves the group past
        this batch: both commit or neither does (exactly once).  Raises
        :class:`LeaseLost` (and rolls back) if a partition was taken over."""
        if self.acked:
            raise PgPulseError("this batch is already acknowledged")
        async with self.consumer.pool.acquire() as conn:
            async with conn.transaction():
                yield conn
                await self._commit(conn)
        self._done()

    async def reject(self, reason: str, attempts: int = 1) -> None:
        """Give up on these changes: keep them in ``pgpulse.dead_letters`` with
        *reason* (``pgpulse consumers retry GROUP`` delivers them again) and
        move on."""
        async with self.consumer.pool.acquire() as conn, conn.transaction():
            if self.dead_letters:
                await conn.execute(
                    "update pgpulse.dead_letters set error = $2, "
                    "attempts = attempts + $3, retry_requested = false, "
                    "claimed_by = null, claimed_until = null, failed_at = now() "
                    "where id = any($1::bigint[])",
                    self.dead_letters,
                    reason,
                    attempts,
                )
                self.dead_letters = []
            else:
                await conn.executemany(
                    "insert into pgpulse.dead_letters (group_name, change_id, "
                    'event_id, tbl, op, pk, "row", old, ts, error, attempts) '
                    "values ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, "
                    "($9::text::jsonb #>> '{}')::timestamptz, $10, $11)",
                    [
                        (
                            self.group,
                            c.id,
                            c.event_id,
                            c.table,
                            c.op,
                            c.pk,
                            c.row,
                            c.old,
                            c.ts,
                            reason,
                            attempts,
                        )
                        for c in self.raw
                    ],
                )
            await self._commit(conn)
        self._done()
        self.consumer.count_dead_letters(len(self.raw))

    async def _commit(self, conn: Any) -> None:
        if self.acked:
            return
        if self.dead_letters:
            done = await conn.execute(
                "delete from pgpulse.dead_letters where id = any($1::bigint[]) "
                "and claimed_by = $2",
                self.dead_letters,
                self.consumer.worker,
            )
            if int(done.split()[-1]) != len(self.dead_letters):
                raise LeaseLost(
                    f"consumer group {self.group!r}: dead letters of this batch "
                    "were claimed by another worker"
                )
        await ack_moves(
            conn,
            self.consumer.group,
            self.consumer.worker,
            self.moves,
            self.consumer.redelivered_by_partition,
        )

    def _done(self) -> None:
        self.acked = True
        self.consumer.acked(self)


async def ack_moves(
    conn: Any,
    group: str,
    worker: str,
    moves: list[Move],
    redelivered: dict[int, int] | None = None,
) -> None:
    """Move partitions as *moves* say, all or none; raises LeaseLost.
    *redelivered*: changes handed out again per partition, to count."""
    if not moves:
        return
    partitions: list[int] = []
    old: list[str] = []
    new: list[str] = []
    hold: list[str] = []
    counts: list[int] = []
    for move in moves:
        for partition, count in zip(move.partitions, move.counts, strict=True):
            partitions.append(partition)
            old.append(move.old)
            new.append(move.new.encode())
            hold.append(str(move.new.prev.xmin))
            counts.append(count)
    again = [(redelivered or {}).get(p, 0) for p in partitions]
    done = await conn.execute(
        _ACK_SQL, group, partitions, old, new, hold, counts, worker, again
    )
    moved = int(done.split()[-1])
    if moved != len(partitions):
        raise LeaseLost(
            f"consumer group {group!r}: {len(partitions) - moved} of "
            f"{len(partitions)} partitions of this batch moved to another worker "
            "(this worker's lease ran out); the batch goes to its new holder"
        )
