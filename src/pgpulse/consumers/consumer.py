"""A worker of a consumer group: reads its partitions from the log, hands out
batches, waits on the listener's wake-up when there is nothing to do.

Why a gateway inside: a worker needs what a gateway process has (one
listener that wakes it, the catalog to check its tables and filter against,
and a decoder for tables captured from the WAL when no gateway runs), so it
runs one, headless, with a small pool.  Its own reads go by the group's
positions (:func:`pgpulse.log.changelog.read_lanes`), partitions that share a
position read as one lane; its filter is decided by PostgreSQL, one statement
per table and batch (:mod:`pgpulse.routing.db_filters`), so it means exactly
what it means in a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pgpulse.catalog import Catalog
from pgpulse.config import Settings
from pgpulse.consumers.batch import Batch, LeaseLost, Move, ack_moves, event_of
from pgpulse.consumers.dead_letters import claim_retries
from pgpulse.consumers.groups import (
    DEFAULT_MAX_LAG,
    DEFAULT_PARTITIONS,
    GroupSpec,
    ensure_group,
)
from pgpulse.consumers.leases import LeaseKeeping
from pgpulse.consumers.membership import Membership, worker_id
from pgpulse.consumers.reader import read_partitions
from pgpulse.exceptions import PgPulseError
from pgpulse.log.change import Change
from pgpulse.routing.db_filters import DatabaseFilter

__all__ = ["Consumer", "consumer"]

log = logging.getLogger("pgpulse.consumers")


class Consumer(LeaseKeeping):
    """One worker of consumer group *group* (see :func:`consumer`)."""

    def __init__(
        self,
        database_url: str,
        group: str,
        tables: Iterable[str],
        filter: str = "",
        *,
        partitions: int = DEFAULT_PARTITIONS,
        batch_size: int = 100,
        start: str = "now",
        lease_ttl: float = 15.0,
        max_lag: dt.timedelta | None = DEFAULT_MAX_LAG,
        worker: str | None = None,
        keepalive: float = 60.0,
        query_timeout: float = 30.0,
        check: Callable[[Consumer], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise PgPulseError(f"batch_size must be at least 1, got {batch_size}")
        if lease_ttl <= 0:
            raise PgPulseError(f"lease_ttl must be positive, got {lease_ttl}")
        self.database_url = database_url
        self.group = group
        self.requested_tables = list(tables)
        self.filter = filter.strip()
        self.partitions = partitions
        self.batch_size = batch_size
        self.start = start
        self.lease_ttl = lease_ttl
        self.max_lag = max_lag
        self.worker = worker or worker_id()
        self.keepalive = keepalive
        self.query_timeout = query_timeout
        self.check = check
        """Called once the tables are resolved, before the group is created
        or joined: raises to refuse a setup (e.g. a cache key template)."""
        self.tables: list[str] = []
        self.membership: Membership | None = None
        self.positions: dict[int, str] = {}
        """Held partitions and their positions (this worker moves them)."""
        self.delivered = 0
        self.batches = 0
        self.redelivered = 0
        self.redelivered_by_partition: dict[int, int] = {}
        """Changes handed out again, per partition, not yet counted in the
        database (they are, with the partition's next move)."""
        self.dead_lettered = 0
        self.lease_losses = 0
        self._gateway: Any = None
        self._filters: dict[str, DatabaseFilter] = {}
        self._wake = asyncio.Event()
        self._beater: asyncio.Task[None] | None = None
        self._membership_lock = asyncio.Lock()
        """One beat or release at a time, each applied before the next starts:
        a beat applied after a newer one would drop partitions the newer one
        took, leaving them leased to this worker and never read."""
        self._surplus: set[int] = set()
        self._resets_seen: int | None = None
        self._reset_reason: str | None = None
        self._retries_waiting = False
        self._outstanding: Batch | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The catalog of the worker's database (tables, columns, keys)."""
        catalog: Catalog = self._gateway.catalog
        return catalog

    @property
    def table_names(self) -> list[str]:
        """The group's tables as changes name them (``documents``)."""
        return [self.catalog.short_name(t) for t in self.tables]

    async def __aenter__(self) -> Consumer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        from pgpulse.gateway import Gateway

        settings = Settings(
            database_url=self.database_url,
            retention_seconds=None,
            pool_size=3,
            keepalive=self.keepalive,
            query_timeout=self.query_timeout,
            application_name=f"pgpulse-consumer-{self.group}"[:63],
        )
        self._gateway = Gateway(settings)
        await self._gateway.start()
        try:
            await self._define()
            self._gateway.bus.observers.append(self._observe)
            assert self.membership is not None
            async with self.pool.acquire() as conn:
                beat = await self.membership.beat(conn)
            self._apply_beat(beat)
            self._beater = asyncio.create_task(self._beat_forever())
        except BaseException:
            await self._gateway.stop()
            raise
        log.info(
            "consumer %s of group %s started: tables %s%s, holds %d of %d partitions",
            self.worker,
            self.group,
            ", ".join(self.tables),
            f", filter {self.filter!r}" if self.filter else "",
            len(self.positions),
            self.partitions,
        )

    async def _define(self) -> None:
        subs = [
            f"{t}:{self.filter}" if self.filter else t for t in self.requested_tables
        ]
        specs = await self._gateway.parse_subscriptions(subs)
        self.tables = sorted({spec.table for spec in specs})
        for spec in specs:
            if spec.filters:
                table = self._gateway.catalog.table(spec.table)
                self._filters[spec.table] = DatabaseFilter(table, spec.filters)
        if self.check is not None:
            self.check(self)
        spec = GroupSpec(
            self.group, tuple(self.tables), self.filter, self.partitions, self.max_lag
        )
        async with self.pool.acquire() as conn:
            await ensure_group(conn, spec, self.start)
        self.membership = Membership(
            self.group, self.worker, self.lease_ttl, self.partitions
        )

    async def close(self) -> None:
        """Stop: leave the group (its partitions go to the other workers at
        their next beat) and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beater
        if self._gateway is None:
            return
        if self.membership is not None and self._gateway.pool is not None:
            try:
                async with asyncio.timeout(5):
                    async with self.pool.acquire() as conn:
                        await self.membership.leave(conn)
            except Exception as exc:  # its leases run out instead
                log.warning(
                    "consumer %s could not leave group %s: %r",
                    self.worker,
                    self.group,
                    exc,
                )
        with contextlib.suppress(ValueError):
            self._gateway.bus.observers.remove(self._observe)
        await self._gateway.stop()

    # -- membership -------------------------------------------------------------

    def _observe(self, changes: Sequence[Change]) -> None:
        tables = self.tables
        for change in changes:
            if change.table in tables:
                self._wake.set()
                return

    # -- batches ----------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Batch:
        while not self._closed:
            if self._outstanding is not None and not self._outstanding.acked:
                # Not acknowledged: its changes are read (delivered) again.
                self.redelivered += len(self._outstanding.changes)
                for move in self._outstanding.moves:
                    for partition, count in zip(
                        move.partitions, move.counts, strict=True
                    ):
                        self.redelivered_by_partition[partition] = (
                            self.redelivered_by_partition.get(partition, 0) + count
                        )
            self._outstanding = None
            if self._reset_reason is not None:
                reason, self._reset_reason = self._reset_reason, None
                return Batch(self, [], reset=reason)
            if self._surplus:
                await self._release_surplus()
            if self._retries_waiting:
                batch = await self._claim_retries()
                if batch is not None:
                    self._outstanding = batch
                    return batch
            if not self.positions:
                # Nothing to read until a beat leases a partition (which sets
                # the event again): a wake-up for a change is not ours to act
                # on, and left set it would spin this loop without yielding,
                # starving the beats that would give us work.
                self._wake.clear()
                await self._idle()
                continue
            self._wake.clear()
            batch, progressed = await self._read()
            if batch is not None:
                self._outstanding = batch
                self.batches += 1
                return batch
            if not progressed:
                await self._idle()
        raise StopAsyncIteration

    async def _idle(self) -> None:
        """Wait for the listener's wake-up (a change to one of our tables), a
        membership change, or, as a safety net, ``keepalive`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.keepalive):
                await self._wake.wait()
        # Always let the other tasks (beats) run between two passes, even
        # when the event was already set.
        await asyncio.sleep(0)

    async def _read(self) -> tuple[Batch | None, bool]:
        """Read the next changes; returns (a batch, or None when none of the
        changes read are for the handler, and whether to read again now)."""
        async with self.pool.acquire() as conn:
            read = await read_partitions(
                conn,
                self.group,
                self.positions,
                self.partitions,
                self.tables,
                self._filters,
                self._gateway.catalog.short_name,
                self.batch_size,
                self.query_timeout,
            )
        if not read.moves:
            return None, False
        if not read.changes:
            # Nothing for the handler (other partitions' changes, or changes
            # the filter leaves out): move on without a batch, so pruning is
            # not held back by what this group never needed.
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await ack_moves(conn, self.group, self.worker, read.moves)
            except LeaseLost as exc:
                self.log_lease_lost(exc)
                await self._rebeat()
                return None, True
            self._moved(read.moves)
            return None, read.more
        events = [event_of(c) for c in read.changes]
        return Batch(self, events, moves=read.moves, raw=read.changes), True

    def _moved(self, moves: list[Move]) -> None:
        for move in moves:
            new = move.new.encode()
            for partition in move.partitions:
                if partition in self.positions:
                    self.positions[partition] = new

    async def _claim_retries(self) -> Batch | None:
        """Dead letters someone asked to retry (``pgpulse consumers retry``)."""
        self._retries_waiting = False
        async with self.pool.acquire() as conn:
            ids, raw = await claim_retries(
                conn,
                self.group,
                self.worker,
                self.batch_size,
                dt.timedelta(seconds=self.lease_ttl),
                self._gateway.catalog.short_name,
            )
        if not ids:
            return None
        self._retries_waiting = len(ids) == self.batch_size
        return Batch(self, [event_of(c) for c in raw], dead_letters=ids, raw=raw)

    # -- bookkeeping (called by batches) ----------------------------------------

    def acked(self, batch: Batch) -> None:
        self._moved(batch.moves)
        self.delivered += len(batch.changes)
        for move in batch.moves:
            for partition in move.partitions:
                self.redelivered_by_partition.pop(partition, None)

    def count_dead_letters(self, count: int) -> None:
        self.dead_lettered += count

    def log_lease_lost(self, exc: LeaseLost) -> None:
        self.lease_losses += 1
        log.warning("consumer %s: %s", self.worker, exc)
        self._wake.set()


def consumer(
    database_url: str,
    *,
    group: str,
    tables: Iterable[str],
    filter: str = "",
    **options: Any,
) -> Consumer:
    """A worker of consumer group *group*, to use with ``async with``::

        async with pgpulse.consumer(url, group="mailer", tables=["orders"],
                                    filter="status=eq.paid") as worker:
            async for batch in worker:
                ...                    # batch.changes: pgpulse.Event objects
                await batch.ack()      # or: async with batch.transaction() as conn

    Options: ``partitions`` (16; fixed when the group is created),
    ``batch_size`` (100), ``start`` (``now`` or ``beginning``, for a new
    group), ``lease_ttl`` (15 s: a dead worker's partitions move after this),
    ``max_lag`` (7 days; pruning resets a group lagging more), ``worker`` (a
    name), ``keepalive`` (60 s: the idle safety read).
    """
    return Consumer(database_url, group, tables, filter, **options)
