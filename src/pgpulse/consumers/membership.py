"""Which worker of a group holds which partitions: leases in the database.

Why leases and not a coordinator: the workers already share the database, and
a lease there is as durable as the positions it guards.  Every few seconds a
worker beats (one transaction): it says it is alive, forgets workers not seen
for a lease's length, renews its own leases, takes free or expired partitions
up to its fair share (partitions / live workers), and learns which of its
partitions are surplus (a worker joined) to let go of between batches.  A
worker that dies stops renewing: within ``ttl`` its partitions are free and
the next beat of another worker takes them, with their unacknowledged changes.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Beat", "Membership", "worker_id"]


def worker_id() -> str:
    """A name for this worker: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Beat:
    """What one beat found."""

    positions: dict[int, str] = field(default_factory=dict)
    """The partitions held, with their positions."""
    gained: set[int] = field(default_factory=set)
    surplus: set[int] = field(default_factory=set)
    """Held beyond the fair share: release between batches."""
    live_workers: int = 1
    resets: int = 0
    reset_reason: str | None = None


_BEAT_SQL = """
with me as (
    insert into pgpulse.consumer_workers (group_name, worker, seen_at)
    values ($1, $2, now())
    on conflict (group_name, worker) do update set seen_at = now()
)
delete from pgpulse.consumer_workers
where group_name = $1 and worker <> $2 and seen_at < now() - $3::interval
"""

_RENEW_SQL = """
update pgpulse.consumer_partitions
set lease_until = now() + $3::interval
where group_name = $1 and worker = $2
returning partition
"""

_CLAIM_SQL = """
with free as (
    select partition, worker from pgpulse.consumer_partitions
    where group_name = $1
      and (worker is null or lease_until < now()
           or worker not in (select worker from pgpulse.consumer_workers
                             where group_name = $1))
    order by partition
    limit $4
    for update skip locked
)
update pgpulse.consumer_partitions p
set worker = $2, lease_until = now() + $3::interval
from free
where p.group_name = $1 and p.partition = free.partition
returning p.partition, free.worker is not null as taken_over
"""


class Membership:
    """One worker's leases in one group."""

    def __init__(self, group: str, worker: str, ttl: float, partitions: int) -> None:
        self.group = group
        self.worker = worker
        self.ttl = ttl
        self.partitions = partitions
        self.held: set[int] = set()

    @property
    def _interval(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.ttl)

    async def beat(self, conn: Any) -> Beat:
        """Renew, take a fair share, report surplus (see the module docstring)."""
        beat = Beat()
        async with conn.transaction():
            await conn.execute(_BEAT_SQL, self.group, self.worker, self._interval)
            beat.live_workers = max(
                1,
                await conn.fetchval(
                    "select count(*) from pgpulse.consumer_workers "
                    "where group_name = $1",
                    self.group,
                ),
            )
            held = {
                r["partition"]
                for r in await conn.fetch(
                    _RENEW_SQL, self.group, self.worker, self._interval
                )
            }
            fair = math.ceil(self.partitions / beat.live_workers)
            if len(held) < fair:
                taken = await conn.fetch(
                    _CLAIM_SQL,
                    self.group,
                    self.worker,
                    self._interval,
                    fair - len(held),
                )
                takeovers = sum(1 for r in taken if r["taken_over"])
                if takeovers:
                    await conn.execute(
                        "update pgpulse.consumer_groups set takeovers = takeovers + $2 "
                        "where name = $1",
                        self.group,
                        takeovers,
                    )
                held |= {r["partition"] for r in taken}
            elif len(held) > fair:
                beat.surplus = set(sorted(held)[fair:])
            rows = await conn.fetch(
                "select partition, position from pgpulse.consumer_partitions "
                "where group_name = $1 and worker = $2",
                self.group,
                self.worker,
            )
            group = await conn.fetchrow(
                "select resets, reset_reason from pgpulse.consumer_groups "
                "where name = $1",
                self.group,
            )
        beat.positions = {r["partition"]: r["position"] for r in rows}
        beat.gained = set(beat.positions) - self.held
        self.held = set(beat.positions)
        if group is not None:
            beat.resets = group["resets"]
            beat.reset_reason = group["reset_reason"]
        return beat

    async def release(self, conn: Any, partitions: set[int]) -> None:
        """Let go of *partitions* (between batches: their positions are acked)."""
        if not partitions:
            return
        await conn.execute(
            "update pgpulse.consumer_partitions set worker = null, lease_until = null "
            "where group_name = $1 and worker = $2 and partition = any($3::int[])",
            self.group,
            self.worker,
            sorted(partitions),
        )
        self.held -= partitions

    async def leave(self, conn: Any) -> None:
        """Release everything and leave the group (a clean stop)."""
        async with conn.transaction():
            await conn.execute(
                "update pgpulse.consumer_partitions "
                "set worker = null, lease_until = null "
                "where group_name = $1 and worker = $2",
                self.group,
                self.worker,
            )
            await conn.execute(
                "delete from pgpulse.consumer_workers "
                "where group_name = $1 and worker = $2",
                self.group,
                self.worker,
            )
        self.held.clear()
