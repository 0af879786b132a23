"""The in-process event bus: routes each change to the matching subscribers.

Why this shape: routing cost must grow with the number of *matching*
subscribers, not all of them: per table, subscriptions are indexed so a change
looks at few of them (:mod:`pgpulse.routing.routes`).  UPDATE and DELETE are
matched on the old and the new row, so a row leaving a filter is announced (as
a DELETE of the old row) without revealing the new one.  Each change is
encoded once per variant and transport and the same bytes go to every matching
subscriber (:mod:`events`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pgpulse.auth.rls import RowSecurity
from pgpulse.log.change import Change
from pgpulse.log.changelog import Batch
from pgpulse.log.cursor import Cursor, Snapshot
from pgpulse.routing import db_filters
from pgpulse.routing.db_filters import DatabaseFilter
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.routes import TableRoutes
from pgpulse.routing.subscriber import (
    FilterErrors,
    Subscriber,
    Subscription,
    variant_of,
)
from pgpulse.routing.subscriptions import SubscriptionSpec
from pgpulse.routing.wire import Variant, encoded

__all__ = ["Bus", "Subscriber", "Subscription"]

log = logging.getLogger("pgpulse.routing.bus")


class Bus:
    """Subscription index plus dispatch of listener batches."""

    def __init__(self) -> None:
        self._routes: dict[str, TableRoutes] = {}
        self._db_filters: dict[str, dict[str, list[Any]]] = {}
        """table → filter key → [DatabaseFilter, subscriptions using it]."""
        self.preparing = False
        """Between :meth:`prepare` and the dispatch of its batch."""
        self._settled = asyncio.Event()
        self._settled.set()
        self.errors = FilterErrors()
        self.position: Snapshot | None = None
        """Every change visible here has been dispatched."""
        self.in_batch = False
        """True between the chunks of a large batch (new clients must catch up)."""
        self.subscribers: set[Subscriber] = set()
        self._skipping: set[Subscriber] = set()
        self._batching = False
        self._dirty: list[Outbox] = []
        self.delivered = 0
        self.changes = 0
        self.filter_statements = 0
        self.observers: list[Callable[[Sequence[Change]], None]] = []
        """Called with each batch's changes after dispatch (consumer groups
        wake on them: :mod:`pgpulse.consumers`)."""
        """Statements run to evaluate database filters (row-level security too)."""

    # -- registration ---------------------------------------------------------

    def subscribe(
        self, subscriber: Subscriber, spec: SubscriptionSpec, ref: str = ""
    ) -> Subscription:
        """Route *spec*'s changes to *subscriber* from the next batch on (wait
        for :meth:`settled` first: a batch being prepared has no verdicts for
        a filter added meanwhile)."""
        sub = Subscription(spec, subscriber, ref)
        self._routes.setdefault(spec.table, TableRoutes()).add(sub)
        if spec.db_filter is not None:
            entry = self._db_filters.setdefault(spec.table, {}).setdefault(
                spec.db_filter.key, [spec.db_filter, 0]
            )
            entry[1] += 1
        subscriber.subscriptions.append(sub)
        subscriber.per_table[spec.table] = subscriber.per_table.get(spec.table, 0) + 1
        if spec.columns is not None:
            subscriber.columns[spec.table] = spec.columns
        self.subscribers.add(subscriber)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        spec = sub.spec
        routes = self._routes.get(spec.table)
        subscriber = sub.subscriber
        if sub in subscriber.subscriptions:
            subscriber.subscriptions.remove(sub)
            left = subscriber.per_table.get(spec.table, 1) - 1
            if left > 0:
                subscriber.per_table[spec.table] = left
            else:
                subscriber.per_table.pop(spec.table, None)
            if spec.db_filter is not None:
                self._release_db_filter(spec.table, spec.db_filter)
        if routes is None:
            return
        routes.remove(sub)
        if routes.empty():
            del self._routes[spec.table]

    def _release_db_filter(self, table: str, db_filter: DatabaseFilter) -> None:
        by_key = self._db_filters.get(table, {})
        entry = by_key.get(db_filter.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del by_key[db_filter.key]
            if not by_key:
                self._db_filters.pop(table, None)

    def remove(self, subscriber: Subscriber) -> None:
        for sub in list(subscriber.subscriptions):
            self.unsubscribe(sub)
        self.subscribers.discard(subscriber)
        self._skipping.discard(subscriber)
        self.errors.forget(subscriber)

    async def settled(self) -> None:
        """Wait until no batch is between :meth:`prepare` and its dispatch."""
        while self.preparing:
            await self._settled.wait()

    def db_filters_for(self, subscriber: Subscriber) -> dict[str, list[DatabaseFilter]]:
        """The filters PostgreSQL evaluates for *subscriber*, by table."""
        out: dict[str, list[DatabaseFilter]] = {}
        for sub in subscriber.subscriptions:
            if sub.spec.db_filter is not None:
                out.setdefault(sub.spec.table, []).append(sub.spec.db_filter)
        return out

    def needs_database(self, changes: Sequence[Change]) -> bool:
        """Whether :meth:`prepare` has work for *changes* (a filter PostgreSQL
        evaluates on one of their tables)."""
        filtered = self._db_filters
        return bool(filtered) and any(c.table in filtered for c in changes)

    row_security: RowSecurity | None = None
    """The tables' own policies, for subscriptions under row-level security."""

    async def prepare(self, changes: Sequence[Change], conn: Any) -> None:
        """Before a batch is dispatched: have PostgreSQL evaluate, in one
        statement per table, the filters the stream cannot decide in Python
        (:mod:`pgpulse.routing.db_filters`).  The batch must be dispatched
        (:meth:`on_batch`) right after; until then new subscriptions wait."""
        self.preparing = True
        self._settled.clear()
        try:
            tables: dict[str, list[Change]] = {}
            for change in changes:
                if change.table in self._db_filters:
                    tables.setdefault(change.table, []).append(change)
            for table, its_changes in tables.items():
                entries = list(self._db_filters.get(table, {}).values())
                if entries:
                    filters = [entry[0] for entry in entries]
                    self.filter_statements += await db_filters.evaluate(
                        conn,
                        filters[0].table,
                        its_changes,
                        filters,
                        self.row_security,
                    )
        except BaseException:
            self._settle()
            raise

    def _settle(self) -> None:
        self.preparing = False
        self._settled.set()

    def finish_catch_up(self, subscriber: Subscriber, reached: Snapshot) -> None:
        """The subscriber's catch-up read everything visible in *reached*."""
        subscriber.end_catch_up(reached)
        if self.position is not None and self.position.covers(reached):
            subscriber.skip = None
        else:
            self._skipping.add(subscriber)

    def cursor(self) -> Cursor | None:
        """The position a new subscriber starts from (None before the first read)."""
        return Cursor.point(self.position) if self.position is not None else None

    # -- dispatch -----------------------------------------------------------------

    def on_batch(self, batch: Batch, final: bool) -> None:
        """Listener callback: dispatch a batch (or a chunk of a large one)."""
        self.in_batch = not final
        self._batching = True
        self._settle()
        try:
            changes = batch.changes
            i, n = 0, len(changes)
            while i < n:
                # A run of changes to one table reaches the same unfiltered
                # subscribers: one joined write each instead of one per change.
                table = changes[i].table
                j = i + 1
                while j < n and changes[j].table == table:
                    j += 1
                try:
                    self._publish_run(changes[i:j])
                except Exception:
                    # A bug must not stop the stream for everyone: the
                    # listener would re-read this batch forever.
                    log.exception(
                        "dispatching %d changes to %s failed; they are skipped",
                        j - i,
                        table,
                    )
                i = j
        finally:
            self._batching = False
            self._flush()
        if final:
            self.position = batch.snap
            # Clients whose catch-up reached a snapshot we have now passed no
            # longer need the per-event skip check.  Only once the batch is
            # dispatched in full: a large batch comes in chunks, and its later
            # chunks still hold changes the catch-up delivered (a listener
            # that re-reads after a reconnect, behind a resumed client).
            for subscriber in list(self._skipping):
                if subscriber.skip is None or batch.snap.covers(subscriber.skip):
                    subscriber.skip = None
                    self._skipping.discard(subscriber)
        if batch.changes:
            for observe in self.observers:
                observe(batch.changes)

    def _flush(self) -> None:
        """One write per dirty subscriber for everything dispatched since."""
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            if outbox.dirty:
                outbox.flush()

    def publish(self, change: Change) -> int:
        """Deliver one change; returns the number of subscribers reached."""
        return self._publish_run([change])

    def _publish_run(self, run: list[Change]) -> int:
        """Deliver changes to one table, in order; returns the deliveries."""
        self.changes += len(run)
        routes = self._routes.get(run[0].table)
        if routes is None:
            return 0
        unfiltered = routes.unfiltered
        dirty = self._dirty
        joined: bytes | None = None
        others: list[Subscriber] = []
        several: list[Subscriber] = []
        for subscriber in unfiltered:
            if subscriber.per_table.get(run[0].table, 0) > 1:
                several.append(subscriber)
                continue
            # Fast path for the common subscriber: SSE, live (not catching up,
            # nothing to skip); the same bytes object goes to every one of them.
            if (
                subscriber.transport == "sse"
                and subscriber.pending is None
                and subscriber.skip is None
                and not subscriber.columns
            ):
                if joined is None:
                    joined = b"".join([encoded(c, Variant.FULL, "sse") for c in run])
                outbox = subscriber.outbox
                if outbox.put_deferred(joined):
                    dirty.append(outbox)
            else:
                others.append(subscriber)
        reached = len(unfiltered) * len(run)
        filtered = routes.filtered
        for change in run:
            for subscriber in others:
                if subscriber.deliver(change, Variant.FULL):
                    dirty.append(subscriber.outbox)
            for subscriber in several:
                reached += self._deliver_evaluated(subscriber, change) - 1
            if filtered:
                reached += self._publish_filtered(change, routes)
        self.delivered += reached
        if not self._batching:
            self._flush()
        return reached

    def _deliver_evaluated(self, subscriber: Subscriber, change: Change) -> int:
        """Deliver *change* as :meth:`Subscriber.evaluate` decides (several
        subscriptions on one table); returns 1 if delivered."""
        variant, tags = subscriber.evaluate(change, self.errors)
        if variant is None:
            return 0
        if subscriber.deliver(change, variant, tags):
            self._dirty.append(subscriber.outbox)
        return 1

    def _publish_filtered(self, change: Change, routes: TableRoutes) -> int:
        """Deliver *change* to the filtered subscribers it matches."""
        unfiltered = routes.unfiltered
        dirty = self._dirty
        reached = 0
        matched: dict[Subscriber, tuple[bool, bool]] = {}
        evaluated: set[Subscriber] = set()
        errors = self.errors
        for sub in routes.candidates(change):
            subscriber = sub.subscriber
            if subscriber in unfiltered or subscriber in evaluated:
                continue
            if subscriber.per_table.get(change.table, 0) > 1:
                evaluated.add(subscriber)
                reached += self._deliver_evaluated(subscriber, change)
                continue
            try:
                n, o = sub.matches(change)
            except Exception as exc:  # a poison row costs that row, here only
                errors.record(subscriber, change, exc)
                continue
            if n or o:
                matched[subscriber] = (n, o)
        for subscriber, (n, o) in matched.items():
            variant = variant_of(change, n, o)
            if variant is not None:
                if subscriber.deliver(change, variant):
                    dirty.append(subscriber.outbox)
                reached += 1
        return reached
