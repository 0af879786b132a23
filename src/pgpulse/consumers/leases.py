"""A worker's side of its leases: beats that renew them and take a fair
share, and what each beat means for the partitions the worker reads.

Why apart from the batches: the database's leases are the truth, and a
worker must read exactly the partitions leased to it.  Beats, re-beats and
releases run one at a time and each is applied before the next starts (a
beat applied after a newer one would drop a partition the newer one took,
leaving it leased to a live worker and never read).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pgpulse.backoff import Backoff
from pgpulse.consumers.membership import Membership

__all__ = ["LeaseKeeping"]

log = logging.getLogger("pgpulse.consumers")


class LeaseKeeping:
    """Mixed into :class:`pgpulse.consumers.consumer.Consumer`: the attributes
    below are the worker's."""

    group: str
    worker: str
    lease_ttl: float
    membership: Membership | None
    positions: dict[int, str]
    _gateway: Any
    _wake: asyncio.Event
    _surplus: set[int]
    _resets_seen: int | None
    _reset_reason: str | None
    _retries_waiting: bool
    _membership_lock: asyncio.Lock

    @property
    def pool(self) -> Any:
        return self._gateway.pool

    async def _beat_forever(self) -> None:
        assert self.membership is not None
        interval = max(0.05, self.lease_ttl / 3)
        backoff = Backoff(initial=0.2, maximum=interval)
        while True:
            try:
                await asyncio.sleep(interval)
                await self._rebeat()
                async with self.pool.acquire() as conn:
                    waiting = await conn.fetchval(
                        "select exists (select from pgpulse.dead_letters "
                        "where group_name = $1 and retry_requested "
                        "and (claimed_by is null or claimed_until < now()))",
                        self.group,
                    )
                if waiting and not self._retries_waiting:
                    self._retries_waiting = True
                    self._wake.set()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning(
                    "consumer %s of group %s: lease renewal failed (%s: %s); "
                    "retrying in %.1fs",
                    self.worker,
                    self.group,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    def _apply_beat(self, beat: Any) -> None:
        if self._resets_seen is None:
            self._resets_seen = beat.resets
        elif beat.resets != self._resets_seen:
            # Pruning reset the group: every position moved.
            self._resets_seen = beat.resets
            self._reset_reason = beat.reset_reason or "the group was reset"
            self.positions = dict(beat.positions)
            self._wake.set()
            return
        for partition in list(self.positions):
            if partition not in beat.positions:
                log.warning(
                    "consumer %s of group %s lost partition %d to another worker "
                    "(its lease ran out)",
                    self.worker,
                    self.group,
                    partition,
                )
                del self.positions[partition]
        # Every partition leased to this worker is read by it: the database's
        # leases are the truth (not only what this beat gained).
        gained = [p for p in beat.positions if p not in self.positions]
        for partition in gained:
            self.positions[partition] = beat.positions[partition]
        self._surplus = set(beat.surplus)
        if gained or self._surplus:
            self._wake.set()

    async def _rebeat(self) -> None:
        assert self.membership is not None
        async with self._membership_lock:
            async with self.pool.acquire() as conn:
                beat = await self.membership.beat(conn)
            self._apply_beat(beat)

    async def _release_surplus(self) -> None:
        assert self.membership is not None
        async with self._membership_lock:
            surplus, self._surplus = self._surplus, set()
            async with self.pool.acquire() as conn:
                await self.membership.release(conn, surplus)
            for partition in surplus:
                self.positions.pop(partition, None)
        log.info(
            "consumer %s of group %s handed %d partitions to joining workers",
            self.worker,
            self.group,
            len(surplus),
        )
